package collection

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The direct heads exchange.
//
// A member that joins (or meets a member again after a silence) needs the
// heads of the others. Asking on the topic costs every member a delivery
// of the request and of every answer: at a thousand members, with a
// thousand joining, that was millions of deliveries, each checked against
// its signature. So a member asks a few peers directly instead, on a
// stream of HeadsProtocolID: it sends its HeadsRequest, and the peer
// answers the requester alone with a DirectAnswer, its last heartbeat and
// its heads (with Recent when the digests differ). The heartbeat makes the
// answerer a member at once, so its heads are taken now rather than held
// until its heartbeat comes over the topic.
//
// A direct answer costs the answerer one message to one peer, so anyone
// may ask, members or not; a peer is answered at most once per
// AnswerInterval (RateLimited otherwise), and at most maxDirectAnswered
// peers per interval.

// HeadsProtocolID is the libp2p protocol of the direct heads exchange: the
// requester writes a HeadsRequest and closes its side; the answerer writes
// a DirectAnswer and closes the stream.
const HeadsProtocolID = "/weft/collection/heads/1.0.0"

// MaxDirectAnswerSize bounds an encoded DirectAnswer: a heartbeat and a
// heads message, each at most MaxMessageSize, and their framing.
const MaxDirectAnswerSize = 2*MaxMessageSize + 32

// MaxHeadsRequestSize bounds an encoded HeadsRequest (a CID and a digest).
const MaxHeadsRequestSize = 2 + 1 + maxCIDLen + 32

// maxDirectAnswered bounds the requesters remembered for rate limiting; past
// it, requests from new peers are refused until the interval passes.
const maxDirectAnswered = 4096

// DirectAnswer is the answer to a HeadsRequest on a direct stream.
//
// Wire form (KindDirectAnswer): kind, version, heartbeat bytes (an encoded
// Heartbeat of the answerer, or empty if it has not sent one yet), heads
// bytes (an encoded Heads).
type DirectAnswer struct {
	Heartbeat []byte
	Heads     []byte
}

// Encode returns the canonical encoding.
func (a *DirectAnswer) Encode() []byte {
	var e encoder
	e.header(KindDirectAnswer)
	e.bytes(a.Heartbeat)
	e.bytes(a.Heads)
	return e.b
}

// DecodeDirectAnswer decodes an encoded direct answer. The heartbeat and
// heads inside are decoded (and checked) by TakeDirectAnswer.
func DecodeDirectAnswer(data []byte) (*DirectAnswer, error) {
	if len(data) > MaxDirectAnswerSize {
		return nil, tooLarge("direct answer: %d bytes, limit %d", len(data), MaxDirectAnswerSize)
	}
	r := decoder{b: data}
	r.header(KindDirectAnswer, "direct answer")
	a := &DirectAnswer{}
	a.Heartbeat = r.bytes("direct answer heartbeat", MaxMessageSize)
	a.Heads = r.bytes("direct answer heads", MaxMessageSize)
	r.end("direct answer")
	if r.err != nil {
		return nil, r.err
	}
	if len(a.Heads) == 0 {
		return nil, malformed("direct answer: no heads")
	}
	return a, nil
}

// AnswerDirect answers a HeadsRequest that from sent on a direct stream,
// with the local member's last heartbeat and its heads: with Recent (as a
// topic answer has) when the requester's digest differs from the local
// one, without when they are alike. It refuses a request for another
// collection (ErrWrongCollection), a malformed one, and a requester
// answered within AnswerInterval (ErrRateLimited).
func (c *Collection) AnswerDirect(from peer.ID, req []byte) ([]byte, error) {
	if len(req) > MaxHeadsRequestSize {
		return nil, tooLarge("heads request: %d bytes, limit %d", len(req), MaxHeadsRequestSize)
	}
	q, err := DecodeHeadsRequest(req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !q.Collection.Equals(c.id) {
		return nil, fmt.Errorf("direct heads request: %w", ErrWrongCollection)
	}
	if t, ok := c.directAnswered[from]; ok && c.now.Sub(t) < c.cfg.AnswerInterval {
		c.stats.RateLimited++
		return nil, fmt.Errorf("direct heads request from %s: %w", from, ErrRateLimited)
	}
	if len(c.directAnswered) >= maxDirectAnswered {
		c.expireDirect()
		if len(c.directAnswered) >= maxDirectAnswered {
			c.stats.RateLimited++
			return nil, fmt.Errorf("direct heads request from %s: %w (%d requesters within the interval)", from, ErrRateLimited, maxDirectAnswered)
		}
	}
	c.directAnswered[from] = c.now
	c.stats.DirectAnswers++
	a := DirectAnswer{Heartbeat: c.lastBeatMsg}
	if q.Digest == headsDigest(c.snapshotCIDs(), c.headLinks()) {
		h := Heads{Collection: c.id, Snapshots: c.snapshotCIDs(), Heads: c.headLinks()}
		a.Heads = h.Encode()
	} else {
		a.Heads = c.headsReply()
	}
	return a.Encode(), nil
}

// expireDirect forgets requesters answered more than AnswerInterval ago.
func (c *Collection) expireDirect() {
	for p, t := range c.directAnswered {
		if c.now.Sub(t) >= c.cfg.AnswerInterval {
			delete(c.directAnswered, p)
		}
	}
}

// TakeDirectAnswer takes the answer from sent to a HeadsRequest of ours
// (HeadsRequest, which opens the answer window, must have been called
// first). Its heartbeat, if any, must be from's own and carry a good
// signature; it is taken like one from the topic (a stale one is no
// error: the topic brought it first). Then its heads are taken like an
// answer on the topic, Recent included: if from is still not a member
// (no heartbeat yet), they are held as the topic's would be and
// ErrNotMember is returned.
func (c *Collection) TakeDirectAnswer(from peer.ID, data []byte) error {
	a, err := DecodeDirectAnswer(data)
	if err != nil {
		return err
	}
	var hb *Heartbeat
	if len(a.Heartbeat) > 0 {
		if hb, err = DecodeHeartbeat(a.Heartbeat); err != nil {
			return err
		}
		if hb.Member != from {
			return fmt.Errorf("direct answer: heartbeat of %s from %s: %w", hb.Member, from, ErrSenderMismatch)
		}
		// Not through gossipsub, so not verified by it (SenderSigned).
		if err := hb.Verify(); err != nil {
			return fmt.Errorf("direct answer: %w", err)
		}
	}
	h, err := DecodeHeads(a.Heads)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hb != nil {
		if !hb.Collection.Equals(c.id) {
			return fmt.Errorf("direct answer heartbeat: %w", ErrWrongCollection)
		}
		// One the topic brought first is no news, and not a bad heartbeat.
		if m := c.members[hb.Member]; m == nil || hb.Time > m.time {
			if err := c.takeHeartbeat(hb); err != nil && !errors.Is(err, ErrStaleHeartbeat) {
				return fmt.Errorf("direct answer: %w", err)
			}
		}
	}
	if !h.Collection.Equals(c.id) {
		return fmt.Errorf("direct answer heads: %w", ErrWrongCollection)
	}
	if !c.isMember(from) {
		c.strangerVerdict(from, h)
		return fmt.Errorf("direct answer from %s: %w", from, ErrNotMember)
	}
	c.stats.DirectTaken++
	c.takeHeads(from, h)
	return nil
}

// HeadsEmpty reports whether the replica has neither snapshots nor heads:
// nothing to announce, since such a Heads message claims nothing.
func (c *Collection) HeadsEmpty() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.snaps) == 0 && len(c.heads) == 0
}
