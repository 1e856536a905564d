package collection

import (
	"fmt"
	"github.com/libp2p/go-libp2p/core/peer"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
)

// BenchmarkApply measures decoding, signature verification and applying
// deltas that each add one item, the way a replica receives a writer's
// history.
func BenchmarkApply(b *testing.B) {
	ck, _ := testKey(b, 1)
	d := testDescriptor(b, ck, 3)
	w := newReplica(b, d, ck, fastConfig())
	bs := make([]blocks.Block, 0, b.N)
	for i := range b.N {
		bs = append(bs, mustAdd(b, w, addItems(i)...)...)
	}
	k, _ := testKey(b, 2)
	r := newReplica(b, d, k, fastConfig())
	b.ReportAllocs()
	b.ResetTimer()
	for _, blk := range bs {
		if _, err := r.AddBlock(blk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if r.Len() != b.N {
		b.Fatalf("%d items", r.Len())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deltas/s")
}

// BenchmarkWrite measures signing and applying a one-item delta locally.
func BenchmarkWrite(b *testing.B) {
	ck, _ := testKey(b, 1)
	w := newReplica(b, testDescriptor(b, ck, 3), ck, fastConfig())
	b.ReportAllocs()
	for i := range b.N {
		mustAdd(b, w, addItems(i)...)
	}
}

var benchSizes = []int{100, 1000, 10000}

// BenchmarkConvergeAfterHeal: 7 members split 4/3, each side writes half
// of the items (one delta per item, snapshots folding history as the
// default policy does), then the partition heals and every member asks
// for heads. Reported: wall time until all 7 replicas are identical (all
// members run in this one goroutine, so it is their summed CPU time), and
// the simulated time and sync rounds it took.
func BenchmarkConvergeAfterHeal(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("items=", n), func(b *testing.B) {
			var wall, simT time.Duration
			var rounds int
			for range b.N {
				s := newSim(b, 7, 3, DefaultConfig(), 21)
				s.snaps, s.noPins = true, true
				creator, writer := s.nodes[0], s.nodes[5]
				bs, err := creator.c.Grant(writer.id)
				s.write(creator, bs, err)
				s.step(time.Second)
				for _, nd := range s.nodes[4:] {
					nd.group = 1
				}
				for i := 0; i < n/2; i += 50 {
					s.addItems(creator, i, min(i+50, n/2))
					s.addItems(writer, n/2+i, min(n/2+i+50, n))
					s.step(time.Second)
				}
				for range 5 {
					s.step(time.Second)
				}
				for _, nd := range s.nodes {
					nd.group = 0
					s.publish(nd, nd.c.HeadsRequest())
				}
				s.rounds = 0
				start := time.Now()
				simT += s.runUntil(10*time.Minute, "converged", s.converged)
				wall += time.Since(start)
				rounds += s.rounds
				if s.nodes[0].c.Len() != n {
					b.Fatalf("%d items", s.nodes[0].c.Len())
				}
			}
			b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "wall-ms/op")
			b.ReportMetric(simT.Seconds()/float64(b.N), "sim-s/op")
			b.ReportMetric(float64(rounds)/float64(b.N)/7, "rounds/member")
		})
	}
}

// BenchmarkRepair: 7 members, R=3, every item placed; the member holding
// the most items dies. Reported: simulated time until every item is back
// on 3 live members (grace period 60s + the 5s a simulated pin takes, plus
// protocol delays), and the wall time the 6 survivors spent in the
// protocol over that period (Tick, heartbeats, Plan, status).
func BenchmarkRepair(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("items=", n), func(b *testing.B) {
			var wall, simT time.Duration
			var moved int
			for range b.N {
				s := newSim(b, 7, 3, DefaultConfig(), 23)
				for i := 0; i < n; i += 500 {
					s.addItems(s.nodes[0], i, min(i+500, n))
				}
				items := itemRange(0, n)
				s.runUntil(10*time.Minute, "placement", func() bool { return s.placed(items, 3, true) && s.quiet() })
				for _, nd := range s.nodes {
					nd.origin = map[string]bool{}
				}
				victim := s.nodes[0]
				for _, nd := range s.nodes {
					if len(nd.pinned) > len(victim.pinned) {
						victim = nd
					}
				}
				moved += len(victim.pinned)
				s.kill(victim)
				start := time.Now()
				simT += s.runUntil(10*time.Minute, "repair", func() bool { return s.placed(items, 3, false) })
				wall += time.Since(start)
			}
			b.ReportMetric(simT.Seconds()/float64(b.N), "sim-s/op")
			b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "wall-ms/op")
			b.ReportMetric(float64(moved)/float64(b.N), "items-moved")
		})
	}
}

// BenchmarkAllocation measures recomputing every item's holders after a
// membership change (7 members, R=3), which Plan, Heartbeat and Status do
// once per change.
func BenchmarkAllocation(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("items=", n), func(b *testing.B) {
			s := newSim(b, 7, 3, fastConfig(), 25)
			for i := 0; i < n; i += 500 {
				s.addItems(s.nodes[0], i, min(i+500, n))
			}
			s.step(time.Second)
			c := s.nodes[0].c
			b.ResetTimer()
			for range b.N {
				c.mu.Lock()
				c.liveV++
				c.ensureAlloc()
				c.mu.Unlock()
			}
		})
	}
}

// BenchmarkLiveSet1000 measures what a heartbeat from a live member costs
// the live set in a collection of 1,000 members: every member hears every
// member's heartbeat, so at this size this runs a million times a
// heartbeat round.
func BenchmarkLiveSet1000(b *testing.B) {
	a, _ := liveSetReplica(b)
	v := a.liveV
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.mu.Lock()
		a.updateLive()
		a.mu.Unlock()
	}
	b.StopTimer()
	if a.liveV != v {
		b.Fatal("the live set changed")
	}
}

// liveSetReplica returns a replica that heard 999 other members, and
// their IDs.
func liveSetReplica(b *testing.B) (*Collection, []peer.ID) {
	b.Helper()
	ck, _ := testKey(b, 1)
	d := testDescriptor(b, ck, 3)
	a := newReplica(b, d, ck, fastConfig())
	var ids []peer.ID
	for i := range 999 {
		k, _ := testKey(b, int64(i+2))
		m := newReplica(b, d, k, fastConfig())
		hb, err := m.Heartbeat()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.HandleMessage(m.Self(), hb); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, m.Self())
	}
	if n := len(a.Live()); n != 1000 {
		b.Fatalf("%d live", n)
	}
	return a, ids
}

// BenchmarkLiveSetHeartbeat1000 is what a heartbeat from a live member
// costs the live set at 1,000 members (heardFrom; BenchmarkLiveSet1000 is
// the full check, which heartbeats ran before and Tick runs now).
func BenchmarkLiveSetHeartbeat1000(b *testing.B) {
	a, ids := liveSetReplica(b)
	v := a.liveV
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		a.mu.Lock()
		a.heardFrom(a.members[ids[i%len(ids)]])
		a.mu.Unlock()
	}
	b.StopTimer()
	if a.liveV != v || len(a.Live()) != 1000 {
		b.Fatal("the live set changed")
	}
}
