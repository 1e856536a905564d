package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/peer"
)

// rendezvous is the discovery gossipsub advertises topics and finds their
// peers through (the DHT's), with topics renamed by Config.Rendezvous:
// topics that are always joined together (a feed's weft topic and its
// IPNS topic) share one rendezvous, so a node that joins them provides
// one DHT record and walks towards one key instead of two. The first
// advertisement of a name is shared with every topic renamed to it while
// it is in flight and for half the TTL it returned; gossipsub advertises
// each topic again after its TTL, and one of them then renews it.
type rendezvous struct {
	d    discovery.Discovery
	name func(topic string) string

	mu  sync.Mutex
	ads map[string]*advert // by rendezvous name
}

// advert is one advertisement of a rendezvous name, shared.
type advert struct {
	done chan struct{} // closed when ttl and err are set
	at   time.Time
	ttl  time.Duration
	err  error
}

func newRendezvous(d discovery.Discovery, name func(string) string) discovery.Discovery {
	if name == nil {
		return d
	}
	return &rendezvous{d: d, name: name, ads: map[string]*advert{}}
}

// Advertise advertises topic's rendezvous name, or waits for an
// advertisement of it in flight or recent, and returns when to advertise
// again.
func (r *rendezvous) Advertise(ctx context.Context, topic string, opts ...discovery.Option) (time.Duration, error) {
	ns := r.name(topic)
	r.mu.Lock()
	a := r.ads[ns]
	if a != nil {
		select {
		case <-a.done:
			if a.err != nil || time.Since(a.at) >= a.ttl/2 {
				a = nil // failed or old: advertise again
			}
		default: // in flight: share it
		}
	}
	if a == nil {
		r.prune()
		a = &advert{done: make(chan struct{})}
		r.ads[ns] = a
		r.mu.Unlock()
		a.ttl, a.err = r.d.Advertise(ctx, ns, opts...)
		a.at = time.Now()
		close(a.done)
		return a.ttl, a.err
	}
	r.mu.Unlock()
	select {
	case <-a.done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if a.err != nil {
		return 0, a.err
	}
	return max(a.ttl-time.Since(a.at), time.Second), nil
}

// FindPeers finds the peers that advertised topic's rendezvous name.
func (r *rendezvous) FindPeers(ctx context.Context, topic string, opts ...discovery.Option) (<-chan peer.AddrInfo, error) {
	return r.d.FindPeers(ctx, r.name(topic), opts...)
}

// prune forgets advertisements that ended past their TTL (of topics left),
// so the map holds about the topics joined. r.mu is held.
func (r *rendezvous) prune() {
	for ns, a := range r.ads {
		select {
		case <-a.done:
			if time.Since(a.at) >= a.ttl {
				delete(r.ads, ns)
			}
		default:
		}
	}
}
