package collection

import (
	"context"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// lockedStore is a BlockGetter safe for concurrent use.
type lockedStore struct {
	mu sync.Mutex
	m  mapGetter
}

func (s *lockedStore) put(bs ...blocks.Block) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.put(bs...)
}

func (s *lockedStore) GetMany(ctx context.Context, cids []cid.Cid) <-chan blocks.Block {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.GetMany(ctx, cids)
}

// Every method may be called from any goroutine (run with -race).
func TestConcurrentUse(t *testing.T) {
	ck, _ := testKey(t, 1)
	d := testDescriptor(t, ck, 2)
	w := newReplica(t, d, ck, fastConfig())
	k, _ := testKey(t, 2)
	r := newReplica(t, d, k, fastConfig())
	store := &lockedStore{m: mapGetter{}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	const writes = 200
	wg.Go(func() {
		for i := range writes {
			bs := mustAdd(t, w, addItems(i)...)
			store.put(bs...)
			if i%50 == 49 {
				snap, err := w.Snapshot()
				if err != nil {
					t.Error(err)
					return
				}
				store.put(snap...)
			}
			if _, err := r.HandleMessage(w.Self(), w.Heads()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r.Sync(ctx, store)
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		now := t0
		for ctx.Err() == nil {
			now = now.Add(time.Second)
			for _, c := range []*Collection{w, r} {
				c.Tick(now)
				for _, a := range c.Plan() {
					if a.Kind == ActionPin {
						c.PinDone(a.Item, nil)
					} else {
						c.UnpinDone(a.Item, nil)
					}
				}
				_ = c.Status()
				_ = c.Blocks()
				_ = c.TakeGarbage()
				_ = c.ShouldSnapshot()
			}
			hb, err := w.Heartbeat()
			if err != nil {
				t.Error(err)
				return
			}
			r.HandleMessage(w.Self(), hb)
			if rhb, err := r.Heartbeat(); err == nil {
				w.HandleMessage(r.Self(), rhb)
			}
			if reply, _ := w.HandleMessage(r.Self(), r.HeadsRequest()); reply.Answer {
				if a := w.TakeAnswer(); a != nil {
					r.HandleMessage(w.Self(), a)
				}
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		time.Sleep(5 * time.Millisecond)
		if w.Len() == writes && fingerprint(r) == fingerprint(w) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged: %s vs %s", shortFP(r), shortFP(w))
		}
	}
	cancel()
	wg.Wait()
}
