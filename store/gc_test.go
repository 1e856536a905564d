package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-datastore"
)

func TestGCKeepsWhatIsReferenced(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"disk", Config{}},
		{"memory", Config{InMemory: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s := openStore(t, tc.cfg)
			rng := rand.New(rand.NewPCG(11, 12))
			recursive := makeDAG(t, rng, 4, 2000)
			direct := makeDAG(t, rng, 3, 2000)
			inSession := makeDAG(t, rng, 3, 2000)
			closedSession := makeDAG(t, rng, 3, 2000)
			garbage := makeDAG(t, rng, 3, 2000)
			putAll(t, s, recursive.all()...)
			putAll(t, s, direct.all()...)
			putAll(t, s, garbage.all()...)
			pins := s.Pins()
			if err := pins.Add(ctx, recursive.root.Cid(), Recursive, ""); err != nil {
				t.Fatal(err)
			}
			if err := pins.Add(ctx, direct.root.Cid(), Direct, ""); err != nil {
				t.Fatal(err)
			}
			open := s.NewSession()
			defer open.Close()
			if err := open.Blockstore().PutMany(ctx, inSession.all()); err != nil {
				t.Fatal(err)
			}
			closed := s.NewSession()
			if err := closed.Blockstore().PutMany(ctx, closedSession.all()); err != nil {
				t.Fatal(err)
			}
			closed.Close()
			// A block held before it exists is protected once written.
			later := rawBlock(t, rng, 500)
			open.Hold(later.Cid())
			putAll(t, s, later)
			ds := s.Datastore()
			if err := ds.Put(ctx, datastore.NewKey("/dht/record"), []byte("r")); err != nil {
				t.Fatal(err)
			}

			before := s.Stat()
			res, err := s.GC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustHave(t, s, true, recursive.all()...)
			mustHave(t, s, true, direct.root)
			mustHave(t, s, false, direct.mid) // a direct pin keeps its block only
			mustHave(t, s, false, direct.leaves...)
			mustHave(t, s, true, inSession.all()...)
			mustHave(t, s, true, later)
			mustHave(t, s, false, closedSession.all()...)
			mustHave(t, s, false, garbage.all()...)
			if ok, _ := ds.Has(ctx, datastore.NewKey("/dht/record")); !ok {
				t.Fatal("GC deleted a datastore key")
			}
			wantFreed := int64(len(direct.all()) - 1 + len(closedSession.all()) + len(garbage.all()))
			if res.BlocksFreed != wantFreed || res.LiveBlocks != int64(len(recursive.all())+1) {
				t.Fatalf("GCResult = %+v, want %d freed, %d live", res, wantFreed, len(recursive.all())+1)
			}
			after := s.Stat()
			if after.Blocks != before.Blocks-wantFreed || after.BlockBytes != before.BlockBytes-res.BytesFreed {
				t.Fatalf("Stat %+v -> %+v after freeing %d blocks, %d bytes", before, after, wantFreed, res.BytesFreed)
			}

			// Once the session closes, its blocks go too.
			open.Close()
			if _, err := s.GC(ctx); err != nil {
				t.Fatal(err)
			}
			mustHave(t, s, false, inSession.all()...)
			mustHave(t, s, false, later)
			mustHave(t, s, true, recursive.all()...)
		})
	}
}

// TestGCConcurrent runs GCs back to back while writers add DAGs through
// sessions and pin them (some over blocks that are garbage being collected
// at that moment), unpin some, and a reader reads the pinned ones. Nothing
// pinned may ever be unreadable, before or after.
func TestGCConcurrent(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	const writers, minDAGs, minGCs = 3, 8, 4
	var (
		mu        sync.Mutex
		pinned    = map[string]dag{} // by root key
		stop      atomic.Bool
		gcCount   atomic.Int64
		gcStopped atomic.Bool
		errc      = make(chan error, writers+2)
	)
	// Garbage that the writers will add again: their dedup path must not
	// lose blocks that GC is deleting at the same moment.
	dags := make([][]dag, writers)
	for w := range dags {
		rng := rand.New(rand.NewPCG(13, uint64(w)))
		for i := range minDAGs {
			d := makeDAG(t, rng, 4, 4000)
			dags[w] = append(dags[w], d)
			if i%2 == 0 {
				putAll(t, s, d.all()...)
			}
		}
	}

	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(15, uint64(w)))
			var mine []dag
			// Go on until enough GCs overlapped the writes, but not past
			// the GC loop's end (it stops on error) nor without bound.
			for i := 0; i < minDAGs || gcCount.Load() < minGCs && !gcStopped.Load() && i < 500; i++ {
				var d dag
				if i < len(dags[w]) {
					d = dags[w][i]
				} else {
					d = makeDAG(t, rng, 4, 4000)
				}
				if err := addAndPin(ctx, s, d); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				pinned[d.root.Cid().KeyString()] = d
				mu.Unlock()
				mine = append(mine, d)
				if i%3 == 2 { // unpin the oldest: pinned, then garbage
					victim := mine[0]
					mine = mine[1:]
					mu.Lock()
					delete(pinned, victim.root.Cid().KeyString())
					mu.Unlock()
					if err := s.Pins().Remove(ctx, victim.root.Cid()); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for !stop.Load() {
			mu.Lock()
			var snapshot []dag
			for _, d := range pinned {
				snapshot = append(snapshot, d)
			}
			mu.Unlock()
			for _, d := range snapshot {
				for _, b := range d.all() {
					if _, err := s.Blockstore().Get(ctx, b.Cid()); err != nil {
						if ok, _ := s.Pins().IsPinned(ctx, d.root.Cid()); ok {
							errc <- fmt.Errorf("pinned block %s unreadable: %w", b.Cid(), err)
							return
						}
					}
				}
			}
		}
	}()
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		defer gcStopped.Store(true)
		for !stop.Load() {
			if _, err := s.GC(ctx); err != nil {
				errc <- err
				return
			}
			gcCount.Add(1)
		}
	}()
	writersWG.Wait()
	stop.Store(true)
	<-readerDone
	<-gcDone
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	var all []blocks.Block
	for _, d := range pinned {
		all = append(all, d.all()...)
	}
	mustHave(t, s, true, all...)
	list, err := s.Pins().List(ctx)
	if err != nil || len(list) != len(pinned) {
		t.Fatalf("List: %d pins, %v; want %d", len(list), err, len(pinned))
	}
	if st := s.Stat(); st.Blocks != int64(len(all)) {
		t.Fatalf("Stat counts %d blocks, %d are pinned and nothing else is held", st.Blocks, len(all))
	}
	t.Logf("%d GCs ran beside the writers; %d DAGs pinned at the end", gcCount.Load(), len(pinned))
}

