package collection

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// craft signs a delta by hand, for deltas the API would refuse to write.
func craft(t testing.TB, key crypto.PrivKey, coll cid.Cid, seq uint64, parents []Link, ops ...Op) blocks.Block {
	t.Helper()
	ps := append([]Link(nil), parents...)
	sortLinks(ps)
	d := &Delta{Collection: coll, Seq: seq, Parents: ps, Ops: ops}
	if err := d.Sign(key); err != nil {
		t.Fatal(err)
	}
	return newBlock(d.Encode())
}

func headsOf(c *Collection) []Link { return c.Status().Heads }

func TestAddRemoveUpdate(t *testing.T) {
	key, _ := testKey(t, 1)
	c := newReplica(t, testDescriptor(t, key, 2), key, fastConfig())
	mustAdd(t, c, AddItem{Cid: itemCID(1), Label: "one"}, AddItem{Cid: itemCID(2), Replication: 4})
	if c.Len() != 2 {
		t.Fatalf("len %d", c.Len())
	}
	mustAdd(t, c, AddItem{Cid: itemCID(1), Label: "uno", Replication: 1}) // update
	items := c.Items()
	var one Item
	for _, it := range items {
		if it.Cid.Equals(itemCID(1)) {
			one = it
		}
	}
	if one.Label != "uno" || one.Replication != 1 || one.Effective != 1 {
		t.Fatalf("update: %+v", one)
	}
	if _, err := c.Remove(itemCID(1)); err != nil {
		t.Fatal(err)
	}
	if c.Has(itemCID(1)) || !c.Has(itemCID(2)) {
		t.Fatal("remove")
	}
	if _, err := c.Remove(itemCID(1)); !errors.Is(err, ErrNoItem) {
		t.Fatalf("remove absent: %v", err)
	}
	for _, it := range c.Items() {
		if it.Cid.Equals(itemCID(2)) && it.Effective != 4 {
			t.Fatalf("item 2: %+v", it)
		}
	}
	if h := headsOf(c); len(h) != 1 || h[0].Seq != 3 {
		t.Fatalf("heads %+v", h)
	}
}

// Two replicas: one removes an item while the other, concurrently, adds it
// again. The add the remover had not seen survives (observed-remove).
func TestConcurrentAddWinsOverRemove(t *testing.T) {
	ka, _ := testKey(t, 1)
	kb, idb := testKey(t, 2)
	d := testDescriptor(t, ka, 2)
	a := newReplica(t, d, ka, fastConfig())
	b := newReplica(t, d, kb, fastConfig())
	g, err := a.Grant(idb)
	if err != nil {
		t.Fatal(err)
	}
	add := mustAdd(t, a, AddItem{Cid: itemCID(1), Label: "first"})
	feed(t, b, append(g, add...)...)

	rm, err := b.Remove(itemCID(1))
	if err != nil {
		t.Fatal(err)
	}
	readd := mustAdd(t, a, AddItem{Cid: itemCID(1), Label: "second"})
	feed(t, a, rm...)
	feed(t, b, readd...)
	if fingerprint(a) != fingerprint(b) {
		t.Fatalf("diverged:\n%s\n---\n%s", fingerprint(a), fingerprint(b))
	}
	if !a.Has(itemCID(1)) {
		t.Fatal("concurrent re-add lost to a remove that had not seen it")
	}
	if its := a.Items(); its[0].Label != "second" {
		t.Fatalf("label %q", its[0].Label)
	}
	if len(headsOf(a)) != 2 {
		t.Fatalf("want two concurrent heads, got %d", len(headsOf(a)))
	}
	// A remove that saw both adds removes the item everywhere.
	rm2, err := b.Remove(itemCID(1))
	if err != nil {
		t.Fatal(err)
	}
	feed(t, a, rm2...)
	if a.Has(itemCID(1)) || b.Has(itemCID(1)) || fingerprint(a) != fingerprint(b) {
		t.Fatal("remove after merge")
	}
}

