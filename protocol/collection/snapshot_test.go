package collection

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
)

// liveGetter serves only the blocks r keeps live, out of all.
func liveGetter(t testing.TB, r *Collection, all mapGetter) mapGetter {
	t.Helper()
	g := mapGetter{}
	for _, c := range r.Blocks() {
		b, ok := all[c.KeyString()]
		if !ok {
			t.Fatalf("live block %s unknown", c)
		}
		g.put(b)
	}
	return g
}

// join makes a new replica catch up with src the way a joining node
// does: heads request, reply, sync.
func join(t testing.TB, r, src *Collection, g BlockGetter) SyncResult {
	t.Helper()
	introduce(t, src, r)
	if reply := ask(t, src, r); reply != nil {
		if _, err := r.HandleMessage(src.Self(), reply); err != nil {
			t.Fatal(err)
		}
	}
	res, err := r.Sync(t.Context(), g)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// churn writes n random ops over a universe of items on r.
func churn(t testing.TB, rng *rand.Rand, r *Collection, n, universe int, all mapGetter) {
	t.Helper()
	for range n {
		all.put(randomOps(t, rng, r, universe)...)
	}
}

func TestSnapshotFoldsHistory(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	d, rs, gs := writerSet(t, 2, fastConfig())
	all := mapGetter{}
	all.put(gs...)
	a, b := rs[0], rs[1]
	churn(t, rng, a, 300, 60, all)
	feed(t, b, mapValues(all)...)
	churn(t, rng, b, 100, 60, all)
	feed(t, a, mapValues(all)...)
	want := fingerprint(a)

	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	all.put(snap...)
	if fingerprint(a) != want {
		t.Fatalf("snapshot changed the state:\n%s\n---\n%s", fingerprint(a), want)
	}
	if n, _ := a.StoreSize(); n != 0 {
		t.Fatalf("%d deltas kept after a snapshot of everything", n)
	}
	garbage := a.TakeGarbage()
	if len(garbage) < 400 {
		t.Fatalf("only %d blocks became garbage", len(garbage))
	}
	live := liveGetter(t, a, all)
	if len(live) != len(snap) {
		t.Fatalf("live blocks %d, snapshot blocks %d", len(live), len(snap))
	}

	// A new member loads the snapshot alone.
	k, _ := testKey(t, 77)
	f := newReplica(t, d, k, fastConfig())
	res := join(t, f, a, live)
	if fingerprint(f) != want || res.Rounds != 2 {
		t.Fatalf("rounds %d, state:\n%s\n---\n%s", res.Rounds, fingerprint(f), want)
	}

	// b writes concurrently with the snapshot (it has not seen it); its
	// deltas name parents that are folded away, and still apply on f.
	var fresh []blocks.Block
	for range 20 {
		bs := randomOps(t, rng, b, 60)
		all.put(bs...)
		fresh = append(fresh, bs...)
	}
	feed(t, f, fresh...)
	feed(t, a, fresh...)
	feed(t, b, snap...) // b loads the snapshot: a join of states
	if fingerprint(a) != fingerprint(b) || fingerprint(a) != fingerprint(f) {
		t.Fatalf("diverged after concurrent writes:\na %s\nb %s\nf %s", shortFP(a), shortFP(b), shortFP(f))
	}
	// and writes after it go everywhere
	more := mustAdd(t, b, addItems(500)...)
	feed(t, a, more...)
	feed(t, f, more...)
	if fingerprint(a) != fingerprint(b) || fingerprint(a) != fingerprint(f) || !f.Has(itemCID(500)) {
		t.Fatal("diverged after a write on top of the snapshot")
	}
}

func mapValues(m mapGetter) []blocks.Block {
	out := make([]blocks.Block, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	return out
}

// The store's size after a snapshot depends on the live items, not on how
// many adds and removes came before.
func TestSnapshotSizeIndependentOfHistory(t *testing.T) {
	sizes := map[int]int{}
	for _, history := range []int{200, 3000} {
		ck, _ := testKey(t, 1)
		c := newReplica(t, testDescriptor(t, ck, 2), ck, fastConfig())
		// history adds and removes over items 1000.., then the same 100 live
		// items 0..99.
		for i := range history / 2 {
			mustAdd(t, c, addItems(1000+i%50)...)
			if _, err := c.Remove(itemCID(1000 + i%50)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 100 {
			mustAdd(t, c, AddItem{Cid: itemCID(i), Label: "x"})
		}
		before, beforeBytes := c.StoreSize()
		if _, err := c.Snapshot(); err != nil {
			t.Fatal(err)
		}
		n, bytes := c.StoreSize()
		if n != 0 || c.Len() != 100 {
			t.Fatalf("history %d: %d deltas, %d items after snapshot", history, n, c.Len())
		}
		t.Logf("history %5d: %5d deltas, %7d bytes before; %d bytes after the snapshot", history, before, beforeBytes, bytes)
		sizes[history] = bytes
	}
	// Only the varint width of sequence numbers differs.
	if diff := sizes[3000] - sizes[200]; diff < 0 || diff > 100*2 {
		t.Fatalf("snapshot size depends on history: %v", sizes)
	}
}

func TestSnapshotByGrantedWriterAndForgeries(t *testing.T) {
	d, rs, gs := writerSet(t, 2, fastConfig())
	all := mapGetter{}
	all.put(gs...)
	w := rs[1]
	all.put(mustAdd(t, w, addItems(1, 2, 3)...)...)
	snap, err := w.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	all.put(snap...)
	// A fresh member knows only the creator's key (from the descriptor):
	// the grant proof inside the snapshot vouches for the writer.
	k, _ := testKey(t, 40)
	f := newReplica(t, d, k, fastConfig())
	join(t, f, w, liveGetter(t, w, all))
	if fingerprint(f) != fingerprint(w) || len(f.Writers()) != 2 {
		t.Fatalf("load writer's snapshot: %s vs %s", shortFP(f), shortFP(w))
	}

	s, err := DecodeSnapshot(snap[0].RawData())
	if err != nil {
		t.Fatal(err)
	}
	// An outsider re-signs the same snapshot.
	outsider, _ := testKey(t, 666)
	forged := *s
	forged.body = nil
	if err := forged.sign(outsider); err != nil {
		t.Fatal(err)
	}
	// The writer drops its grant proof.
	noProof := *s
	noProof.body, noProof.Grants = nil, nil
	wk, _ := testKey(t, 101)
	if err := noProof.sign(wk); err != nil {
		t.Fatal(err)
	}
	// A grant proof signed by someone else than the creator.
	badProof := *s
	badProof.body = nil
	fake := craft(t, outsider, d.ID(), 1, nil, Op{Kind: OpGrant, Peer: w.Self()})
	badProof.Grants = [][]byte{fake.RawData()}
	if err := badProof.sign(wk); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		s    *Snapshot
		want error
	}{
		"outsider":  {&forged, ErrUnauthorized},
		"no proof":  {&noProof, ErrBadSnapshot},
		"bad proof": {&badProof, ErrBadSnapshot},
	} {
		k, _ := testKey(t, 41)
		r := newReplica(t, d, k, fastConfig())
		feed(t, r, gs...)
		if _, err := r.AddBlock(newBlock(tc.s.Encode())); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	// A chunk that does not match the root.
	k2, _ := testKey(t, 42)
	r := newReplica(t, d, k2, fastConfig())
	feed(t, r, snap[0])
	ch, _ := DecodeChunk(snap[1].RawData())
	ch.Items = ch.Items[:1]
	res, err := r.AddBlock(newBlock(ch.Encode()))
	if err != nil || len(res.Loaded) != 0 || len(r.Missing()) != 1 {
		t.Fatalf("a stray chunk must neither load nor be wanted: %v %+v", err, res)
	}
}

// Writers that were apart each write a snapshot; replicas load both, in
// either order, and agree.
func TestConcurrentSnapshotsJoin(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	d, rs, gs := writerSet(t, 2, fastConfig())
	all := mapGetter{}
	all.put(gs...)
	a, b := rs[0], rs[1]
	churn(t, rng, a, 80, 40, all)
	feed(t, b, mapValues(all)...)
	churn(t, rng, a, 50, 40, all)
	churn(t, rng, b, 50, 40, all)
	sa, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var fps []string
	for i, order := range [][]blocks.Block{append(append([]blocks.Block{}, sa...), sb...), append(append([]blocks.Block{}, sb...), sa...)} {
		k, _ := testKey(t, int64(60+i))
		f := newReplica(t, d, k, fastConfig())
		feed(t, f, order...)
		fps = append(fps, fingerprint(f))
		if len(f.Status().Snapshots) != 2 {
			t.Fatalf("order %d: %d snapshots kept, want both", i, len(f.Status().Snapshots))
		}
	}
	feed(t, a, sb...)
	feed(t, b, sa...)
	if fps[0] != fps[1] || fps[0] != fingerprint(a) || fps[0] != fingerprint(b) {
		t.Fatalf("snapshot joins diverged:\n%s\n---\n%s\n---\n%s", fps[0], fps[1], fingerprint(a))
	}
	// A snapshot of the joined state supersedes both.
	s3, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	feed(t, b, s3...)
	if n := len(b.Status().Snapshots); n != 1 {
		t.Fatalf("%d snapshots kept after a superseding one", n)
	}
}

func TestGarbageWaitsForGCDelay(t *testing.T) {
	cfg := fastConfig()
	cfg.GCDelay = 5 * time.Minute
	ck, _ := testKey(t, 1)
	c := newReplica(t, testDescriptor(t, ck, 2), ck, cfg)
	for i := range 10 {
		mustAdd(t, c, addItems(i)...)
	}
	if _, err := c.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if g := c.TakeGarbage(); len(g) != 0 {
		t.Fatalf("garbage before GCDelay: %d", len(g))
	}
	if n := len(c.Blocks()); n != 12 { // 10 retiring deltas, root, chunk
		t.Fatalf("live blocks %d", n)
	}
	c.Tick(t0.Add(5 * time.Minute))
	if g := c.TakeGarbage(); len(g) != 10 {
		t.Fatalf("garbage after GCDelay: %d", len(g))
	}
	if n := len(c.Blocks()); n != 2 {
		t.Fatalf("live blocks %d", n)
	}
}

// A member joining a collection of 1,000 items with a long history is in
// sync in a few rounds and well within seconds.
func TestJoinLongHistoryFast(t *testing.T) {
	items, history, recent := 1000, 4000, 300
	if testing.Short() {
		history = 1500
	}
	rng := rand.New(rand.NewSource(9))
	ck, _ := testKey(t, 1)
	d := testDescriptor(t, ck, 3)
	c := newReplica(t, d, ck, fastConfig())
	all := mapGetter{}
	for i := 0; i < items; i += 100 {
		var batch []AddItem
		for j := i; j < i+100; j++ {
			batch = append(batch, AddItem{Cid: itemCID(j), Label: fmt.Sprint("file ", j)})
		}
		all.put(mustAdd(t, c, batch...)...)
	}
	for range history {
		i := rng.Intn(items)
		bs, err := c.Remove(itemCID(i))
		if err != nil {
			t.Fatal(err)
		}
		all.put(bs...)
		all.put(mustAdd(t, c, AddItem{Cid: itemCID(i), Replication: 1 + rng.Intn(3)})...)
	}
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	all.put(snap...)
	for range recent {
		all.put(mustAdd(t, c, AddItem{Cid: itemCID(rng.Intn(items)), Label: "recent"})...)
	}
	live := liveGetter(t, c, all)

	k, _ := testKey(t, 2)
	f := newReplica(t, d, k, fastConfig())
	start := time.Now()
	res := join(t, f, c, live)
	took := time.Since(start)
	t.Logf("joined %d items (%d deltas of history, %d after the snapshot) in %v, %d rounds, %d blocks",
		f.Len(), 2*history+items/100, recent, took, res.Rounds, res.Fetched)
	if fingerprint(f) != fingerprint(c) {
		t.Fatal("joiner not in sync")
	}
	if res.Rounds > 2 {
		t.Fatalf("%d rounds, want at most 2 (snapshot and recent deltas, then chunks)", res.Rounds)
	}
	if took > 5*time.Second {
		t.Fatalf("join took %v", took)
	}
}

// Writers exchange partial, reordered subsets of deltas and snapshots and
// write snapshots at random points. Replicas that receive everything in
// any order, or only a writer's live blocks at the end, hold exactly what
// a replica that applied the full history without any snapshot holds:
// the same items, heads and clock.
func TestSnapshotsMatchFullHistory(t *testing.T) {
	seeds := 10
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(100 + seed)))
			n := 2 + seed%3
			d, rs, gs := writerSet(t, n, fastConfig())
			all := mapGetter{}
			all.put(gs...)
			var deltas, everything []blocks.Block
			deltas = append(deltas, gs...)
			everything = append(everything, gs...)
			inbox := make([][]blocks.Block, n)
			for range 80 {
				w := rng.Intn(n)
				rng.Shuffle(len(inbox[w]), func(i, j int) { inbox[w][i], inbox[w][j] = inbox[w][j], inbox[w][i] })
				k := rng.Intn(len(inbox[w]) + 1)
				for _, b := range inbox[w][:k] {
					rs[w].AddBlock(b)
				}
				inbox[w] = inbox[w][k:]
				var bs []blocks.Block
				if rng.Intn(8) == 0 {
					snap, err := rs[w].Snapshot()
					if err != nil {
						t.Fatal(err)
					}
					bs = snap
				} else {
					bs = randomOps(t, rng, rs[w], 20)
					deltas = append(deltas, bs...)
				}
				all.put(bs...)
				everything = append(everything, bs...)
				for o := range rs {
					if o != w {
						inbox[o] = append(inbox[o], bs...)
					}
				}
			}
			k, _ := testKey(t, 900)
			ref := newReplica(t, d, k, fastConfig())
			rng.Shuffle(len(deltas), func(i, j int) { deltas[i], deltas[j] = deltas[j], deltas[i] })
			feed(t, ref, deltas...)
			want := fingerprint(ref)
			if ref.Status().Pending != 0 {
				t.Fatal("reference waits")
			}
			for w := range rs {
				feed(t, rs[w], everything...)
				if got := fingerprint(rs[w]); got != want {
					t.Fatalf("writer %d differs from the full history:\n%s\n---\n%s", w, got, want)
				}
			}
			for f := range 2 {
				k, _ := testKey(t, int64(901+f))
				r := newReplica(t, d, k, fastConfig())
				order := append([]blocks.Block(nil), everything...)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for _, b := range order {
					if _, err := r.AddBlock(b); err != nil {
						t.Fatal(err)
					}
				}
				if got := fingerprint(r); got != want {
					t.Fatalf("replica %d differs from the full history:\n%s\n---\n%s", f, got, want)
				}
			}
			// A joiner that gets only a writer's live blocks.
			k2, _ := testKey(t, 950)
			j := newReplica(t, d, k2, fastConfig())
			join(t, j, rs[0], liveGetter(t, rs[0], all))
			if got := fingerprint(j); got != want {
				t.Fatalf("joiner differs from the full history:\n%s\n---\n%s", got, want)
			}
		})
	}
}
