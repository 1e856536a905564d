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
		deliverBeat(t, from, a, at)
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

// A member's heartbeat interval grows with the live members beyond
// HeartbeatRate × HeartbeatInterval, its heartbeats say so, and a receiver
// measures that member's silence against the announced interval: it is
// suspected after as many missed heartbeats, and leaves the allocation
// (and a newcomer's warm-up ends) as much later.
func TestHeartbeatIntervalScales(t *testing.T) {
	creator := mustKey(t, 1)
	d := testDescriptor(t, creator, 2)
	cfg := fastConfig()
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.SuspectAfter = 30 * time.Second
	cfg.GracePeriod = 60 * time.Second
	cfg.HeartbeatRate = 2 // scales beyond 20 members
	a := newReplica(t, d, creator, cfg)
	b := newReplica(t, d, mustKey(t, 2), cfg)

	beat := deliverBeat

	// Few members: the configured interval, announced by omission.
	if h := beat(t, b, a, t0); h.Interval != 0 || b.HeartbeatEvery() != cfg.HeartbeatInterval {
		t.Fatalf("2 members: interval %v announced, %v kept; want none and %v", h.Interval, b.HeartbeatEvery(), cfg.HeartbeatInterval)
	}
	if got := b.Silence(); got != cfg.SuspectAfter {
		t.Fatalf("2 members: silence %v, want %v", got, cfg.SuspectAfter)
	}

	// b hears 99 members: 100 live with itself, 2 a second: 50 s.
	var others []*Collection
	for i := range 99 {
		m := newReplica(t, d, mustKey(t, int64(100+i)), cfg)
		beat(t, m, b, t0.Add(time.Second))
		beat(t, m, a, t0.Add(time.Second))
		others = append(others, m)
	}
	h := beat(t, b, a, t0.Add(2*time.Second))
	want := 50 * time.Second
	if h.Interval != want || b.HeartbeatEvery() != want {
		t.Fatalf("100 members: interval %v announced, %v kept; want %v", h.Interval, b.HeartbeatEvery(), want)
	}
	if got, wantS := b.Silence(), 150*time.Second; got != wantS {
		t.Fatalf("100 members: silence %v, want %v", got, wantS)
	}
	if st := b.Status(); st.HeartbeatEvery != want || st.Grace != 180*time.Second {
		t.Fatalf("status: every %v grace %v", st.HeartbeatEvery, st.Grace)
	}

	// On a, b is suspected after 3 × 50 s, and gone 30 s later (as
	// GracePeriod is 30 s longer than SuspectAfter).
	state := func(at time.Duration) MemberState {
		t.Helper()
		a.Tick(t0.Add(2*time.Second + at))
		for _, m := range a.Status().Members {
			if m.ID == b.Self() {
				return m.State
			}
		}
		return "absent"
	}
	for _, tc := range []struct {
		after time.Duration
		want  MemberState
	}{
		{100 * time.Second, MemberAlive}, // past the configured 30 s and 60 s
		{150 * time.Second, MemberAlive},
		{151 * time.Second, MemberSuspect},
		{180 * time.Second, MemberSuspect},
		{181 * time.Second, MemberGone},
	} {
		if got := state(tc.after); got != tc.want {
			t.Fatalf("b unheard for %v: %s, want %s", tc.after, got, tc.want)
		}
	}
	if slices.Contains(a.Live(), b.Self()) {
		t.Fatal("b still live past its stretched grace")
	}

	// A heartbeat may not announce more than twice the interval the
	// receiver would use with every member it knows: a knows 101 (b, the
	// 99 and itself), which make 50.5 s, so the liar's hour counts as
	// 101 s, and it is suspected after 3 × 101 s.
	liar := newReplica(t, d, mustKey(t, 7), cfg)
	liar.Tick(t0.Add(200 * time.Second))
	lh := &Heartbeat{Collection: d.ID(), Time: uint64(t0.Add(200 * time.Second).UnixNano()), Interval: time.Hour}
	if err := lh.sign(mustKey(t, 7)); err != nil {
		t.Fatal(err)
	}
	a.Tick(t0.Add(200 * time.Second))
	if _, err := a.HandleMessage(liar.Self(), lh.Encode()); err != nil {
		t.Fatalf("liar's heartbeat: %v", err)
	}
	for _, tc := range []struct {
		after time.Duration
		want  MemberState
	}{{302 * time.Second, MemberAlive}, {304 * time.Second, MemberSuspect}} {
		a.Tick(t0.Add(200*time.Second + tc.after))
		for _, m := range a.Status().Members {
			if m.ID == liar.Self() && m.State != tc.want {
				t.Fatalf("a member announcing an hour, unheard for %v: %s, want %s", tc.after, m.State, tc.want)
			}
		}
	}

	// A newcomer takes a member's interval only up to twice what it would
	// use itself with the members it knows: hearing b's 50 s first, when
	// it knows nobody, it takes 20 s and waits 10 s longer before it plans
	// anything; once it knows the others, b's next 50 s counts in full,
	// and it waits 40 s longer.
	ncfg := cfg
	ncfg.WarmUp = 30 * time.Second
	n := newReplica(t, d, mustKey(t, 9), ncfg)
	beat(t, b, n, t0.Add(3*time.Second))
	if got := n.warmUntil(); !got.Equal(t0.Add(40 * time.Second)) {
		t.Fatalf("warm-up until %v, want t0+40s", got.Sub(t0))
	}
	for _, m := range others {
		beat(t, m, n, t0.Add(4*time.Second))
	}
	beat(t, b, n, t0.Add(5*time.Second))
	if got := n.warmUntil(); !got.Equal(t0.Add(70 * time.Second)) {
		t.Fatalf("warm-up until %v, want t0+70s", got.Sub(t0))
	}
}

// deliverBeat ticks from and to to at, hands from's heartbeat to to, and
// returns it decoded.
func deliverBeat(t *testing.T, from, to *Collection, at time.Time) *Heartbeat {
	t.Helper()
	from.Tick(at)
	to.Tick(at)
	enc, err := from.Heartbeat()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := to.HandleMessage(from.Self(), enc); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	h, err := DecodeHeartbeat(enc)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