// writerSet builds a creator and n-1 granted writers, all in sync.
func writerSet(t testing.TB, n int, cfg Config) (*Descriptor, []*Collection, []blocks.Block) {
	t.Helper()
	keys := make([]crypto.PrivKey, n)
	ids := make([]peer.ID, n)
	for i := range keys {
		keys[i], ids[i] = testKey(t, int64(100+i))
	}
	d := testDescriptor(t, keys[0], 3)
	rs := make([]*Collection, n)
	for i := range rs {
		rs[i] = newReplica(t, d, keys[i], cfg)
	}
	var all []blocks.Block
	if n > 1 {
		g, err := rs[0].Grant(ids[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, g...)
		for _, r := range rs[1:] {
			feed(t, r, g...)
		}
	}
	return d, rs, all
}

// randomOps makes a random write on r: add new items, update or remove
// present ones.
func randomOps(t testing.TB, rng *rand.Rand, r *Collection, universe int) []blocks.Block {
	t.Helper()
	switch rng.Intn(3) {
	case 0, 1:
		n := 1 + rng.Intn(3)
		var items []AddItem
		seen := map[int]bool{}
		for range n {
			i := rng.Intn(universe)
			if seen[i] {
				continue
			}
			seen[i] = true
			items = append(items, AddItem{Cid: itemCID(i), Replication: rng.Intn(4), Label: fmt.Sprintf("l%d", rng.Intn(5))})
		}
		return mustAdd(t, r, items...)
	default:
		its := r.Items()
		if len(its) == 0 {
			return nil
		}
		bs, err := r.Remove(its[rng.Intn(len(its))].Cid)
		if err != nil {
			t.Fatal(err)
		}
		return bs
	}
}

// Replicas write concurrently and exchange partial, reordered,
// duplicated subsets of deltas; then fresh replicas receive everything in
// random orders with duplicates. Everyone ends in the same state.
func TestConvergenceAnyDeliveryOrder(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(seed)))
			n := 3 + seed%5 // 3..7 writers
			d, rs, all := writerSet(t, n, fastConfig())
			inbox := make([][]blocks.Block, n)
			for range 60 {
				w := rng.Intn(n)
				// deliver a random part of the writer's inbox, in random order
				rng.Shuffle(len(inbox[w]), func(i, j int) { inbox[w][i], inbox[w][j] = inbox[w][j], inbox[w][i] })
				k := rng.Intn(len(inbox[w]) + 1)
				for _, b := range inbox[w][:k] {
					rs[w].AddBlock(b)
				}
				inbox[w] = inbox[w][k:]
				bs := randomOps(t, rng, rs[w], 25)
				all = append(all, bs...)
				for o := range rs {
					if o != w {
						inbox[o] = append(inbox[o], bs...)
						if rng.Intn(4) == 0 && len(bs) > 0 { // duplicate
							inbox[o] = append(inbox[o], bs[0])
						}
					}
				}
			}
			for w := range rs {
				for _, b := range all {
					if _, err := rs[w].AddBlock(b); err != nil {
						t.Fatalf("writer %d: %v", w, err)
					}
				}
			}
			want := fingerprint(rs[0])
			for w := range rs {
				if got := fingerprint(rs[w]); got != want {
					t.Fatalf("writer %d diverged:\n%s\n---\n%s", w, got, want)
				}
			}
			for f := range 3 {
				k, _ := testKey(t, int64(1000+f))
				fresh := newReplica(t, d, k, fastConfig())
				order := append([]blocks.Block(nil), all...)
				order = append(order, all[:len(all)/3]...)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				for _, b := range order {
					if _, err := fresh.AddBlock(b); err != nil {
						t.Fatal(err)
					}
				}
				if got := fingerprint(fresh); got != want {
					t.Fatalf("fresh replica %d diverged:\n%s\n---\n%s", f, got, want)
				}
				if len(fresh.Missing()) != 0 || fresh.Status().Pending != 0 {
					t.Fatal("fresh replica still waiting")
				}
			}
		})
	}
}

