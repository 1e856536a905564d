package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dstest "github.com/ipfs/go-datastore/test"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// TestDatastoreConformance runs go-datastore's suite on both store kinds.
// The suite's query combinations (1,152 of them) each put, read, query and
// delete 4×ElemCount keys; at its default of 100 they took a minute and a
// half per store. ElemCount 20 is the suite's own floor, and what it uses
// under -race: every offset, limit, filter, order and prefix is still
// tried, each against empty data, one key and data it overruns. The two
// stores run in parallel.
func TestDatastoreConformance(t *testing.T) {
	dstest.ElemCount = 20
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"disk", Config{}},
		{"memory", Config{InMemory: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, tc.cfg)
			dstest.SubtestAll(t, s.Datastore())
		})
	}
}

func TestDatastoreIsolatedFromBlocksAndPins(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	b := rawBlock(t, rng, 100)
	putAll(t, s, b)
	if err := s.Pins().Add(ctx, b.Cid(), Direct, "x"); err != nil {
		t.Fatal(err)
	}
	ds := s.Datastore()
	if err := ds.Put(ctx, datastore.NewKey("/b/collide"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	res, err := ds.Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Key != "/b/collide" || string(entries[0].Value) != "v" {
		t.Fatalf("query saw %+v, want only /b/collide", entries)
	}
	if st := s.Stat(); st.Blocks != 1 || st.BlockBytes != 100 {
		t.Fatalf("Stat = %+v, want 1 block of 100 bytes", st)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := ds.Get(ctx, datastore.NewKey("/b/collide")); err != nil || string(v) != "v" {
		t.Fatalf("after GC: Get = %q, %v", v, err)
	}
	if du, err := datastore.DiskUsage(ctx, ds); err != nil || du == 0 {
		t.Fatalf("DiskUsage = %d, %v", du, err)
	}
}

func TestDatastoreQueryOrdersAndWindows(t *testing.T) {
	ctx := t.Context()
	ds := openStore(t, Config{InMemory: true}).Datastore()
	for _, k := range []string{"/a/1", "/a/2", "/a/3", "/a/4", "/ab/1", "/b/1"} {
		if err := ds.Put(ctx, datastore.NewKey(k), []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(q query.Query) string {
		t.Helper()
		res, err := ds.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		es, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, e := range es {
			if q.KeysOnly && e.Value != nil {
				t.Errorf("KeysOnly query returned a value for %s", e.Key)
			}
			ks = append(ks, e.Key)
		}
		return strings.Join(ks, " ")
	}
	for _, tc := range []struct {
		name string
		q    query.Query
		want string
	}{
		{"prefix", query.Query{Prefix: "/a"}, "/a/1 /a/2 /a/3 /a/4"},
		{"descending", query.Query{Prefix: "/a/", Orders: []query.Order{query.OrderByKeyDescending{}}}, "/a/4 /a/3 /a/2 /a/1"},
		{"offset limit", query.Query{Prefix: "/a", Offset: 1, Limit: 2}, "/a/2 /a/3"},
		{"descending offset limit", query.Query{Prefix: "/a", Offset: 1, Limit: 2, Orders: []query.Order{query.OrderByKeyDescending{}}}, "/a/3 /a/2"},
		{"value order", query.Query{KeysOnly: true, Orders: []query.Order{query.OrderByValueDescending{}}, Limit: 3}, "/b/1 /ab/1 /a/4"},
		{"filter keys only", query.Query{KeysOnly: true, Filters: []query.Filter{query.FilterValueCompare{Op: query.Equal, Value: []byte("v/a/2")}}}, "/a/2"},
		{"everything", query.Query{Prefix: "/"}, "/a/1 /a/2 /a/3 /a/4 /ab/1 /b/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keys(tc.q); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBlockstoreRoundtrip(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	bs := s.Blockstore()
	rng := rand.New(rand.NewPCG(3, 4))
	var total int64
	var stored []blocks.Block
	for _, size := range []int{0, 1, 127, 128, 1023, 1024, 1025, 16383, 16384, 256 << 10, 1<<20 + 1} {
		b := rawBlock(t, rng, size)
		if err := bs.Put(ctx, b); err != nil {
			t.Fatalf("Put %d bytes: %v", size, err)
		}
		if err := bs.Put(ctx, b); err != nil { // again: no-op
			t.Fatal(err)
		}
		total += int64(size)
		stored = append(stored, b)
	}
	check := func(t *testing.T, s *Store) {
		t.Helper()
		bs := s.Blockstore()
		for _, b := range stored {
			if ok, err := bs.Has(ctx, b.Cid()); err != nil || !ok {
				t.Fatalf("Has %s = %v, %v", b.Cid(), ok, err)
			}
			if n, err := bs.GetSize(ctx, b.Cid()); err != nil || n != len(b.RawData()) {
				t.Fatalf("GetSize = %d, %v; want %d", n, err, len(b.RawData()))
			}
			err := bs.(blockstore.Viewer).View(ctx, b.Cid(), func(v []byte) error {
				if !bytes.Equal(v, b.RawData()) {
					return errors.New("View: wrong data")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		mustHave(t, s, true, stored...)
		if st := s.Stat(); st.Blocks != int64(len(stored)) || st.BlockBytes != total {
			t.Fatalf("Stat = %+v, want %d blocks, %d bytes", st, len(stored), total)
		}
	}
	t.Run("fresh", func(t *testing.T) { check(t, s) })

	t.Run("CIDv0 and v1 share a block", func(t *testing.T) {
		nd := merkledag.NodeWithData([]byte("shared"))
		v0 := nd.Cid()
		v1 := cid.NewCidV1(cid.DagProtobuf, v0.Hash())
		putAll(t, s, nd)
		got, err := bs.Get(ctx, v1)
		if err != nil || !bytes.Equal(got.RawData(), nd.RawData()) || !got.Cid().Equals(v1) {
			t.Fatalf("Get v1 = %v, %v", got, err)
		}
		if err := bs.DeleteBlock(ctx, v1); err != nil {
			t.Fatal(err)
		}
		if ok, _ := bs.Has(ctx, v0); ok {
			t.Fatal("v0 still present after deleting v1")
		}
	})

	t.Run("identity CIDs are inline", func(t *testing.T) {
		h, _ := mh.Sum([]byte("inline"), mh.IDENTITY, -1)
		c := cid.NewCidV1(cid.Raw, h)
		if ok, err := bs.Has(ctx, c); err != nil || !ok {
			t.Fatalf("Has identity = %v, %v", ok, err)
		}
		b, err := bs.Get(ctx, c)
		if err != nil || string(b.RawData()) != "inline" {
			t.Fatalf("Get identity = %v, %v", b, err)
		}
	})

	t.Run("missing", func(t *testing.T) {
		missing := rawBlock(t, rng, 10)
		if _, err := bs.Get(ctx, missing.Cid()); !ipld.IsNotFound(err) {
			t.Fatalf("Get missing: %v, want ipld.ErrNotFound", err)
		}
		if n, err := bs.GetSize(ctx, missing.Cid()); !ipld.IsNotFound(err) || n != -1 {
			t.Fatalf("GetSize missing: %d, %v", n, err)
		}
		if err := bs.DeleteBlock(ctx, missing.Cid()); err != nil {
			t.Fatalf("DeleteBlock missing: %v", err)
		}
	})

	t.Run("AllKeysChan", func(t *testing.T) {
		ch, err := bs.AllKeysChan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for c := range ch {
			seen[string(c.Hash())] = true
		}
		for _, b := range stored {
			if !seen[string(b.Cid().Hash())] {
				t.Fatalf("AllKeysChan missed %s", b.Cid())
			}
		}
		if len(seen) != len(stored) {
			t.Fatalf("AllKeysChan listed %d keys, want %d", len(seen), len(stored))
		}
	})

	t.Run("after clean reopen", func(t *testing.T) { check(t, reopen(t, s)) })
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Path: dir})
	_, err := Open(Config{Path: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open = %v, want ErrLocked naming the path", err)
	}
	if _, err := Open(Config{}); err == nil {
		t.Fatal("Open without a path succeeded")
	}
	if _, err := Open(Config{Path: t.TempDir(), MaxBytes: -1}); err == nil {
		t.Fatal("Open with a negative limit succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Blockstore().Has(t.Context(), rawBlockOf(t, nil).Cid()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Has after Close = %v, want ErrClosed", err)
	}
	s2, err := Open(Config{Path: dir}) // the lock is free again
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestStoreFull(t *testing.T) {
	ctx := t.Context()
	const limit = 1 << 20
	s := openStore(t, Config{MaxBytes: limit})
	rng := rand.New(rand.NewPCG(5, 6))
	first := rawBlock(t, rng, 600<<10)
	putAll(t, s, first)

	second, third := rawBlock(t, rng, 300<<10), rawBlock(t, rng, 300<<10)
	err := s.Blockstore().PutMany(ctx, []blocks.Block{second, third})
	if !errors.Is(err, ErrStoreFull) {
		t.Fatalf("PutMany past the limit = %v, want ErrStoreFull", err)
	}
	for _, want := range []string{"store full", "614400 bytes used of limit 1048576", "weft gc"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	mustHave(t, s, true, first)
	mustHave(t, s, false, second, third) // all or nothing
	if err := s.Blockstore().Put(ctx, first); err != nil {
		t.Fatalf("re-putting a stored block on a full store: %v", err)
	}
	if st := s.Stat(); st.BlockBytes != 600<<10 || st.MaxBytes != limit {
		t.Fatalf("Stat = %+v", st)
	}
	putAll(t, s, second) // fits
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	putAll(t, s, third) // fits again after GC freed the others
	if st := s.Stat(); st.BlockBytes != 300<<10 {
		t.Fatalf("Stat after GC and put = %+v", st)
	}
}

func TestPinsPersist(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	rng := rand.New(rand.NewPCG(7, 8))
	d := makeDAG(t, rng, 5, 1000)
	lone := rawBlock(t, rng, 10)
	putAll(t, s, append(d.all(), lone)...)
	pins := s.Pins()
	if err := pins.Add(ctx, d.root.Cid(), Recursive, "my dag"); err != nil {
		t.Fatal(err)
	}
	if err := pins.Add(ctx, lone.Cid(), Direct, ""); err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)
	pins = s.Pins()
	list, err := pins.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Pin{
		d.root.Cid().KeyString(): {d.root.Cid(), Recursive, "my dag"},
		lone.Cid().KeyString():   {lone.Cid(), Direct, ""},
	}
	if len(list) != len(want) {
		t.Fatalf("List = %v", list)
	}
	for _, p := range list {
		if w := want[p.Cid.KeyString()]; !w.Cid.Equals(p.Cid) || w.Mode != p.Mode || w.Name != p.Name {
			t.Fatalf("List has %+v, want %+v", p, w)
		}
	}
	if ok, err := pins.IsPinned(ctx, d.mid.Cid()); err != nil || ok {
		t.Fatalf("IsPinned(mid) = %v, %v; want false (no pin of its own)", ok, err)
	}
	if err := pins.Remove(ctx, lone.Cid()); err != nil {
		t.Fatal(err)
	}
	if err := pins.Remove(ctx, lone.Cid()); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("second Remove = %v, want ErrNotPinned", err)
	}
	if _, err := pins.Get(ctx, lone.Cid()); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("Get removed pin = %v", err)
	}

	// A recursive pin needs the whole DAG.
	incomplete := makeDAG(t, rng, 3, 100)
	putAll(t, s, incomplete.root, incomplete.mid, incomplete.leaves[0])
	err = pins.Add(ctx, incomplete.root.Cid(), Recursive, "")
	var nf ipld.ErrNotFound
	if !errors.As(err, &nf) {
		t.Fatalf("recursive pin of incomplete DAG = %v, want ipld.ErrNotFound", err)
	}
	if ok, _ := pins.IsPinned(ctx, incomplete.root.Cid()); ok {
		t.Fatal("incomplete DAG got pinned")
	}
	if err := pins.Add(ctx, incomplete.root.Cid(), Direct, ""); err != nil {
		t.Fatalf("direct pin of the root alone: %v", err)
	}
}

// TestCloseDoesNotWaitForIdleReaders closes a store while a query and a
// key listing are open and unread: Close must end them, not hang.
func TestCloseDoesNotWaitForIdleReaders(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	for i := range 300 {
		if err := s.Datastore().Put(ctx, datastore.NewKey(strings.Repeat("k", i%7+1)+string(rune('a'+i%26))+strconv.Itoa(i)), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	putAll(t, s, distinctBlocks(t, 31, 200, 100)...)
	res, err := s.Datastore().Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	<-res.Next() // started, then left unread
	keys, err := s.Blockstore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-keys
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res.Close()
	for range keys { // closed by the store's Close
	}
}
