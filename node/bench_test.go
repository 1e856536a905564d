package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// Benchmarks of the content path, each beside its ceiling in the same run.
// This machine is shared and noisy, so every iteration measures the ceiling
// and the thing measured back to back, and the benchmarks report, beside
// the median throughput of each, the median of the per-iteration ratios:
//
//	BenchmarkContentAdd    per iteration: SHA-256 over 256 MiB, then node.Add
//	                       of 256 MiB into the store (add/sha256)
//	BenchmarkContentFetch  per iteration: a plain libp2p stream of 256 MiB
//	                       between the two hosts, then node B fetching 256 MiB
//	                       over the native exchange, then node C (native off)
//	                       over Bitswap (native/stream, bitswap/stream)
//	BenchmarkContentSmall  B fetching a fresh 1 KiB file from a connected A
//
// scripts/bench/content.sh runs them and prints the medians.

const benchBytes = 256 << 20

// benchNonce makes every generated input new, so no add or fetch finds
// blocks it already has.
var benchNonce atomic.Uint64

// benchPattern yields size bytes of a random 1 MiB pattern, stamped every
// 64 KiB with a per-input nonce and the offset, so that no two chunks of
// any size from 64 KiB up are alike, within or across inputs. Reading costs
// one copy, as reading a file would.
type benchPattern struct {
	pattern []byte
	nonce   uint64
	left    int64
	off     int64
}

var basePattern = func() []byte {
	p := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return p
}()

func newBenchPattern(size int64) *benchPattern {
	p := make([]byte, len(basePattern))
	copy(p, basePattern)
	return &benchPattern{pattern: p, nonce: benchNonce.Add(1), left: size}
}

func (r *benchPattern) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	const stamp = 64 << 10
	at := r.off % int64(len(r.pattern))
	end := min(int64(len(r.pattern)), at+r.left, (at/stamp+1)*stamp)
	if at%stamp == 0 {
		binary.LittleEndian.PutUint64(r.pattern[at:], r.nonce)
		binary.LittleEndian.PutUint64(r.pattern[at+8:], uint64(r.off))
	}
	n := copy(b, r.pattern[at:end])
	r.off += int64(n)
	r.left -= int64(n)
	return n, nil
}

func benchTune(c *node.Config) {
	c.DHT.BootstrapInterval = node.Duration(time.Hour)
	c.Content.FetchTimeout = node.Duration(2 * time.Minute)
}

// pairs collects per-iteration timings of named steps over the same number
// of bytes and reports their median throughput, their median CPU time per
// MiB (both nodes' work: they share the process), and the median of each
// step's per-iteration ratio to the first (the ceiling).
type pairs struct {
	bytes int64
	names []string
	secs  map[string][]float64
	cpu   map[string][]float64 // CPU seconds of the whole process
	steal []float64            // the machine's steal share per step, if known
}

// cpuTicks returns the machine's total and steal CPU ticks from /proc/stat
// (zeros where it is missing): on a VM, steal is time the host gave to
// others, the usual cause of a noisy run.
func cpuTicks() (total, steal uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal
			total += n
		}
		if i == 7 {
			steal = n
		}
	}
	return total, steal
}

func newPairs(bytes int64, names ...string) *pairs {
	return &pairs{bytes: bytes, names: names, secs: make(map[string][]float64), cpu: make(map[string][]float64)}
}

// time runs fn as the named step of this iteration, recording its wall
// time and the process's CPU time.
func (p *pairs) time(b *testing.B, name string, fn func() error) {
	b.Helper()
	t0 := time.Now()
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	t0s, s0 := cpuTicks()
	if err := fn(); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	el := time.Since(t0).Seconds()
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := float64(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()) / 1e9
	p.secs[name] = append(p.secs[name], el)
	p.cpu[name] = append(p.cpu[name], cpu)
	if t1s, s1 := cpuTicks(); t1s > t0s {
		p.steal = append(p.steal, float64(s1-s0)/float64(t1s-t0s))
	}
}

