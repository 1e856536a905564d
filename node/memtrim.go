package node

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"

	"github.com/weft-p2p/weft/node/proc"
)

// The Go runtime collects garbage when the heap has grown by GOGC percent
// since the last collection, or every two minutes. An idle daemon
// allocates little, so after start-up or a transfer its heap keeps the
// garbage of that work (and the pages it freed stay mapped for a while)
// for minutes: an idle daemon sat at twice its live heap. The trimmer
// looks every RuntimeConfig.MemoryTrimInterval; when the process has gone
// quiet (allocated less than trimQuietBytes since the last look) and the
// heap holds more than trimSlack of garbage and free pages, it collects
// and returns the memory to the operating system (debug.FreeOSMemory), so
// an idle daemon's memory is close to what it uses. While data moves it
// does nothing: the runtime's own pacing is right then.

const (
	// trimQuietBytes: allocating less than this between two looks counts
	// as quiet (an idle daemon with 30 peers allocates about 5 MiB in 30 s)
	// if the process also used less than trimQuietCPU (a fetch into the
	// store moves its blocks through buffers outside the Go heap).
	trimQuietBytes = 32 << 20
	trimQuietCPU   = 250 * time.Millisecond
	// trimSlack is how much garbage and free heap is left alone.
	trimSlack = 2 << 20
)

// memStats are the runtime/metrics the trimmer reads.
type memStats struct {
	cpu     time.Duration // CPU time the process used (0 where unknown)
	allocs  uint64        // bytes allocated since the process started
	objects uint64        // heap bytes in objects, live and garbage
	live    uint64        // live heap after the last collection
	free    uint64        // heap bytes free and not returned to the OS
}

var memSamples = []rtmetrics.Sample{
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
}

func readMemStats() memStats {
	s := make([]rtmetrics.Sample, len(memSamples))
	copy(s, memSamples)
	rtmetrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() == rtmetrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return memStats{cpu: proc.SelfCPU(), allocs: u(0), objects: u(1), live: u(2), free: u(3)}
}

// shouldTrim says whether to collect and return memory now, given the
// previous and the current look.
func shouldTrim(prev, cur memStats) bool {
	quiet := isQuiet(prev, cur)
	excess := cur.objects + cur.free - min(cur.live, cur.objects)
	return quiet && excess > trimSlack
}

// isQuiet says whether the process did little between two looks.
func isQuiet(prev, cur memStats) bool {
	return cur.allocs-prev.allocs < trimQuietBytes && cur.cpu-prev.cpu < trimQuietCPU
}

// trimMemory runs the trimmer until ctx ends; trims counts what it did.
// At its first look, and at the first quiet look after a busy one, it also
// releases the pages of the binary that start-up or the work touched
// (releaseBinaryPages): the code of an add or a fetch is not what an idle
// daemon runs.
func (n *Node) trimMemory(ctx context.Context, every time.Duration, trims func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	prev := readMemStats()
	release := true // start-up was busy
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := readMemStats()
		quiet := isQuiet(prev, cur)
		if shouldTrim(prev, cur) || quiet && release {
			debug.FreeOSMemory()
			trims()
			cur = readMemStats()
		}
		prev = cur
		if !quiet {
			release = true
			continue
		}
		if release { // after the collection, which reads the binary's tables too
			release = false
			if released, err := releaseBinaryPages(); err != nil {
				n.log.Warn("memory trimmer", "err", err)
			} else {
				n.log.Debug("memory trimmer: released the binary's pages", "bytes", released)
			}
		}
	}
}
