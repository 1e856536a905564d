package collection

import (
	"fmt"
	"sort"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Heads returns the encoded Heads message announcing the replica's
// snapshots and heads, for node/ to publish when Result.HeadsChanged and
// every RebroadcastInterval.
func (c *Collection) Heads() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := Heads{Collection: c.id, Snapshots: c.snapshotCIDs(), Heads: c.headLinks()}
	return h.Encode()
}

// HeadsRequest returns the encoded request node/ publishes when it joins
// the topic or reconnects, so members answer with their heads at once.
// For PendingTTL after it, the Recent lists of Heads messages are fetched;
// otherwise only their heads and snapshots.
func (c *Collection) HeadsRequest() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requested = c.now
	q := HeadsRequest{Collection: c.id, Digest: headsDigest(c.snapshotCIDs(), c.headLinks())}
	return q.Encode()
}

// headsReply is a Heads message with Recent: every delta kept after the
// snapshots (the newest MaxRecent of them), so the requester fetches them
// in one round.
func (c *Collection) headsReply() []byte {
	h := Heads{Collection: c.id, Snapshots: c.snapshotCIDs(), Heads: c.headLinks()}
	recs := make([]*deltaRec, 0, len(c.deltas))
	for _, r := range c.deltas {
		recs = append(recs, r)
	}
	if len(recs) > MaxRecent {
		// The newest: greatest total clock first.
		sum := func(r *deltaRec) (s uint64) {
			for _, v := range r.vv {
				s += v
			}
			return s
		}
		sort.Slice(recs, func(i, j int) bool { return sum(recs[i]) > sum(recs[j]) })
		recs = recs[:MaxRecent]
	}
	for _, r := range recs {
		h.Recent = append(h.Recent, r.c)
	}
	sort.Slice(h.Recent, func(i, j int) bool { return cidLess(h.Recent[i], h.Recent[j]) })
	return h.Encode()
}

// HandleMessage handles one message received on the collection's topic
// from from, the gossip sender's verified identity: a heartbeat, a heads
// announcement (whose unknown heads and snapshots become Missing, as the
// sender's claims) or a heads request. Heads messages and requests from
// senders that are not members are refused (ErrNotMember); see auth.go.
// For a request from a member whose heads differ from the local ones it
// may schedule an answer: the Reply says when to call TakeAnswer.
// Messages from the local member are ignored.
func (c *Collection) HandleMessage(from peer.ID, data []byte) (Reply, error) {
	if len(data) == 0 {
		return Reply{}, malformed("empty message")
	}
	if from == c.self {
		return Reply{}, nil
	}
	switch data[0] {
	case KindHeartbeat:
		h, err := DecodeHeartbeat(data)
		if err != nil {
			c.mu.Lock()
			c.stats.BadHeartbeats++
			c.mu.Unlock()
			return Reply{}, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !h.Collection.Equals(c.id) {
			c.stats.BadHeartbeats++
			return Reply{}, fmt.Errorf("heartbeat: %w", ErrWrongCollection)
		}
		if h.Member != from {
			c.stats.BadHeartbeats++
			return Reply{}, fmt.Errorf("heartbeat of %s from %s: %w", h.Member, from, ErrSenderMismatch)
		}
		return Reply{}, c.takeHeartbeat(h)
	case KindHeads:
		h, err := DecodeHeads(data)
		if err != nil {
			return Reply{}, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !h.Collection.Equals(c.id) {
			return Reply{}, fmt.Errorf("heads: %w", ErrWrongCollection)
		}
		if !c.isMember(from) {
			c.strangerVerdict(from, h)
			return Reply{}, fmt.Errorf("heads from %s: %w", from, ErrNotMember)
		}
		c.takeHeads(from, h)
		return Reply{}, nil
	case KindHeadsRequest:
		q, err := DecodeHeadsRequest(data)
		if err != nil {
			return Reply{}, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !q.Collection.Equals(c.id) {
			return Reply{}, fmt.Errorf("heads request: %w", ErrWrongCollection)
		}
		if !c.isMember(from) {
			c.strangerVerdict(from, nil)
			return Reply{}, fmt.Errorf("heads request from %s: %w", from, ErrNotMember)
		}
		return c.takeRequest(from, q)
	}
	return Reply{}, malformed("message kind 0x%02x is not a heartbeat or heads message", data[0])
}
