package collection

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Authorisation of topic messages.
//
// Anyone can publish on a collection's topic, so every message is checked
// against its sender before it changes any state or triggers any work.
// The sender is the gossip message's origin, which gossipsub verifies
// (node/ runs it with strict signing); it is passed to Authorize and
// HandleMessage as from.
//
//   - A heartbeat must be published by the member it names, and carry a
//     good signature. A heartbeat is how a peer becomes a member:
//     collections are open to anyone who has the ID, so membership is what
//     the replica has heard, not a list.
//   - A heads message or heads request must come from a member (a peer
//     whose heartbeat the replica accepted) or a writer. Others are
//     refused: Ignore while the sender might be a member whose first
//     heartbeat is still on its way (its first 2 × HeartbeatInterval, or
//     the replica's WarmUp), Reject afterwards. The last heads message of
//     such a sender is held and taken once its heartbeat comes.
//   - What a member's heads messages make the replica fetch is its claims:
//     at most MaxClaims outstanding per member (plus MaxRecent while an
//     answer to our own request may come). A claim still unfetched after
//     ClaimTimeout is false and halves the member's budget, down to
//     nothing; a true claim (the block arrived) doubles it back. The
//     wanted set as a whole holds MaxPending blocks; when it is full, the
//     member with the most claims loses one to make room, and the refusals
//     are counted (Stats.WantedFull), never silent.
//   - A heads request from a member is answered at most once per
//     AnswerInterval for that member, after a random delay of up to
//     AnswerDelay during which an identical answer from another member
//     cancels it (TakeAnswer), and one answer serves every request that
//     came meanwhile. Answers hold at most MaxRecent delta CIDs.

// Verdict is what a topic validator does with a message.
type Verdict int

const (
	// Accept: deliver and forward.
	Accept Verdict = iota
	// Ignore: drop without penalty (a duplicate, a stale heartbeat, a
	// sender that may yet prove a member, a request over its rate).
	Ignore
	// Reject: drop and count against the peer that sent it (malformed,
	// badly signed, or from a non-member).
	Reject
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Ignore:
		return "ignore"
	}
	return "reject"
}

// claimRec is what a member's claims stand at.
type claimRec struct {
	open  int // wanted blocks it claimed, not fetched yet
	debts int // false claims not made good: the budget is MaxClaims >> debts
}

// stranger is a sender of heads messages not known as a member.
type stranger struct {
	first time.Time
	held  *Heads // its last heads message, taken if its heartbeat comes
}

// maxStrangers bounds the strangers remembered (the oldest go first).
const maxStrangers = 256

func (c *Collection) claimOf(p peer.ID) *claimRec {
	r := c.claims[p]
	if r == nil {
		r = &claimRec{}
		c.claims[p] = r
	}
	return r
}

// budget is how many claims p may have outstanding.
func (c *Collection) budget(p peer.ID) int {
	b := c.cfg.MaxClaims
	if c.answerWindow() {
		b += MaxRecent
	}
	if r := c.claims[p]; r != nil && r.debts > 0 {
		if r.debts >= 31 {
			return 0
		}
		b >>= r.debts
	}
	return b
}

// answerWindow reports whether answers to our own heads request may still
// come (their Recent lists are taken then).
func (c *Collection) answerWindow() bool {
	return !c.requested.IsZero() && !c.now.After(c.requested.Add(c.cfg.PendingTTL))
}

func (c *Collection) mayClaim(p peer.ID) bool {
	r := c.claims[p]
	return r == nil || r.open < c.budget(p)
}

// unwant forgets a wanted block, releasing its claim.
func (c *Collection) unwant(k string) {
	w, ok := c.wanted[k]
	if !ok {
		return
	}
	delete(c.wanted, k)
	if w.by != "" {
		if r := c.claims[w.by]; r != nil {
			r.open--
			if r.open <= 0 && r.debts == 0 {
				delete(c.claims, w.by)
			}
		}
	}
}

// gotWanted forgets a wanted block that arrived: a true claim.
func (c *Collection) gotWanted(k string) {
	if w, ok := c.wanted[k]; ok && w.by != "" {
		if r := c.claims[w.by]; r != nil && r.debts > 0 {
			r.debts--
		}
	}
	c.unwant(k)
}

// evictFor makes room in the full wanted set for a block by claims: it
// drops a claim of the member with the most, if that is not by itself
// (or, for signed data's blocks, by == "", anyone's). It reports whether
// there is room now.
func (c *Collection) evictFor(by peer.ID) bool {
	var top peer.ID
	most := 0
	for p, r := range c.claims {
		if r.open > most || (r.open == most && p < top) {
			top, most = p, r.open
		}
	}
	if most == 0 || (by != "" && top == by) || (by != "" && most <= c.claims[by].openOrZero()) {
		return false
	}
	for k, w := range c.wanted {
		if w.by == top {
			c.unwant(k)
			c.stats.WantedFull++
			return true
		}
	}
	return false
}

func (r *claimRec) openOrZero() int {
	if r == nil {
		return 0
	}
	return r.open
}

