package testnet

import (
	"container/heap"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"
)

// The delay line is the userspace stand-in for tc netem, for kernels
// without sch_netem: the shaper (shaper.go) reads each frame a node sends
// from its TAP device, pushes it into the node's delay line, and the line
// hands it on to the bridge after the link's serialisation time (its
// bandwidth), its latency and a jitter drawn uniformly from ±jitter, or
// drops it with the loss probability. Frames of one flow (IP addresses,
// protocol and ports) leave in the order they came in, as TCP expects of a
// path: a frame whose draw would overtake the one before it in its flow
// waits for it (netem instead reorders under jitter unless it is given a
// rate). Frames of different flows do not wait for each other, as on the
// internet, where each connection meets the jitter on its own, and as the
// simulated links (simlink) order each connection: a burst to several
// peers is not held back to the latest draw among them.

// LineShape is what a delay line applies to the frames that cross it.
type LineShape struct {
	Latency time.Duration // one way
	Jitter  time.Duration // uniform in [-Jitter, +Jitter]
	Loss    float64       // probability in [0, 1]
	Rate    int64         // bits per second; 0: unlimited
}

// IsZero says the line passes frames on at once.
func (s LineShape) IsZero() bool { return s == LineShape{} }

// lineShapeOf turns a scenario shape into a delay line's.
func lineShapeOf(s Shape) (LineShape, error) {
	ls := LineShape{Latency: s.Latency.D(), Jitter: s.Jitter.D()}
	l, err := parseLoss(s.Loss)
	if err != nil {
		return ls, err
	}
	ls.Loss = l / 100
	if s.Bandwidth != "" {
		if ls.Rate, err = parseBandwidth(s.Bandwidth); err != nil {
			return ls, err
		}
	}
	return ls, nil
}

// LineStats counts what a delay line did.
type LineStats struct {
	Sent     uint64 `json:"sent"`     // frames handed on
	Lost     uint64 `json:"lost"`     // dropped by the loss draw
	Overflow uint64 `json:"overflow"` // dropped because the queue was full
}

// DefaultLineLimit is a delay line's queue bound in frames (netem's
// default limit is 1000; a 20 ms line at a few hundred MB/s holds more).
const DefaultLineLimit = 10000

type pending struct {
	at    time.Time
	seq   uint64 // push order: frames due at the same time leave in it
	frame []byte
}

// lineQueue is a min-heap of pending frames by due time, then push order.
type lineQueue []pending

func (q lineQueue) Len() int { return len(q) }
func (q lineQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q lineQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *lineQueue) Push(x any)   { *q = append(*q, x.(pending)) }
func (q *lineQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = pending{}
	*q = old[:len(old)-1]
	return x
}

// flowKey names the flow an Ethernet frame belongs to: its IP protocol,
// addresses and TCP or UDP ports. Frames that are not IP (ARP) share the
// zero key.
type flowKey struct {
	proto        uint8
	src, dst     [16]byte
	sport, dport uint16
}

func flowOf(f []byte) flowKey {
	var k flowKey
	if len(f) < 14 {
		return k
	}
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800: // IPv4
		ip := f[14:]
		if len(ip) < 20 {
			return k
		}
		ihl := int(ip[0]&0x0f) * 4
		k.proto = ip[9]
		copy(k.src[:], ip[12:16])
		copy(k.dst[:], ip[16:20])
		if ihl >= 20 && len(ip) >= ihl {
			l4 = ip[ihl:]
		}
	case 0x86dd: // IPv6 (ports only without extension headers)
		ip := f[14:]
		if len(ip) < 40 {
			return k
		}
		k.proto = ip[6]
		copy(k.src[:], ip[8:24])
		copy(k.dst[:], ip[24:40])
		l4 = ip[40:]
	default:
		return k
	}
	if (k.proto == 6 || k.proto == 17) && len(l4) >= 4 {
		k.sport, k.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	}
	return k
}

// maxFlows bounds the per-flow release times kept; past it, flows with
// nothing queued are forgotten.
const maxFlows = 4096