func (p *pairs) report(b *testing.B) {
	if len(p.steal) > 0 {
		b.ReportMetric(100*median(p.steal), "steal-%")
	}
	base := p.secs[p.names[0]]
	for _, n := range p.names {
		var rates, ratios []float64
		for i, s := range p.secs[n] {
			rates = append(rates, float64(p.bytes)/s/1e6)
			ratios = append(ratios, base[i]/s)
		}
		b.ReportMetric(median(rates), n+"-MB/s")
		b.ReportMetric(median(p.cpu[n])*1e3/float64(p.bytes>>20), n+"-cpu-ms/MiB")
		if n != p.names[0] {
			b.ReportMetric(median(ratios), n+"/"+p.names[0])
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkContentAdd adds 256 MiB to a node (on disk, pinned, as `weft
// add` does), each time right after SHA-256 over the same bytes from the
// same kind of reader.
func BenchmarkContentAdd(b *testing.B) {
	n := nodetest.Start(b, nodetest.Options{Tune: benchTune})
	opts := unixfs.DefaultOptions()
	buf := make([]byte, 1<<20)
	p := newPairs(benchBytes, "sha256", "add")
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.time(b, "sha256", func() error {
			h := sha256.New()
			_, err := io.CopyBuffer(h, newBenchPattern(benchBytes), buf)
			h.Sum(nil)
			return err
		})
		p.time(b, "add", func() error {
			_, err := n.Add(context.Background(), files.NewReaderFile(newBenchPattern(benchBytes)), opts, true, "", nil)
			return err
		})
	}
	p.report(b)
}

const benchCopyProto = protocol.ID("/weft-bench/copy/1.0.0")

// BenchmarkContentFetch moves 256 MiB from node A over 127.0.0.1, three
// ways per iteration: over a plain libp2p stream to node B (the ceiling:
// same connection, security and muxer; the bytes are discarded), as a
// native-exchange fetch by B ("native"), and as a Bitswap fetch by node C,
// which has the native exchange switched off ("bitswap"). Each fetch is of
// a fresh file A added beforehand (untimed).
func BenchmarkContentFetch(b *testing.B) {
	a, bn, cn := benchTrio(b)
	ctx := context.Background()
	opts := unixfs.DefaultOptions()
	p := newPairs(benchBytes, "stream", "native", "bitswap")
	buf := make([]byte, 1<<20)
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.time(b, "stream", func() error {
			s, err := bn.Network().Host.NewStream(ctx, a.ID(), benchCopyProto)
			if err != nil {
				return err
			}
			defer s.Close()
			n, err := io.CopyBuffer(io.Discard, s, buf)
			if err == nil && n != benchBytes {
				err = fmt.Errorf("stream copied %d bytes", n)
			}
			return err
		})
		for _, step := range []struct {
			name string
			dst  *node.Node
		}{{"native", bn}, {"bitswap", cn}} {
			b.StopTimer()
			root, err := a.Add(ctx, files.NewReaderFile(newBenchPattern(benchBytes)), opts, true, "", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			p.time(b, step.name, func() error { return step.dst.Fetch(ctx, root) })
		}
	}
	p.report(b)
}

// BenchmarkContentSmall is node B fetching a fresh 1 KiB file that a
// connected node A added (in-process: no CLI). The first fetches after the
// nodes start are slower (the nodes are still bootstrapping), so a few run
// untimed first; it reports the median fetch time.
func BenchmarkContentSmall(b *testing.B) {
	a, bn, _ := benchTrio(b)
	ctx := context.Background()
	opts := unixfs.DefaultOptions()
	var ms []float64
	fetch := func(i int) {
		data := make([]byte, 1024)
		copy(data, fmt.Sprintf("small file %d %d", i, time.Now().UnixNano()))
		root, err := a.Add(ctx, files.NewBytesFile(data), opts, true, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := bn.Cat(ctx, root, 0, -1, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1e3)
	}
	for i := range 20 {
		fetch(-1 - i)
	}
	ms = ms[:0]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fetch(i)
	}
	b.ReportMetric(median(ms), "ms/fetch")
}

// benchTrio starts node A, which serves the stream ceiling's bytes, node B
// and node C (native exchange off), both connected to A.
func benchTrio(b *testing.B) (a, bn, cn *node.Node) {
	b.Helper()
	a = nodetest.Start(b, nodetest.Options{Tune: benchTune})
	bn = nodetest.Start(b, nodetest.Options{Tune: benchTune})
	cn = nodetest.Start(b, nodetest.Options{Tune: func(c *node.Config) {
		benchTune(c)
		c.Content.Native = false
	}})
	ctx := context.Background()
	for _, n := range []*node.Node{bn, cn} {
		if err := n.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
			b.Fatal(err)
		}
	}
	a.Network().Host.SetStreamHandler(benchCopyProto, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(s, newBenchPattern(benchBytes), buf); err != nil {
			s.Reset()
			return
		}
		s.CloseWrite()
		io.Copy(io.Discard, s) // until B closes its side
	})
	b.Cleanup(func() { a.Network().Host.RemoveStreamHandler(benchCopyProto) })
	return a, bn, cn
}
