package p2p

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Lookup is one measured DHT lookup: what it found, in how many hops and
// how long.
type Lookup struct {
	// Found is whether the peer, or at least one provider, was found.
	Found bool
	// Local is whether this node answered from its own tables (a connected
	// peer or routing-table entry, a provider record it holds) with no
	// query whose answer was needed.
	Local bool
	// Hops is the length of the chain of queries that led to the answer:
	// a peer in this node's routing table is known after 0 hops, a peer
	// named in the answer of a peer known after h hops is known after h+1,
	// and the answer is known after the hops of the peer that gave it
	// plus one (find-peer: the first answer naming the target;
	// find-providers: the answer that held the first provider). 0 when
	// Local.
	Hops int
	// Queried is how many peers the lookup sent a query to.
	Queried int
	// Took is the time to the answer: the lookup's for find-peer, the
	// first provider's for find-providers.
	Took time.Duration
}

// hopTracker follows a lookup's query events and keeps how many hops
// each peer it heard of was known after.
type hopTracker struct {
	known   map[peer.ID]int // hops after which the peer was known
	queried int
	// answers are the peers that answered, in order, with when.
	answers []answer
}

type answer struct {
	from peer.ID
	at   time.Time
	hops int // of the answer: known[from]+1
	has  bool
}

// trackLookup returns a context that records the DHT's query events for
// a lookup run with it, and a function that ends the recording (cancels
// the context) and returns the tracker. target, when set, is the peer
// find-peer looks for.
func trackLookup(ctx context.Context, target peer.ID) (context.Context, func() *hopTracker) {
	ctx, cancel := context.WithCancel(ctx)
	ctx, events := routing.RegisterForQueryEvents(ctx)
	tr := &hopTracker{known: map[peer.ID]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events { // closed when ctx ends
			tr.add(ev, target)
		}
	}()
	return ctx, func() *hopTracker {
		cancel()
		<-done
		return tr
	}
}

func (t *hopTracker) add(ev *routing.QueryEvent, target peer.ID) {
	switch ev.Type {
	case routing.SendingQuery:
		t.queried++
		if _, ok := t.known[ev.ID]; !ok {
			t.known[ev.ID] = 0 // not named by an answer: from the routing table
		}
	case routing.PeerResponse:
		h := t.known[ev.ID] + 1
		has := false
		for _, ai := range ev.Responses {
			if old, ok := t.known[ai.ID]; !ok || h < old {
				t.known[ai.ID] = h
			}
			has = has || (target != "" && ai.ID == target)
		}
		t.answers = append(t.answers, answer{from: ev.ID, at: time.Now(), hops: h, has: has})
	}
}

// FindPeerMeasured looks id up in the DHT as FindPeer does and measures
// the lookup (see Lookup). A peer this node is connected to is found
// locally, in 0 hops, as the DHT's FindPeer finds it.
func (n *Network) FindPeerMeasured(ctx context.Context, id peer.ID) (Lookup, error) {
	start := time.Now()
	if n.Host.Network().Connectedness(id) == network.Connected {
		return Lookup{Found: true, Local: true}, nil
	}
	lctx, finish := trackLookup(ctx, id)
	ai, err := n.DHT.FindPeer(lctx, id)
	took := time.Since(start)
	tr := finish()
	out := Lookup{Found: err == nil && ai.ID == id, Queried: tr.queried, Took: took}
	if !out.Found {
		if err == nil || errors.Is(err, routing.ErrNotFound) {
			return out, nil
		}
		return out, fmt.Errorf("find peer %s: %w", id, err)
	}
	if h, ok := tr.known[id]; ok {
		out.Hops = h
	} else {
		out.Local = true // connected by the time the DHT looked
	}
	return out, nil
}

// answerSlack is how far apart in time an answer and the provider it
// carried may be seen: on a virtual clock not at all, on a real one the
// scheduling of two goroutines, far under a link's round trip.
const answerSlack = time.Millisecond

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// FindProvidersMeasured looks for providers of c in the DHT and measures
// the lookup (see Lookup). It walks the whole lookup (every provider it
// can find), so that every answer is reported, and takes the answer that
// held the first provider to be the one that came at the moment the
// first provider did (in a simulation, on a virtual clock, the same
// instant; on a real one the nearest).
func (n *Network) FindProvidersMeasured(ctx context.Context, c cid.Cid) (Lookup, int, error) {
	start := time.Now()
	lctx, finish := trackLookup(ctx, "")
	var first time.Time
	providers := 0
	for range n.DHT.FindProvidersAsync(lctx, c, 0) {
		if providers == 0 {
			first = time.Now()
		}
		providers++
	}
	tr := finish()
	out := Lookup{Found: providers > 0, Queried: tr.queried, Took: time.Since(start)}
	if !out.Found {
		if err := ctx.Err(); err != nil {
			return out, 0, fmt.Errorf("find providers of %s: %w", c, err)
		}
		return out, 0, nil
	}
	out.Took = first.Sub(start)
	// The answer nearest the first provider in time held it: the DHT
	// sends a provider on before it reports the answer, with no wait in
	// between. With no answer within answerSlack of it, the provider came
	// from this node's own records, before any answer could.
	var best *answer
	for i := range tr.answers {
		a := &tr.answers[i]
		if best == nil || absDur(a.at.Sub(first)) < absDur(best.at.Sub(first)) {
			best = a
		}
	}
	if best == nil || absDur(best.at.Sub(first)) > answerSlack {
		out.Local = true
	} else {
		out.Hops = best.hops
	}
	return out, providers, nil
}
