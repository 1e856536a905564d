package collection

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The live set follows heartbeats, leaving and GracePeriod exactly as a
// full recount would, and a heartbeat that changes nothing (a live member
// heard again) leaves it, and its version, alone.
func TestLiveSetFollowsHeartbeats(t *testing.T) {
	creator := mustKey(t, 1)
	d := testDescriptor(t, creator, 2)
	cfg := fastConfig()
	a := newReplica(t, d, creator, cfg)
	b := newReplica(t, d, mustKey(t, 2), cfg)
	c := newReplica(t, d, mustKey(t, 3), cfg)
	beat := func(from *Collection, at time.Time) {
		t.Helper()
		from.Tick(at)
		a.Tick(at)
		hb, err := from.Heartbeat()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.HandleMessage(from.Self(), hb); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	want := func(step string, v uint64, ids ...peer.ID) {
		t.Helper()
		slices.Sort(ids)
		if got := a.Live(); !slices.Equal(got, ids) {
			t.Fatalf("%s: live %v, want %v", step, got, ids)
		}
		if a.liveV != v {
			t.Fatalf("%s: live set version %d, want %d", step, a.liveV, v)
		}
	}
	v := a.liveV
	want("alone", v, a.Self())
	beat(b, t0.Add(time.Second))
	want("b heard", v+1, a.Self(), b.Self())
	beat(b, t0.Add(2*time.Second))
	want("b heard again", v+1, a.Self(), b.Self())
	beat(c, t0.Add(3*time.Second))
	want("c heard", v+2, a.Self(), b.Self(), c.Self())
	// b was last heard at 2 s: past GracePeriod it leaves the set at the
	// next tick; c, heard later, stays.
	a.Tick(t0.Add(2*time.Second + cfg.GracePeriod + time.Millisecond))
	want("b past grace", v+3, a.Self(), c.Self())
	beat(b, t0.Add(cfg.GracePeriod+2500*time.Millisecond))
	want("b back", v+4, a.Self(), b.Self(), c.Self())
	b.Leave()
	beat(b, t0.Add(cfg.GracePeriod+2700*time.Millisecond))
	want("b leaving", v+5, a.Self(), c.Self())
	a.Leave()
	want("a leaving", v+6, c.Self())
	// c was last heard at 3 s.
	a.Tick(t0.Add(3*time.Second + cfg.GracePeriod + time.Millisecond))
	want("c past grace", v+7)
}