func TestUnauthorizedRejected(t *testing.T) {
	d, rs, all := writerSet(t, 3, fastConfig())
	outsider, outID := testKey(t, 666)
	all = append(all, mustAdd(t, rs[0], addItems(1)...)...)
	for _, r := range rs[1:] {
		feed(t, r, all...)
	}
	heads := headsOf(rs[0])
	evil := craft(t, outsider, d.ID(), 1, heads, Op{Kind: OpAdd, Item: itemCID(66)})
	evilChild := craft(t, outsider, d.ID(), 2, []Link{{Cid: evil.Cid(), Author: outID, Seq: 1}}, Op{Kind: OpRemove, Item: itemCID(1),
		Tags: []Tag{{Author: d.Creator, Seq: 2, Index: 0}}})
	// A writer cannot grant.
	wKey, _ := testKey(t, 101)
	wGrant := craft(t, wKey, d.ID(), 1, heads, Op{Kind: OpGrant, Peer: outID})

	k, _ := testKey(t, 999)
	fresh := newReplica(t, d, k, fastConfig())
	feed(t, fresh, all...)
	for i, r := range append(rs, fresh) {
		before := fingerprint(r)
		// the child first: it waits, then goes down with its parent
		if _, err := r.AddBlock(evilChild); err != nil {
			t.Fatalf("replica %d: child of an unknown parent should wait: %v", i, err)
		}
		if _, err := r.AddBlock(evil); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("replica %d: got %v, want ErrUnauthorized", i, err)
		}
		if _, err := r.AddBlock(evilChild); !errors.Is(err, ErrRejectedParent) {
			t.Fatalf("replica %d: child: got %v, want ErrRejectedParent", i, err)
		}
		if _, err := r.AddBlock(wGrant); !errors.Is(err, ErrGrantNotCreator) {
			t.Fatalf("replica %d: writer's grant: %v", i, err)
		}
		if fingerprint(r) != before || r.Has(itemCID(66)) {
			t.Fatalf("replica %d: state changed", i)
		}
		if st := r.Stats(); st.Unauthorized != 1 || st.Rejected != 3 {
			t.Fatalf("replica %d: stats %+v", i, st)
		}
		if r.Status().Pending != 0 {
			t.Fatalf("replica %d: rejected deltas still pending", i)
		}
	}
	if _, err := rs[1].Grant(outID); !errors.Is(err, ErrGrantNotCreator) {
		t.Fatalf("writer granted: %v", err)
	}
	k2, _ := testKey(t, 777)
	member := newReplica(t, d, k2, fastConfig())
	feed(t, member, all...)
	if _, err := member.Add(addItems(5)...); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("member wrote: %v", err)
	}
}

// Authorization is decided on the delta's causal past, not on what the
// receiving replica has applied: a granted writer's delta whose parents
// predate its grant is rejected everywhere, even where the grant is known.
func TestGrantMustBeInCausalPast(t *testing.T) {
	ck, _ := testKey(t, 1)
	wk, wid := testKey(t, 2)
	d := testDescriptor(t, ck, 2)
	c := newReplica(t, d, ck, fastConfig())
	first := mustAdd(t, c, addItems(1)...)
	early := headsOf(c)
	g, _ := c.Grant(wid)
	premature := craft(t, wk, d.ID(), 1, early, Op{Kind: OpAdd, Item: itemCID(2)})
	for _, grantFirst := range []bool{false, true} {
		k, _ := testKey(t, 50)
		r := newReplica(t, d, k, fastConfig())
		feed(t, r, first...)
		if grantFirst {
			feed(t, r, g...)
		}
		if _, err := r.AddBlock(premature); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("grant first %v: got %v", grantFirst, err)
		}
		feed(t, r, g...)
		if r.Has(itemCID(2)) {
			t.Fatal("premature delta applied")
		}
	}
	if _, err := c.AddBlock(premature); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("creator: %v", err)
	}
	w := newReplica(t, d, wk, fastConfig())
	feed(t, w, append(first, g...)...)
	ok := mustAdd(t, w, addItems(3)...)
	feed(t, c, ok...)
	if !c.Has(itemCID(3)) {
		t.Fatal("granted writer's delta not applied")
	}
}