// DelayLine delays, drops and rate-limits frames on their way to out. Push
// may be called from one goroutine at a time per line (frames are ordered
// by their Push); SetShape, Stats and Close from any. out is called from
// the line's own goroutine (or from Push when the line is idle and
// unshaped), one frame at a time, and owns the frame it is given.
type DelayLine struct {
	out   func([]byte)
	limit int

	mu     sync.Mutex
	shape  LineShape
	rng    *rand.Rand
	q      lineQueue // by due time
	seq    uint64
	txFree time.Time             // when the link has sent what is queued (bandwidth)
	last   map[flowKey]time.Time // release time of each flow's newest frame
	busy   bool                  // the line's goroutine is handing frames to out
	closed bool
	stats  LineStats

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// NewDelayLine starts a delay line; seed makes its loss and jitter draws
// reproducible. Close stops it.
func NewDelayLine(shape LineShape, seed uint64, out func([]byte)) *DelayLine {
	d := &DelayLine{
		out: out, limit: DefaultLineLimit, shape: shape, last: map[flowKey]time.Time{},
		rng:  rand.New(rand.NewPCG(seed, 0x64656c6179)),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	d.wg.Add(1)
	go d.loop()
	return d
}

// SetShape changes the shape for frames pushed from now on; queued frames
// keep their release times.
func (d *DelayLine) SetShape(s LineShape) {
	d.mu.Lock()
	d.shape = s
	d.mu.Unlock()
}

// Shape returns the current shape.
func (d *DelayLine) Shape() LineShape {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shape
}

// Stats returns the counters.
func (d *DelayLine) Stats() LineStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Push queues a frame (the line owns it from now on) and says whether it
// will be sent: false when the loss draw or a full queue dropped it.
func (d *DelayLine) Push(frame []byte) bool {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	s := d.shape
	if s.Loss > 0 && d.rng.Float64() < s.Loss {
		d.stats.Lost++
		return false
	}
	queued := len(d.q)
	if s.IsZero() && queued == 0 && !d.busy {
		// Idle and unshaped: nothing to keep order with.
		d.stats.Sent++
		d.out(frame)
		return true
	}
	if queued >= d.limit {
		d.stats.Overflow++
		return false
	}
	depart := now
	if s.Rate > 0 {
		start := now
		if d.txFree.After(start) {
			start = d.txFree
		}
		depart = start.Add(time.Duration(int64(len(frame)) * 8 * int64(time.Second) / s.Rate))
		d.txFree = depart
	}
	at := depart.Add(s.Latency)
	if s.Jitter > 0 {
		at = at.Add(time.Duration(d.rng.Int64N(2*int64(s.Jitter)+1)) - s.Jitter)
	}
	flow := flowOf(frame)
	if last := d.last[flow]; at.Before(last) {
		at = last
	}
	if len(d.last) >= maxFlows {
		for k, t := range d.last {
			if !t.After(now) {
				delete(d.last, k)
			}
		}
	}
	d.last[flow] = at
	d.seq++
	heap.Push(&d.q, pending{at: at, seq: d.seq, frame: frame})
	if queued == 0 || d.q[0].seq == d.seq {
		// The line sleeps until its earliest frame: wake it for a new one
		// (which may be due before the frame it waits for).
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// loop hands frames to out when they are due.
func (d *DelayLine) loop() {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var due [][]byte
	for {
		d.mu.Lock()
		if len(d.q) == 0 {
			d.mu.Unlock()
			select {
			case <-d.wake:
				continue
			case <-d.done:
				return
			}
		}
		now := time.Now()
		if wait := d.q[0].at.Sub(now); wait > 0 {
			d.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.wake: // an earlier frame came in
				timer.Stop()
			case <-d.done:
				timer.Stop()
				return
			}
			continue
		}
		due = due[:0]
		for len(d.q) > 0 && !d.q[0].at.After(now) {
			due = append(due, heap.Pop(&d.q).(pending).frame)
		}
		d.busy = true
		d.mu.Unlock()
		for _, f := range due {
			d.out(f)
		}
		d.mu.Lock()
		d.busy = false
		d.stats.Sent += uint64(len(due))
		d.mu.Unlock()
	}
}

// Close stops the line and drops what is queued. It waits for the line's
// goroutine, so out is not called after Close returns.
func (d *DelayLine) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.q = nil
	close(d.done)
	d.mu.Unlock()
	d.wg.Wait()
}
