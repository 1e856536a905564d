package collection

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testPeers(t testing.TB, n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		_, out[i] = testKey(t, int64(5000+i))
	}
	return out
}

func TestHoldersDeterministic(t *testing.T) {
	ps := testPeers(t, 9)
	rev := append([]peer.ID(nil), ps...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	for i := range 200 {
		h := Holders(itemCID(i), ps, 3)
		if len(h) != 3 || h[0] == h[1] || h[1] == h[2] || h[0] == h[2] {
			t.Fatalf("holders %v", h)
		}
		if fmt.Sprint(h) != fmt.Sprint(Holders(itemCID(i), rev, 3)) {
			t.Fatal("holders depend on member order")
		}
		// The top r are a prefix of the top r+1.
		if fmt.Sprint(Holders(itemCID(i), ps, 4)[:3]) != fmt.Sprint(h) {
			t.Fatal("top 3 not a prefix of top 4")
		}
	}
	if got := Holders(itemCID(1), ps[:2], 3); len(got) != 2 {
		t.Fatalf("fewer members than r: %v", got)
	}
	if got := Holders(itemCID(1), nil, 3); len(got) != 0 {
		t.Fatal("no members")
	}
}

// Adding or removing one member of N moves only the items for which it
// is, or becomes, a holder: about R/N of them. Load is balanced.
func TestHoldersStability(t *testing.T) {
	const items, r = 6000, 3
	for _, n := range []int{5, 7, 12} {
		ps := testPeers(t, n+1)
		before := map[int]string{}
		load := map[peer.ID]int{}
		for i := range items {
			h := Holders(itemCID(i), ps[:n], r)
			before[i] = fmt.Sprint(h)
			for _, p := range h {
				load[p]++
			}
		}
		mean := float64(items*r) / float64(n)
		for p, l := range load {
			if math.Abs(float64(l)-mean) > 0.15*mean {
				t.Errorf("n=%d: member %s holds %d, mean %.0f", n, p.ShortString(), l, mean)
			}
		}
		// add a member
		moved := 0
		for i := range items {
			h := Holders(itemCID(i), ps[:n+1], r)
			if fmt.Sprint(h) != before[i] {
				moved++
				found := false
				for _, p := range h {
					found = found || p == ps[n]
				}
				if !found {
					t.Fatalf("item %d changed holders without the new member", i)
				}
			}
		}
		frac, want := float64(moved)/items, float64(r)/float64(n+1)
		t.Logf("n=%d: adding a member changes the holders of %.3f of the items (R/(N+1) = %.3f)", n, frac, want)
		if math.Abs(frac-want) > 0.25*want {
			t.Errorf("n=%d: %.3f of items moved, want about %.3f", n, frac, want)
		}
		// remove a member
		moved = 0
		for i := range items {
			if fmt.Sprint(Holders(itemCID(i), ps[1:n], r)) != before[i] {
				moved++
			}
		}
		frac, want = float64(moved)/items, float64(r)/float64(n)
		t.Logf("n=%d: removing a member changes the holders of %.3f of the items (R/N = %.3f)", n, frac, want)
		if math.Abs(frac-want) > 0.25*want {
			t.Errorf("n=%d: %.3f of items moved, want about %.3f", n, frac, want)
		}
	}
}

func TestHeartbeatValidation(t *testing.T) {
	s := newSim(t, 2, 1, fastConfig(), 1)
	a, b := s.nodes[0], s.nodes[1]
	hb := s.beat(b)
	bid := b.c.Self()
	if _, err := a.c.HandleMessage(bid, hb); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.HandleMessage(bid, hb); !errors.Is(err, ErrStaleHeartbeat) {
		t.Fatalf("replay: %v", err)
	}
	// tampered
	h, _ := DecodeHeartbeat(s.beat(b))
	h.Pinned = 99
	h.body = nil
	if _, err := a.c.HandleMessage(bid, h.Encode()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	// another collection
	other := &Heartbeat{Collection: newBlock([]byte("x")).Cid(), Time: uint64(s.now.UnixNano()) + 5}
	other.sign(b.key)
	if _, err := a.c.HandleMessage(bid, other.Encode()); !errors.Is(err, ErrWrongCollection) {
		t.Fatalf("other collection: %v", err)
	}
	// a stranger's heartbeat from long ago
	k, kid := testKey(t, 99)
	old := &Heartbeat{Collection: a.c.ID(), Time: uint64(t0.Add(-time.Hour).UnixNano())}
	old.sign(k)
	if _, err := a.c.HandleMessage(kid, old.Encode()); !errors.Is(err, ErrStaleHeartbeat) {
		t.Fatalf("old stranger: %v", err)
	}
	if st := a.c.Stats(); st.Heartbeats != 1 || st.BadHeartbeats != 4 {
		t.Fatalf("stats %+v", st)
	}
	if live := a.c.Live(); len(live) != 2 {
		t.Fatalf("live %v", live)
	}
	a.c.Tick(t0.Add(s.cfg.GracePeriod + time.Second))
	if live := a.c.Live(); len(live) != 1 {
		t.Fatalf("member not dropped after grace: %v", live)
	}
}

// The scenario of the issue, on simulated members: 7 members, R=3, 30
// items; each item on exactly 3 live members; kill 2: every item back on 3
// live members within grace+fetch; restart them: back to exactly 3,
// nothing lost; and no release ever leaves fewer than R copies.
func TestSevenMembersKillRestart(t *testing.T) {
	const r, nItems = 3, 30
	cfg := DefaultConfig() // 10s heartbeats, 60s grace, 30s warm-up
	s := newSim(t, 7, r, cfg, 7)
	items := itemRange(0, nItems)
	s.addItems(s.nodes[0], 0, nItems)

	took := s.runUntil(5*time.Minute, "initial placement", func() bool {
		return s.converged() && s.placed(items, r, true) && s.allOK()
	})
	t.Logf("initial placement: %v", took)
	if err := s.holdersAgree(items); err != nil {
		t.Fatal(err)
	}
	for _, nd := range s.nodes {
		nd.origin = map[string]bool{} // the writer's own copy is gone
	}
	for _, it := range items {
		if n := s.liveCopies(it.KeyString()); n != r {
			t.Fatalf("%s on %d members", it, n)
		}
	}
	for _, nd := range s.nodes {
		if got, want := len(nd.c.Pinned()), len(nd.pinned); got != want {
			t.Fatalf("node %d: replica says %d pins, store %d", nd.i, got, want)
		}
	}

	// Kill the two members holding the most items.
	byLoad := append([]*simNode(nil), s.nodes...)
	sort.Slice(byLoad, func(i, j int) bool { return len(byLoad[i].pinned) > len(byLoad[j].pinned) })
	victims := byLoad[:2]
	hit := map[string]bool{}
	for _, v := range victims {
		for k := range v.pinned {
			hit[k] = true
		}
		s.kill(v)
	}
	t.Logf("killed members %d and %d, holding %d and %d items; %d items lose a copy",
		victims[0].i, victims[1].i, len(victims[0].pinned), len(victims[1].pinned), len(hit))
	observer := s.upNodes()[0]
	states := func() map[ItemState]int {
		out := map[ItemState]int{}
		for _, st := range observer.c.Status().Items {
			out[st.State]++
		}
		return out
	}
	killedAt := s.now
	// Past SuspectAfter the lost copies no longer count, but the holders
	// keep their items until the grace period ends.
	for range int((cfg.SuspectAfter + 2*time.Second) / time.Second) {
		s.step(time.Second)
	}
	if got := states(); got[StateUnderReplicated] != len(hit) || got[StateOK] != nItems-len(hit) {
		t.Fatalf("within grace: states %v, want %d under-replicated", got, len(hit))
	}
	s.runUntil(cfg.GracePeriod, "repair starts", func() bool {
		return states()[StateRepairing] > 0 || s.placed(items, r, false)
	})
	t.Logf("%v after the kill: states %v", s.now.Sub(killedAt), states())
	deadline := cfg.GracePeriod + s.fetch + 2*time.Second
	s.runUntil(deadline, "repair", func() bool { return s.placed(items, r, false) })
	took = s.now.Sub(killedAt)
	t.Logf("every item back on %d live members %v after the kill (grace %v + fetch %v)", r, took, cfg.GracePeriod, s.fetch)
	if took > deadline {
		t.Fatalf("repair took %v, want within grace+fetch (%v)", took, deadline)
	}
	took = s.runUntil(time.Minute, "status ok after repair", s.allOK)
	t.Logf("status ok %v later", took)
	if err := s.holdersAgree(items); err != nil {
		t.Fatal(err)
	}

	// Restart them: their pins are still on disk.
	for _, v := range victims {
		s.start(v)
	}
	took = s.runUntil(5*time.Minute, "back to exactly R", func() bool {
		return s.converged() && s.placed(items, r, true) && s.allOK() && s.quiet()
	})
	t.Logf("back to exactly %d copies %v after the restart", r, took)
	// and it stays so
	for range 120 {
		s.step(time.Second)
	}
	if !s.placed(items, r, true) || !s.allOK() {
		t.Fatal("placement not stable")
	}
	if err := s.holdersAgree(items); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		holders := s.nodes[0].c.HoldersOf(it)
		sortPeers(holders)
		var pinners []peer.ID
		for _, i := range s.pinnedBy(it.KeyString()) {
			pinners = append(pinners, s.nodes[i].id)
		}
		sortPeers(pinners)
		if fmt.Sprint(holders) != fmt.Sprint(pinners) {
			t.Fatalf("%s pinned by %v, holders %v", it, pinners, holders)
		}
	}
	if len(s.unpinViolations) > 0 {
		t.Fatalf("releases below R:\n%v", s.unpinViolations)
	}
}

// A member that leaves hands its items over before it lets go.
func TestLeaveHandsOver(t *testing.T) {
	cfg := DefaultConfig()
	s := newSim(t, 4, 2, cfg, 3)
	items := itemRange(0, 20)
	s.addItems(s.nodes[0], 0, 20)
	s.runUntil(5*time.Minute, "placement", func() bool { return s.placed(items, 2, true) && s.allOK() })
	for _, nd := range s.nodes {
		nd.origin = map[string]bool{}
	}
	leaver := s.nodes[2]
	if len(leaver.pinned) == 0 {
		t.Fatal("leaver holds nothing; pick another seed")
	}
	leaver.c.Leave()
	s.runUntil(3*time.Minute, "leaver released", leaver.c.Released)
	s.runUntil(time.Minute, "placement without the leaver", func() bool { return s.placed(items, 2, true) && s.allOK() })
	if len(leaver.pinned) != 0 {
		t.Fatal("leaver still holds items")
	}
	if len(s.unpinViolations) > 0 {
		t.Fatalf("releases below R: %v", s.unpinViolations)
	}
}

// Partition 4/3, write on both sides, heal: all 7 identical, state and
// heads, and the items placed.
func TestPartitionHeal(t *testing.T) {
	cfg := DefaultConfig()
	s := newSim(t, 7, 3, cfg, 11)
	creator, writer := s.nodes[0], s.nodes[5]
	bs, err := creator.c.Grant(writer.id, s.nodes[2].id)
	s.write(creator, bs, err)
	s.addItems(creator, 0, 10)
	s.runUntil(time.Minute, "converged", s.converged)

	for _, nd := range s.nodes[4:] {
		nd.group = 1
	}
	s.step(time.Second)
	s.addItems(creator, 10, 20)
	s.addItems(writer, 20, 30)
	s.addItems(s.nodes[2], 30, 35)
	rm, err := writer.c.Remove(itemCID(3))
	s.write(writer, rm, err)
	upd, err := creator.c.Add(AddItem{Cid: itemCID(3), Label: "updated concurrently"})
	s.write(creator, upd, err)
	for range 90 {
		s.step(time.Second)
	}
	if s.converged() {
		t.Fatal("sides converged while partitioned")
	}
	for _, nd := range s.nodes {
		nd.group = 0
	}
	// On reconnecting, members ask for heads at once.
	for _, nd := range s.nodes {
		s.publish(nd, nd.c.HeadsRequest())
	}
	took := s.runUntil(time.Minute, "converged after heal", s.converged)
	t.Logf("converged %v after heal", took)
	if took > 2*time.Second {
		t.Fatalf("convergence after heal took %v: it should not wait for a rebroadcast", took)
	}
	c := s.nodes[0].c
	if c.Len() != 35 || !c.Has(itemCID(3)) {
		t.Fatalf("%d items; item 3 present: %v (the concurrent update must survive the remove)", c.Len(), c.Has(itemCID(3)))
	}
	items := make([]cid.Cid, 0, 35)
	for _, it := range c.Items() {
		items = append(items, it.Cid)
	}
	s.runUntil(5*time.Minute, "placement after heal", func() bool { return s.placed(items, 3, true) && s.allOK() })
	if len(s.unpinViolations) > 0 {
		t.Fatalf("releases below R: %v", s.unpinViolations)
	}
}

// Deltas signed by a key that was never granted are rejected on every
// member, however they arrive.
func TestUngrantedKeyRejectedEverywhere(t *testing.T) {
	s := newSim(t, 7, 3, DefaultConfig(), 13)
	s.addItems(s.nodes[0], 0, 5)
	s.runUntil(time.Minute, "converged", s.converged)
	before := fingerprint(s.nodes[0].c)

	outsider, oid := testKey(t, 4242)
	heads := headsOf(s.nodes[0].c)
	evil := craft(t, outsider, s.desc.ID(), 1, heads, Op{Kind: OpAdd, Item: itemCID(99)},
		Op{Kind: OpRemove, Item: itemCID(0), Tags: []Tag{{Author: s.desc.Creator, Seq: 1, Index: 0}}})
	evil2 := craft(t, outsider, s.desc.ID(), 2, []Link{{Cid: evil.Cid(), Author: oid, Seq: 1}}, Op{Kind: OpGrant, Peer: oid})
	s.rogue.put(evil, evil2)
	ann := &Heads{Collection: s.desc.ID(), Heads: []Link{{Cid: evil2.Cid(), Author: oid, Seq: 2}}}
	// The outsider joins (a heartbeat makes anyone a member) and
	// announces on the topic.
	hb := &Heartbeat{Collection: s.desc.ID(), Time: uint64(s.now.UnixNano())}
	if err := hb.sign(outsider); err != nil {
		t.Fatal(err)
	}
	s.queue = append(s.queue, simMsg{from: -1, id: oid, data: hb.Encode()}, simMsg{from: -1, id: oid, data: ann.Encode()})
	for range 5 {
		s.step(time.Second)
	}
	for _, nd := range s.nodes {
		if got := fingerprint(nd.c); got != before {
			t.Fatalf("node %d changed state", nd.i)
		}
		st := nd.c.Stats()
		if st.Unauthorized != 1 || st.Rejected != 2 {
			t.Fatalf("node %d: stats %+v", nd.i, st)
		}
		if len(nd.c.Missing()) != 0 || nd.c.Status().Pending != 0 {
			t.Fatalf("node %d still waits", nd.i)
		}
	}
}

// The same partition with writers folding history into snapshots on both
// sides: the sides load each other's snapshots (a join of states) and
// converge, and what the store keeps stays bounded.
func TestPartitionHealWithSnapshots(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SnapshotThreshold = 20
	cfg.GCDelay = time.Minute
	s := newSim(t, 7, 3, cfg, 17)
	s.snaps = true
	creator, writer := s.nodes[0], s.nodes[5]
	bs, err := creator.c.Grant(writer.id)
	s.write(creator, bs, err)
	s.addItems(creator, 0, 30)
	s.runUntil(time.Minute, "converged", s.converged)
	for _, nd := range s.nodes[4:] {
		nd.group = 1
	}
	for i := range 60 {
		s.addItems(creator, 100+i, 101+i)
		s.addItems(writer, 200+i, 201+i)
		if i%3 == 0 {
			rm, err := writer.c.Remove(itemCID(i % 30))
			if err == nil {
				s.write(writer, rm, nil)
			}
		}
		s.step(time.Second)
	}
	if creator.c.Status().Snapshots == nil || writer.c.Status().Snapshots == nil {
		t.Fatal("no snapshots written")
	}
	for _, nd := range s.nodes {
		nd.group = 0
		s.publish(nd, nd.c.HeadsRequest())
	}
	took := s.runUntil(time.Minute, "converged after heal", s.converged)
	t.Logf("converged %v after heal; node 0 keeps %d snapshots, %d deltas", took,
		len(s.nodes[0].c.Status().Snapshots), s.nodes[0].c.Status().Deltas)
	for range 180 {
		s.step(time.Second)
	}
	if !s.converged() {
		t.Fatal("diverged later")
	}
	for _, nd := range s.nodes {
		st := nd.c.Status()
		if st.Deltas > cfg.SnapshotThreshold+5 || len(st.Snapshots) > 2 {
			t.Fatalf("node %d keeps %d deltas and %d snapshots", nd.i, st.Deltas, len(st.Snapshots))
		}
		if err := s.checkKept(nd); err != nil {
			t.Fatal(err)
		}
		s.gc(nd)
		if len(nd.blocks) != len(nd.c.Blocks()) {
			t.Fatalf("node %d stores %d blocks, %d live", nd.i, len(nd.blocks), len(nd.c.Blocks()))
		}
	}
}

// TestHeartbeatSenderSigned: with Config.SenderSigned the transport has
// verified that from signed the message, so a heartbeat's own signature is
// not checked again; the sender must still be the heartbeat's member, and
// replays and other collections are still refused.
func TestHeartbeatSenderSigned(t *testing.T) {
	cfg := fastConfig()
	cfg.SenderSigned = true
	s := newSim(t, 2, 1, cfg, 1)
	a, b := s.nodes[0], s.nodes[1]
	bid := b.c.Self()
	h, _ := DecodeHeartbeat(s.beat(b))
	h.Pinned = 99
	h.body = nil // the signature no longer matches: not checked
	if _, err := a.c.HandleMessage(bid, h.Encode()); err != nil {
		t.Fatalf("heartbeat from its member: %v", err)
	}
	if _, err := a.c.HandleMessage(bid, h.Encode()); !errors.Is(err, ErrStaleHeartbeat) {
		t.Fatalf("replay: %v", err)
	}
	if v, err := a.c.Authorize(peer.ID("someone-else"), s.beat(b)); v != Reject || !errors.Is(err, ErrSenderMismatch) {
		t.Fatalf("another sender: %v %v", v, err)
	}
	if _, err := a.c.HandleMessage(peer.ID("someone-else"), s.beat(b)); !errors.Is(err, ErrSenderMismatch) {
		t.Fatalf("another sender: %v", err)
	}
}
