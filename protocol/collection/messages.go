package collection

import (
	"fmt"
	"sort"
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

// HandleMessage handles one message received on the collection's topic: a
// heartbeat, a heads announcement (whose unknown heads and snapshots
// become Missing) or a heads request. For a request from a member whose
// heads differ from the local ones it returns a reply for node/ to
// publish; otherwise reply is nil. Messages from the local member are
// ignored.
func (c *Collection) HandleMessage(data []byte) (reply []byte, err error) {
	if len(data) == 0 {
		return nil, malformed("empty message")
	}
	switch data[0] {
	case KindHeartbeat:
		h, err := DecodeHeartbeat(data)
		if err != nil {
			c.mu.Lock()
			c.stats.BadHeartbeats++
			c.mu.Unlock()
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.handleHeartbeat(h); err != nil {
			c.stats.BadHeartbeats++
			return nil, err
		}
		c.stats.Heartbeats++
		return nil, nil
	case KindHeads:
		h, err := DecodeHeads(data)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !h.Collection.Equals(c.id) {
			return nil, fmt.Errorf("heads: %w", ErrWrongCollection)
		}
		for _, s := range h.Snapshots {
			c.want(s)
		}
		for _, l := range h.Heads {
			if st, _ := c.linkStateOf(l); st == linkMissing {
				c.wantLink(l)
			}
		}
		// Recent lists are taken only as answers to a request of ours, so
		// that no one can make us fetch thousands of blocks unasked.
		if !c.requested.IsZero() && !c.now.After(c.requested.Add(c.cfg.PendingTTL)) {
			for _, r := range h.Recent {
				c.want(r)
			}
		}
		return nil, nil
	case KindHeadsRequest:
		q, err := DecodeHeadsRequest(data)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !q.Collection.Equals(c.id) {
			return nil, fmt.Errorf("heads request: %w", ErrWrongCollection)
		}
		if q.Digest == headsDigest(c.snapshotCIDs(), c.headLinks()) {
			return nil, nil
		}
		return c.headsReply(), nil
	}
	return nil, malformed("message kind 0x%02x is not a heartbeat or heads message", data[0])
}
