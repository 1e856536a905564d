package p2p

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/peer"
)

// countingDiscovery counts what it is asked, by namespace; Advertise takes
// a second and returns ttl (or fail, once).
type countingDiscovery struct {
	mu    sync.Mutex
	ads   map[string]int
	finds map[string]int
	ttl   time.Duration
	fail  bool
}

func (d *countingDiscovery) Advertise(ctx context.Context, ns string, _ ...discovery.Option) (time.Duration, error) {
	d.mu.Lock()
	d.ads[ns]++
	fail := d.fail
	d.fail = false
	d.mu.Unlock()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if fail {
		return 0, errors.New("no peers")
	}
	return d.ttl, nil
}

func (d *countingDiscovery) FindPeers(_ context.Context, ns string, _ ...discovery.Option) (<-chan peer.AddrInfo, error) {
	d.mu.Lock()
	d.finds[ns]++
	d.mu.Unlock()
	ch := make(chan peer.AddrInfo)
	close(ch)
	return ch, nil
}

func (d *countingDiscovery) counts(ns string) (ads, finds int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ads[ns], d.finds[ns]
}

func TestRendezvousSharesAdvertisements(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &countingDiscovery{ads: map[string]int{}, finds: map[string]int{}, ttl: time.Hour}
		// "a/x" and "b/x" share the rendezvous "x"; "c" is its own.
		r := newRendezvous(d, func(topic string) string {
			if _, rest, ok := strings.Cut(topic, "/"); ok {
				return rest
			}
			return topic
		})
		advertise := func(topic string) time.Duration {
			t.Helper()
			ttl, err := r.Advertise(t.Context(), topic)
			if err != nil {
				t.Fatalf("advertise %s: %v", topic, err)
			}
			return ttl
		}

		// Both topics joined at once: one advertisement, both get its TTL.
		var wg sync.WaitGroup
		for _, topic := range []string{"a/x", "b/x"} {
			wg.Go(func() {
				if ttl := advertise(topic); ttl != time.Hour {
					t.Errorf("%s: ttl %v, want 1h", topic, ttl)
				}
			})
		}
		wg.Wait()
		if ads, _ := d.counts("x"); ads != 1 {
			t.Fatalf("x advertised %d times, want 1", ads)
		}

		// Later, within half the TTL: shared, with the TTL left.
		time.Sleep(20 * time.Minute)
		if ttl := advertise("b/x"); ttl != 40*time.Minute {
			t.Fatalf("shared ttl %v, want what is left of the first (40m)", ttl)
		}
		if ads, _ := d.counts("x"); ads != 1 {
			t.Fatalf("x advertised %d times, want 1", ads)
		}
		// Past half the TTL: advertised again.
		time.Sleep(15 * time.Minute)
		advertise("a/x")
		if ads, _ := d.counts("x"); ads != 2 {
			t.Fatalf("x advertised %d times, want 2", ads)
		}

		// Another rendezvous is advertised on its own; a failure is not
		// shared with the next call.
		d.mu.Lock()
		d.fail = true
		d.mu.Unlock()
		if _, err := r.Advertise(t.Context(), "c"); err == nil {
			t.Fatal("a failed advertisement returned no error")
		}
		advertise("c")
		if ads, _ := d.counts("c"); ads != 2 {
			t.Fatalf("c advertised %d times, want 2", ads)
		}

		// Lookups go to the rendezvous name.
		for _, topic := range []string{"a/x", "b/x", "c"} {
			if _, err := r.FindPeers(t.Context(), topic); err != nil {
				t.Fatal(err)
			}
		}
		if _, finds := d.counts("x"); finds != 2 {
			t.Fatalf("x looked up %d times, want 2", finds)
		}
		if _, finds := d.counts("a/x"); finds != 0 {
			t.Fatal("a topic was looked up under its own name")
		}
	})
}

func TestRendezvousNilKeepsDiscovery(t *testing.T) {
	d := &countingDiscovery{ads: map[string]int{}, finds: map[string]int{}}
	if got := newRendezvous(d, nil); got != discovery.Discovery(d) {
		t.Fatalf("newRendezvous(d, nil) = %T, want d itself", got)
	}
}