// addAndPin writes d as an add does, one block at a time through a
// session, then pins it and closes the session.
func addAndPin(ctx context.Context, s *Store, d dag) error {
	ss := s.NewSession()
	defer ss.Close()
	bs := ss.Blockstore()
	for _, b := range d.all() {
		if err := bs.Put(ctx, b); err != nil {
			return err
		}
	}
	if err := s.Pins().Add(ctx, d.root.Cid(), Recursive, ""); err != nil {
		return fmt.Errorf("pin after put: %w", err)
	}
	return nil
}

// TestGCRacesAfterMark acts between GC's mark and its sweep, where the
// snapshot and the pins GC read are already stale, and checks that GC
// keeps what became referenced meanwhile.
func TestGCRacesAfterMark(t *testing.T) {
	for _, tc := range []struct {
		name string
		// act runs after the mark phase; it returns the blocks that must
		// survive the GC and those that must not.
		act func(t *testing.T, s *Store, garbage dag) (keep, drop []blocks.Block)
	}{
		{"session re-adds garbage blocks", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			ss := s.NewSession() // opened during GC
			t.Cleanup(ss.Close)
			if err := ss.Blockstore().PutMany(t.Context(), g.all()); err != nil {
				t.Fatal(err)
			}
			return g.all(), nil
		}},
		{"pin of garbage, session closed", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			if err := addAndPin(t.Context(), s, g); err != nil {
				t.Fatal(err)
			}
			return g.all(), nil
		}},
		{"pin of garbage without session", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			if err := s.Pins().Add(t.Context(), g.root.Cid(), Recursive, ""); err != nil {
				t.Fatal(err)
			}
			return g.all(), nil
		}},
		{"direct pin keeps only its block", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			if err := s.Pins().Add(t.Context(), g.mid.Cid(), Direct, ""); err != nil {
				t.Fatal(err)
			}
			return []blocks.Block{g.mid}, append([]blocks.Block{g.root}, g.leaves...)
		}},
		{"deleted and written again", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			ctx := t.Context()
			if err := s.Blockstore().DeleteBlock(ctx, g.root.Cid()); err != nil {
				t.Fatal(err)
			}
			if err := s.Blockstore().Put(ctx, g.root); err != nil {
				t.Fatal(err)
			}
			return []blocks.Block{g.root}, g.leaves
		}},
		{"held before written", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			ss := s.NewSession()
			t.Cleanup(ss.Close)
			ss.Hold(g.mid.Cid())
			return []blocks.Block{g.mid}, g.leaves
		}},
		{"session lookup of garbage", func(t *testing.T, s *Store, g dag) ([]blocks.Block, []blocks.Block) {
			ss := s.NewSession()
			t.Cleanup(ss.Close)
			if ok, err := ss.Blockstore().Has(t.Context(), g.leaves[0].Cid()); err != nil || !ok {
				t.Fatalf("Has = %v, %v", ok, err)
			}
			return g.leaves[:1], g.leaves[1:]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Config{})
			g := makeDAG(t, rand.New(rand.NewPCG(41, 42)), 4, 3000)
			putAll(t, s, g.all()...)
			var keep, drop []blocks.Block
			s.afterMark = func() { keep, drop = tc.act(t, s, g) }
			if _, err := s.GC(t.Context()); err != nil {
				t.Fatal(err)
			}
			mustHave(t, s, true, keep...)
			mustHave(t, s, false, drop...)
			if st := s.Stat(); st.Blocks != int64(len(keep)) {
				t.Fatalf("Stat counts %d blocks, want %d", st.Blocks, len(keep))
			}
		})
	}
}

func TestGCExclusiveAndStoppedByClose(t *testing.T) {
	s := openStore(t, Config{})
	putAll(t, s, distinctBlocks(t, 51, 10, 100)...)
	var second error
	s.afterMark = func() { _, second = s.GC(t.Context()) }
	if _, err := s.GC(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(second, ErrGCRunning) {
		t.Fatalf("GC during GC = %v, want ErrGCRunning", second)
	}

	putAll(t, s, distinctBlocks(t, 52, 10, 100)...)
	closed := make(chan error, 1)
	s.afterMark = func() {
		go func() { closed <- s.Close() }()
		<-s.ctx.Done() // Close has begun: it cancels, then waits for us
	}
	if _, err := s.GC(t.Context()); err == nil {
		t.Fatal("GC went on after Close began")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("GC after Close = %v, want ErrClosed", err)
	}
}