// expireClaims turns claims older than ClaimTimeout into debts.
func (c *Collection) expireClaims() {
	cutoff := c.now.Add(-c.cfg.ClaimTimeout)
	for k, w := range c.wanted {
		if w.by == "" || !w.since.Before(cutoff) {
			continue
		}
		r := c.claimOf(w.by)
		r.debts++
		c.stats.FalseClaims++
		c.unwant(k)
	}
	for p, t := range c.answered {
		if c.now.Sub(t) >= c.cfg.AnswerInterval {
			delete(c.answered, p)
		}
	}
	for d, t := range c.heardHeads {
		if c.now.Sub(t) >= c.cfg.RebroadcastInterval {
			delete(c.heardHeads, d)
		}
	}
	for d, t := range c.heardReqs {
		if c.now.Sub(t) >= c.cfg.AnswerInterval {
			delete(c.heardReqs, d)
		}
	}
	for p, s := range c.strangers {
		if c.now.Sub(s.first) > c.cfg.PendingTTL {
			delete(c.strangers, p)
		}
	}
}

// isMember reports whether p may send heads messages and requests: a
// member the replica heard, a writer, or the local member.
func (c *Collection) isMember(p peer.ID) bool {
	if p == c.self || p == c.desc.Creator {
		return true
	}
	if _, ok := c.members[p]; ok {
		return true
	}
	if w, ok := c.wix[p]; ok {
		if _, ok := c.grants[w]; ok {
			return true
		}
	}
	return false
}

// strangerVerdict is the verdict on a heads message or request from a
// sender not known as a member, and remembers the sender.
func (c *Collection) strangerVerdict(p peer.ID, h *Heads) Verdict {
	s := c.strangers[p]
	if s == nil {
		if len(c.strangers) >= maxStrangers {
			var oldest peer.ID
			for q, t := range c.strangers {
				if oldest == "" || t.first.Before(c.strangers[oldest].first) {
					oldest = q
				}
			}
			delete(c.strangers, oldest)
		}
		s = &stranger{first: c.now}
		c.strangers[p] = s
	}
	c.stats.NotMember++
	if c.now.Sub(c.started) < c.cfg.WarmUp || c.now.Sub(s.first) < 2*c.cfg.HeartbeatInterval {
		if h != nil {
			s.held = h
		}
		return Ignore
	}
	s.held = nil
	return Reject
}

