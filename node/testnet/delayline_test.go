package testnet

import (
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder collects what a delay line hands on, with the (virtual) time.
type recorder struct {
	mu  sync.Mutex
	seq []uint32
	at  []time.Time
}

func (r *recorder) out(f []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq = append(r.seq, binary.BigEndian.Uint32(f))
	r.at = append(r.at, time.Now())
}

func (r *recorder) snapshot() ([]uint32, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seq), slices.Clone(r.at)
}

func numbered(i uint32, size int) []byte {
	f := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(f, i)
	return f
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestDelayLineLatency: a ping over two 20 ms lines (one each way) comes
// back after 40 ms, as a round trip over two netem links would.
func TestDelayLineLatency(t *testing.T) {
	for _, tc := range []struct {
		name    string
		oneWay  time.Duration
		wantRTT time.Duration
	}{
		{"20ms", 20 * time.Millisecond, 40 * time.Millisecond},
		{"1ms", time.Millisecond, 2 * time.Millisecond},
		{"zero", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				sent := map[uint32]time.Time{}
				var rtts []time.Duration
				shape := LineShape{Latency: tc.oneWay}
				var back *DelayLine
				back = NewDelayLine(shape, 2, func(f []byte) {
					mu.Lock()
					defer mu.Unlock()
					rtts = append(rtts, time.Since(sent[binary.BigEndian.Uint32(f)]))
				})
				there := NewDelayLine(shape, 1, func(f []byte) { back.Push(f) }) // the echo
				defer back.Close()
				defer there.Close()
				for i := range uint32(50) {
					mu.Lock()
					sent[i] = time.Now()
					mu.Unlock()
					there.Push(numbered(i, 64))
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(time.Second)
				synctest.Wait()
				mu.Lock()
				defer mu.Unlock()
				if len(rtts) != 50 {
					t.Fatalf("%d of 50 pings came back", len(rtts))
				}
				if m := median(rtts); m != tc.wantRTT {
					t.Errorf("median RTT %v, want %v", m, tc.wantRTT)
				}
			})
		})
	}
}

// TestDelayLineJitter: delays spread over latency ± jitter, frames keep
// their order, and the same seed gives the same delays.
func TestDelayLineJitter(t *testing.T) {
	run := func(seed uint64) []time.Duration {
		var delays []time.Duration
		synctest.Test(t, func(t *testing.T) {
			var r recorder
			d := NewDelayLine(LineShape{Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}, seed, r.out)
			defer d.Close()
			start := time.Now()
			const n = 400
			for i := range uint32(n) {
				d.Push(numbered(i, 100))
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(time.Second)
			synctest.Wait()
			seq, at := r.snapshot()
			if len(seq) != n {
				t.Fatalf("%d of %d frames out", len(seq), n)
			}
			for i := range seq {
				if seq[i] != uint32(i) {
					t.Fatalf("frame %d came out as number %d: order not kept", i, seq[i])
				}
				delays = append(delays, at[i].Sub(start.Add(time.Duration(i)*2*time.Millisecond)))
			}
		})
		return delays
	}
	a := run(7)
	lo, hi := slices.Min(a), slices.Max(a)
	if lo < 15*time.Millisecond || hi > 25*time.Millisecond {
		t.Errorf("delays in [%v, %v], want within 20ms ± 5ms", lo, hi)
	}
	if lo > 16*time.Millisecond || hi < 24*time.Millisecond {
		t.Errorf("delays in [%v, %v]: jitter does not spread them over ± 5ms", lo, hi)
	}
	if m := median(a); m < 19*time.Millisecond || m > 22*time.Millisecond {
		// Order-keeping holds some frames back, so the median sits a
		// little above the latency.
		t.Errorf("median delay %v, want about 20ms", m)
	}
	if b := run(7); !slices.Equal(a, b) {
		t.Error("the same seed gave different delays")
	}
	if c := run(8); slices.Equal(a, c) {
		t.Error("another seed gave the same delays")
	}
}

// TestDelayLineLoss: about the loss probability's share of frames is
// dropped, the counters say so, and no frame is reordered.
func TestDelayLineLoss(t *testing.T) {
	for _, tc := range []struct {
		loss   float64
		lo, hi int // delivered out of 10000
	}{
		{0, 10000, 10000},
		{0.01, 9850, 9950},
		{0.1, 8850, 9150},
		{1, 0, 0},
	} {
		synctest.Test(t, func(t *testing.T) {
			var r recorder
			d := NewDelayLine(LineShape{Latency: time.Millisecond, Loss: tc.loss}, 3, r.out)
			defer d.Close()
			for i := range uint32(10000) {
				d.Push(numbered(i, 64))
				if i%100 == 99 {
					time.Sleep(time.Millisecond)
				}
			}
			time.Sleep(time.Second)
			synctest.Wait()
			seq, _ := r.snapshot()
			if len(seq) < tc.lo || len(seq) > tc.hi {
				t.Errorf("loss %g: %d of 10000 delivered, want %d..%d", tc.loss, len(seq), tc.lo, tc.hi)
			}
			if !slices.IsSorted(seq) {
				t.Errorf("loss %g: frames reordered", tc.loss)
			}
			st := d.Stats()
			if int(st.Sent) != len(seq) || st.Sent+st.Lost != 10000 || st.Overflow != 0 {
				t.Errorf("loss %g: stats %+v for %d delivered", tc.loss, st, len(seq))
			}
		})
	}
}

// TestDelayLineBandwidth: a burst leaves at the line's rate, then waits
// the latency.
func TestDelayLineBandwidth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		// 8 Mbit/s: a 1000-byte frame takes 1 ms.
		d := NewDelayLine(LineShape{Latency: 10 * time.Millisecond, Rate: 8_000_000}, 1, r.out)
		defer d.Close()
		start := time.Now()
		for i := range uint32(100) {
			d.Push(numbered(i, 1000))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		_, at := r.snapshot()
		if len(at) != 100 {
			t.Fatalf("%d of 100 frames out", len(at))
		}
		if got := at[0].Sub(start); got != 11*time.Millisecond {
			t.Errorf("first frame after %v, want 11ms (1ms on the wire + 10ms)", got)
		}
		if got := at[99].Sub(start); got != 110*time.Millisecond {
			t.Errorf("last frame after %v, want 110ms (100ms on the wire + 10ms)", got)
		}
	})
}