func TestEquivocationAndBadLinks(t *testing.T) {
	ck, cid0 := testKey(t, 1)
	d := testDescriptor(t, ck, 2)
	c := newReplica(t, d, ck, fastConfig())
	base := mustAdd(t, c, addItems(1)...)
	heads := headsOf(c)
	x := craft(t, ck, d.ID(), 2, heads, Op{Kind: OpAdd, Item: itemCID(2)})
	y := craft(t, ck, d.ID(), 2, heads, Op{Kind: OpAdd, Item: itemCID(3)})
	k, _ := testKey(t, 9)
	r := newReplica(t, d, k, fastConfig())
	feed(t, r, base...)
	feed(t, r, x)
	if _, err := r.AddBlock(y); !errors.Is(err, ErrEquivocation) {
		t.Fatalf("got %v", err)
	}
	ev := r.Equivocations()
	if len(ev) != 1 || !ev[0].First.Equals(x.Cid()) || !ev[0].Second.Equals(y.Cid()) {
		t.Fatalf("evidence %+v", ev)
	}
	// A link that misstates its parent's (author, seq).
	lie := craft(t, ck, d.ID(), 3, []Link{{Cid: x.Cid(), Author: cid0, Seq: 1}}, Op{Kind: OpAdd, Item: itemCID(4)})
	if _, err := r.AddBlock(lie); !errors.Is(err, ErrBadParent) {
		t.Fatalf("lying link: %v", err)
	}
	// A seq that skips.
	skip := craft(t, ck, d.ID(), 5, []Link{{Cid: x.Cid(), Author: cid0, Seq: 2}}, Op{Kind: OpAdd, Item: itemCID(4)})
	if _, err := r.AddBlock(skip); !errors.Is(err, ErrBadSeq) {
		t.Fatalf("skipped seq: %v", err)
	}
	// A remove of an add it cannot have seen.
	unseen := craft(t, ck, d.ID(), 3, []Link{{Cid: x.Cid(), Author: cid0, Seq: 2}}, Op{Kind: OpRemove, Item: itemCID(9),
		Tags: []Tag{{Author: cid0, Seq: 7, Index: 0}}})
	if _, err := r.AddBlock(unseen); !errors.Is(err, ErrUnobservedRemove) {
		t.Fatalf("unobserved remove: %v", err)
	}
	// Another collection.
	d2 := testDescriptor(t, ck, 3)
	d2.Nonce = []byte("other")
	other := craft(t, ck, d2.ID(), 1, nil, Op{Kind: OpAdd, Item: itemCID(1)})
	if _, err := r.AddBlock(other); !errors.Is(err, ErrWrongCollection) {
		t.Fatalf("other collection: %v", err)
	}
	// A block whose CID is not its hash.
	forged, _ := blocks.NewBlockWithCid(x.RawData(), y.Cid())
	if _, err := r.AddBlock(forged); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("forged block: %v", err)
	}
}

func TestMissingParentsFetchedAtOnce(t *testing.T) {
	ck, _ := testKey(t, 1)
	d := testDescriptor(t, ck, 2)
	c := newReplica(t, d, ck, fastConfig())
	store := mapGetter{}
	for i := range 50 {
		store.put(mustAdd(t, c, addItems(i)...)...)
	}
	k, _ := testKey(t, 2)
	r := newReplica(t, d, k, fastConfig())
	// The join path: a heads request, answered with heads and the recent
	// deltas, then one sync.
	introduce(t, c, r)
	reply := ask(t, c, r)
	if reply == nil {
		t.Fatal("no answer")
	}
	if _, err := r.HandleMessage(c.Self(), reply); err != nil {
		t.Fatal(err)
	}
	if got := len(r.Missing()); got != 50 {
		t.Fatalf("missing %d, want all 50 at once", got)
	}
	res, err := r.Sync(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rounds != 1 || len(res.Applied) != 50 || fingerprint(r) != fingerprint(c) {
		t.Fatalf("rounds %d applied %d", res.Rounds, len(res.Applied))
	}
	// Same heads: no reply.
	if reply, _ := c.HandleMessage(r.Self(), r.HeadsRequest()); reply.Answer {
		t.Fatal("replied to a member with the same heads")
	}
	// A head no one has: Sync reports it.
	k3, _ := testKey(t, 3)
	r3 := newReplica(t, d, k3, fastConfig())
	introduce(t, c, r3)
	r3.HandleMessage(c.Self(), c.Heads())
	_, err = r3.Sync(t.Context(), mapGetter{})
	var inc *IncompleteError
	if !errors.As(err, &inc) || len(inc.Missing) != 1 || !errors.Is(err, ErrIncomplete) {
		t.Fatalf("got %v", err)
	}
}

func TestPendingExpires(t *testing.T) {
	ck, _ := testKey(t, 1)
	d := testDescriptor(t, ck, 2)
	c := newReplica(t, d, ck, fastConfig())
	a := mustAdd(t, c, addItems(1)...)
	b := mustAdd(t, c, addItems(2)...)
	k, _ := testKey(t, 2)
	r := newReplica(t, d, k, fastConfig())
	feed(t, r, b...)
	if len(r.Missing()) != 1 || r.Status().Pending != 1 {
		t.Fatal("child should wait for its parent")
	}
	r.Tick(t0.Add(DefaultConfig().PendingTTL + time.Second))
	if len(r.Missing()) != 0 || r.Status().Pending != 0 {
		t.Fatal("pending not expired")
	}
	feed(t, r, a...)
	feed(t, r, b...)
	if fingerprint(r) != fingerprint(c) {
		t.Fatal("not converged after expiry")
	}
}