// Authorize checks a message received on the collection's topic from
// from, the gossip sender's verified identity, before anything else sees
// it; node/ calls it from the topic validator and returns its verdict. A
// heartbeat that passes is taken at once (it makes its sender a member,
// which the sender's next messages need). Other messages change nothing
// here: HandleMessage takes them.
func (c *Collection) Authorize(from peer.ID, data []byte) (Verdict, error) {
	if len(data) == 0 {
		return Reject, malformed("empty message")
	}
	if from == c.self {
		return Accept, nil
	}
	switch data[0] {
	case KindHeartbeat:
		h, err := DecodeHeartbeat(data)
		if err != nil {
			return Reject, err
		}
		if !h.Collection.Equals(c.id) {
			return Reject, fmt.Errorf("heartbeat: %w", ErrWrongCollection)
		}
		if h.Member != from {
			return Reject, fmt.Errorf("heartbeat of %s from %s: %w", h.Member, from, ErrSenderMismatch)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.takeHeartbeat(h); err != nil {
			if errors.Is(err, ErrStaleHeartbeat) {
				return Ignore, err
			}
			return Reject, err
		}
		return Accept, nil
	case KindHeads:
		h, err := DecodeHeads(data)
		if err != nil {
			return Reject, err
		}
		if !h.Collection.Equals(c.id) {
			return Reject, fmt.Errorf("heads: %w", ErrWrongCollection)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.isMember(from) {
			return c.strangerVerdict(from, h), fmt.Errorf("heads from %s: %w", from, ErrNotMember)
		}
		return Accept, nil
	case KindHeadsRequest:
		q, err := DecodeHeadsRequest(data)
		if err != nil {
			return Reject, err
		}
		if !q.Collection.Equals(c.id) {
			return Reject, fmt.Errorf("heads request: %w", ErrWrongCollection)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.isMember(from) {
			return c.strangerVerdict(from, nil), fmt.Errorf("heads request from %s: %w", from, ErrNotMember)
		}
		if t, ok := c.answered[from]; ok && c.now.Sub(t) < c.cfg.AnswerInterval {
			// Not forwarded either: members that answered it saw it.
			c.stats.RateLimited++
			return Ignore, fmt.Errorf("heads request from %s: %w", from, ErrRateLimited)
		}
		return Accept, nil
	}
	return Reject, malformed("message kind 0x%02x is not a heartbeat or heads message", data[0])
}

// takeHeartbeat applies a heartbeat and, if it made a stranger a member,
// the heads message the stranger sent before.
func (c *Collection) takeHeartbeat(h *Heartbeat) error {
	if err := c.handleHeartbeat(h); err != nil {
		c.stats.BadHeartbeats++
		return err
	}
	c.stats.Heartbeats++
	if s := c.strangers[h.Member]; s != nil {
		delete(c.strangers, h.Member)
		if s.held != nil {
			c.takeHeads(h.Member, s.held)
		}
	}
	return nil
}

// takeHeads records the blocks a member's heads message names as its
// claims, and cancels our scheduled answer if it is an answer like ours.
func (c *Collection) takeHeads(from peer.ID, h *Heads) {
	for _, s := range h.Snapshots {
		c.want(s, from)
	}
	for _, l := range h.Heads {
		if st, _ := c.linkStateOf(l); st == linkMissing {
			c.wantLink(l, from)
		}
	}
	// Recent lists are taken only as answers to a request of ours, so
	// that no one can make us fetch thousands of blocks unasked.
	if c.answerWindow() {
		for _, r := range h.Recent {
			c.want(r, from)
		}
	}
	d := headsDigest(h.Snapshots, h.Heads)
	if c.answerDue && len(h.Recent) > 0 && d == headsDigest(c.snapshotCIDs(), c.headLinks()) {
		c.answerDue = false
		c.stats.Suppressed++
	}
	if len(c.heardHeads) < maxHeard {
		c.heardHeads[d] = c.now
	}
}

// maxHeard bounds the heads digests remembered as heard (HeadsHeard,
// RequestHeard), each list for its interval: past it, new ones are not
// remembered, and the member announces and asks as if it heard nothing.
const maxHeard = 4096

// HeadsHeard says whether another member announced exactly the local
// snapshots and heads within RebroadcastInterval. node/ then does not
// announce them, on a change or as a rebroadcast, and counts the skip:
// a delta's author announces the heads it made, and every member that
// applies the delta comes to the same heads, so without it each write
// was announced once by each member. Rebroadcasts are skipped the same
// way, so a settled collection announces its heads about once per
// RebroadcastInterval (whichever member's turn comes first), not once
// per member (the suppression of the Trickle algorithm, RFC 6206).
func (c *Collection) HeadsHeard() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.heardHeads[headsDigest(c.snapshotCIDs(), c.headLinks())]
	if ok && c.now.Sub(t) < c.cfg.RebroadcastInterval {
		c.stats.HeadsSkipped++
		return true
	}
	return false
}

// RequestHeard says whether another member asked for heads within
// AnswerInterval with the local digest (the same snapshots and heads).
// The answers to that request serve this replica as well, so node/ does
// not send its own: when members hear a member again after a silence
// (a healed partition) they each ask, and at a thousand members that was
// a thousand requests. The answer
// window opens as for a request of its own, so the answers' Recent lists
// are taken. It counts the skip.
func (c *Collection) RequestHeard() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.heardReqs[headsDigest(c.snapshotCIDs(), c.headLinks())]
	if ok && c.now.Sub(t) < c.cfg.AnswerInterval {
		c.requested = c.now
		c.stats.RequestsSkipped++
		return true
	}
	return false
}

// takeRequest schedules an answer to a member's heads request. It reports
// whether node/ should call TakeAnswer, and after how long.
func (c *Collection) takeRequest(from peer.ID, q *HeadsRequest) (Reply, error) {
	if len(c.heardReqs) < maxHeard {
		c.heardReqs[q.Digest] = c.now
	}
	if q.Digest == headsDigest(c.snapshotCIDs(), c.headLinks()) {
		return Reply{}, nil
	}
	if t, ok := c.answered[from]; ok && c.now.Sub(t) < c.cfg.AnswerInterval {
		c.stats.RateLimited++
		return Reply{}, fmt.Errorf("heads request from %s: %w", from, ErrRateLimited)
	}
	c.answered[from] = c.now
	if c.answerDue {
		return Reply{}, nil // the answer scheduled serves this request too
	}
	c.answerDue = true
	var d time.Duration
	if c.cfg.AnswerDelay > 0 {
		d = rand.N(c.cfg.AnswerDelay + 1)
	}
	return Reply{Answer: true, Delay: d}, nil
}

// Reply says what node/ does after HandleMessage: if Answer, call
// TakeAnswer after Delay and publish what it returns.
type Reply struct {
	Answer bool
	Delay  time.Duration
}

// TakeAnswer returns the answer HandleMessage scheduled, to publish now,
// or nil if there is none or another member answered alike meanwhile.
// The answer is a Heads message with Recent: the newest MaxRecent deltas
// kept after the snapshots.
func (c *Collection) TakeAnswer() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.answerDue {
		return nil
	}
	c.answerDue = false
	c.stats.Answers++
	return c.headsReply()
}

// Claims returns how many wanted blocks each member's claims hold, for
// status and tests.
func (c *Collection) Claims() map[peer.ID]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[peer.ID]int, len(c.claims))
	for p, r := range c.claims {
		if r.open > 0 {
			out[p] = r.open
		}
	}
	return out
}

// Advance moves the replica's clock forward to now (earlier times are
// ignored) and does nothing else: node/ calls it as messages arrive, so
// that AnswerInterval and the heartbeats' ages are measured on a current
// clock between Ticks, without Tick's sweep over the state.
func (c *Collection) Advance(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.now) {
		c.now = now
	}
}