// TestDelayLineReshape: a new shape applies to frames pushed after it;
// a shorter latency never lets a frame overtake one queued before.
func TestDelayLineReshape(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		d := NewDelayLine(LineShape{}, 1, r.out)
		defer d.Close()
		start := time.Now()
		d.Push(numbered(0, 64)) // unshaped: out at once
		d.SetShape(LineShape{Latency: 50 * time.Millisecond})
		d.Push(numbered(1, 64))
		d.SetShape(LineShape{Latency: 10 * time.Millisecond})
		d.Push(numbered(2, 64))
		time.Sleep(time.Second)
		synctest.Wait()
		seq, at := r.snapshot()
		want := []time.Duration{0, 50 * time.Millisecond, 50 * time.Millisecond}
		if !slices.Equal(seq, []uint32{0, 1, 2}) {
			t.Fatalf("order %v", seq)
		}
		for i, w := range want {
			if got := at[i].Sub(start); got != w {
				t.Errorf("frame %d out after %v, want %v", i, got, w)
			}
		}
	})
}

// TestDelayLineOverflow: a full queue drops, and counts it.
func TestDelayLineOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		d := NewDelayLine(LineShape{Latency: time.Second}, 1, r.out)
		defer d.Close()
		d.limit = 10
		for i := range uint32(15) {
			d.Push(numbered(i, 64))
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		seq, _ := r.snapshot()
		if st := d.Stats(); len(seq) != 10 || st.Overflow != 5 {
			t.Errorf("%d out, stats %+v; want 10 out, 5 overflowed", len(seq), st)
		}
	})
}

// BenchmarkDelayLine measures frames of 1500 bytes through a line,
// unshaped and with 1 ms of latency (real time).
func BenchmarkDelayLine(b *testing.B) {
	for _, bc := range []struct {
		name  string
		shape LineShape
	}{
		{"unshaped", LineShape{}},
		{"1ms", LineShape{Latency: time.Millisecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var wg sync.WaitGroup
			d := NewDelayLine(bc.shape, 1, func(f []byte) { putFrame(f); wg.Done() })
			defer d.Close()
			b.SetBytes(1500)
			for b.Loop() {
				wg.Add(1)
				f := getFrame(1500)
				if !d.Push(f) {
					wg.Done()
				}
			}
			wg.Wait()
		})
	}
}

// ipv4Frame is an Ethernet frame carrying an IPv4 UDP datagram from
// 10.0.0.1:sport to 10.0.0.2:dport whose payload starts with i.
func ipv4Frame(i uint32, sport, dport uint16) []byte {
	f := make([]byte, 14+20+8+4)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[9] = 0x45, 17
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	binary.BigEndian.PutUint32(ip[28:], i)
	return f
}

func TestFlowOf(t *testing.T) {
	a, b := flowOf(ipv4Frame(1, 4001, 5001)), flowOf(ipv4Frame(2, 4001, 5002))
	if a == b || a != flowOf(ipv4Frame(3, 4001, 5001)) {
		t.Errorf("flows %+v and %+v: want different flows for different ports, the same for the same", a, b)
	}
	if a.proto != 17 || a.sport != 4001 || a.dport != 5001 {
		t.Errorf("flow %+v, want UDP 4001 -> 5001", a)
	}
	for _, f := range [][]byte{nil, numbered(1, 64), ipv4Frame(1, 1, 2)[:20]} {
		if k := flowOf(f); k != (flowKey{}) {
			t.Errorf("flow of a frame that is not a whole IP packet: %+v, want the zero key", k)
		}
	}
}

// TestDelayLineFlows: under jitter, frames keep their order within a flow
// (as a TCP connection needs), while one flow's frames do not wait for
// another's: a burst to several peers leaves as the draws fall, not all
// behind the latest draw.
func TestDelayLineFlows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var order []uint32 // payload numbers in the order they left
		line := NewDelayLine(LineShape{Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond}, 7, func(f []byte) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, binary.BigEndian.Uint32(f[14+28:]))
		})
		defer line.Close()
		const flows, per = 8, 20
		for i := range uint32(per) {
			for fl := range uint32(flows) {
				line.Push(ipv4Frame(fl*1000+i, 4001, uint16(5000+fl)))
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(order) != flows*per {
			t.Fatalf("%d frames left the line, want %d", len(order), flows*per)
		}
		next := map[uint32]uint32{}
		overtaken := 0
		for k, n := range order {
			fl, i := n/1000, n%1000
			if i != next[fl] {
				t.Fatalf("flow %d: frame %d left before frame %d", fl, i, next[fl])
			}
			next[fl]++
			if k > 0 && n < order[k-1] && order[k-1]%1000 == i {
				overtaken++ // a later flow's frame of the same round went first
			}
		}
		if overtaken == 0 {
			t.Errorf("no frame of one flow left before another flow's frame pushed earlier in the same round: flows wait for each other")
		}
	})
}
