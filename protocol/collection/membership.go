package collection

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

type member struct {
	id        peer.ID
	seen      time.Time // local clock at the last accepted heartbeat
	time      uint64    // the member's own Time in it
	leaving   bool
	truncated bool
	digest    [32]byte
	pinned    uint64
	// suspect and grace are SuspectAfter and GracePeriod for this
	// member, lengthened when its last heartbeat announced a longer
	// interval than HeartbeatInterval (stretch).
	suspect, grace time.Duration
	pending        map[string]struct{}
	surplus        map[string]struct{}
	// live is whether the member is in Collection.live as updateLive
	// last computed it.
	live bool
}

// maxMembers bounds the members remembered; the ones unheard the longest
// are forgotten first.
const maxMembers = 10000

// Tick advances the replica's clock to now (earlier times are ignored):
// members unheard for longer than GracePeriod leave the allocation, and
// deltas, wanted blocks and snapshot loads older than PendingTTL are
// dropped, and folded blocks past GCDelay become garbage. node/ calls it
// at least every second or so; tests call it with a fake clock.
func (c *Collection) Tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.After(c.now) {
		c.now = now
	}
	c.updateLive()
	c.expire()
}

func (c *Collection) expire() {
	cutoff := c.now.Add(-c.cfg.PendingTTL)
	dropped := false
	for k, p := range c.pending {
		if p.since.Before(cutoff) {
			c.dropPending(k)
			dropped = true
		}
	}
	if dropped {
		for k, wr := range c.waits {
			for ch := range wr.children {
				if _, ok := c.pending[ch]; !ok {
					delete(wr.children, ch)
				}
			}
			if len(wr.children) == 0 {
				delete(c.waits, k)
				c.unwant(k)
			}
		}
	}
	c.expireClaims()
	for k, w := range c.wanted {
		if w.since.Before(cutoff) {
			c.unwant(k)
		}
	}
	for k, l := range c.loading {
		if l.since.Before(cutoff) {
			c.dropLoad(k)
		}
	}
	for k, o := range c.orphans {
		if o.since.Before(cutoff) {
			c.dropOrphan(k)
		}
	}
	n := 0
	for _, r := range c.retiring {
		if !r.at.After(c.now) {
			c.garbage = append(c.garbage, r.c)
		} else {
			c.retiring[n] = r
			n++
		}
	}
	c.retiring = c.retiring[:n]
	for id, m := range c.members {
		if m.seen.Before(c.now.Add(-10 * m.grace)) {
			delete(c.members, id)
		}
	}
}

// alive: heard within SuspectAfter. live (allocated to): heard within
// GracePeriod and not leaving.
func (c *Collection) fresh(m *member) bool {
	return !c.now.After(m.seen.Add(m.suspect))
}

func (c *Collection) inGrace(m *member) bool {
	return !c.now.After(m.seen.Add(m.grace))
}

// stretch returns SuspectAfter and GracePeriod for a member whose next
// heartbeat is due after interval (zero: HeartbeatInterval). Beyond
// HeartbeatInterval, SuspectAfter grows in proportion (as many missed
// heartbeats make a suspect) and GracePeriod by as much (the same time
// again before the items move).
func (c *Collection) stretch(interval time.Duration) (suspect, grace time.Duration) {
	if interval <= c.cfg.HeartbeatInterval {
		return c.cfg.SuspectAfter, c.cfg.GracePeriod
	}
	suspect = time.Duration(float64(c.cfg.SuspectAfter) * float64(interval) / float64(c.cfg.HeartbeatInterval))
	return suspect, c.cfg.GracePeriod + suspect - c.cfg.SuspectAfter
}

// beatInterval is the local member's heartbeat interval now:
// HeartbeatInterval, or longer when more than HeartbeatRate ×
// HeartbeatInterval members are live, so that each member takes about
// HeartbeatRate heartbeats a second, in whole milliseconds.
func (c *Collection) beatInterval() time.Duration { return c.intervalFor(len(c.live)) }

func (c *Collection) intervalFor(members int) time.Duration {
	d := time.Duration(members) * time.Second / time.Duration(c.cfg.HeartbeatRate)
	d = (d + time.Millisecond - 1).Truncate(time.Millisecond)
	return min(max(d, c.cfg.HeartbeatInterval), MaxHeartbeatInterval)
}

// intervalCap bounds the interval taken from a member's heartbeat: twice
// what the local member would announce if every member it knows were
// live. An honest member's count differs from ours by a few members; a
// member that announced more could stay counted as a holder after it
// went, and hold off every newcomer's plans (warmUntil), for as long as
// it said.
func (c *Collection) intervalCap() time.Duration {
	return 2 * c.intervalFor(len(c.members)+1)
}

// HeartbeatEvery is how long node/ waits after a Heartbeat before it
// publishes the next: the interval that heartbeat announced.
func (c *Collection) HeartbeatEvery() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.beatEvery == 0 {
		return c.cfg.HeartbeatInterval
	}
	return c.beatEvery
}

// Silence is how long a member heartbeating as often as the local one may
// stay unheard before it is suspected: SuspectAfter, stretched with the
// local heartbeat interval.
func (c *Collection) Silence() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, _ := c.stretch(c.beatEvery)
	return s
}

// updateLive recomputes the members the allocation counts, bumping liveV
// when the set changes.
//
// It runs on every heartbeat, and every member hears every member's: at a
// thousand members that is a million calls a heartbeat round. Most change
// nothing (a live member heard again), so it first checks each member
// against the set as last computed, which costs a comparison of times
// per member, and builds and sorts the set only when it differs.
func (c *Collection) updateLive() {
	if !c.liveChanged() {
		return
	}
	live := make([]peer.ID, 0, len(c.members)+1)
	c.liveSelf = !c.leaving
	if c.liveSelf {
		live = append(live, c.self)
	}
	for id, m := range c.members {
		m.live = !m.leaving && c.inGrace(m)
		if m.live {
			live = append(live, id)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i] < live[j] })
	if !equalIDs(live, c.live) {
		c.liveV++
	}
	c.live = live
}

// liveChanged reports whether updateLive would compute a live set other
// than c.live: a member came into or fell out of it (heard, leaving, past
// GracePeriod), a member in it was forgotten, or the local member began
// leaving.
func (c *Collection) liveChanged() bool {
	if c.live == nil || c.liveSelf != !c.leaving {
		return true
	}
	n := 0
	if c.liveSelf {
		n++
	}
	for _, m := range c.members {
		want := !m.leaving && c.inGrace(m)
		if want != m.live {
			return true
		}
		if want {
			n++
		}
	}
	return n != len(c.live)
}

func equalIDs(a, b []peer.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Live returns the members the allocation counts now (the local member unless
// it is leaving, and the members heard within GracePeriod that are not
// leaving), sorted.
func (c *Collection) Live() []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]peer.ID(nil), c.live...)
}

func (c *Collection) handleHeartbeat(h *Heartbeat) error {
	if !h.Collection.Equals(c.id) {
		return fmt.Errorf("heartbeat: %w", ErrWrongCollection)
	}
	if h.Member == c.self {
		return nil
	}
	m := c.members[h.Member]
	if m != nil && h.Time <= m.time {
		return fmt.Errorf("heartbeat from %s: %w", h.Member, ErrStaleHeartbeat)
	}
	interval := min(h.Interval, c.intervalCap())
	suspect, grace := c.stretch(interval)
	if m == nil {
		oldest := c.now.Add(-(grace + c.cfg.MaxClockSkew))
		if h.Time < uint64(max(oldest.UnixNano(), 0)) {
			return fmt.Errorf("heartbeat from %s: %w: sent at %v", h.Member, ErrStaleHeartbeat,
				time.Unix(0, int64(h.Time)).UTC())
		}
	}
	if !c.cfg.SenderSigned {
		if err := h.Verify(); err != nil {
			return err
		}
	}
	forgot := false
	if m == nil {
		if len(c.members) >= maxMembers {
			forgot = c.forgetOldest()
		}
		m = &member{id: h.Member}
		c.members[h.Member] = m
	}
	m.seen, m.time = c.now, h.Time
	m.suspect, m.grace = suspect, grace
	if interval > c.maxHeard {
		c.maxHeard = interval
	}
	m.leaving, m.truncated = h.Leaving, h.Truncated
	m.digest, m.pinned = h.Allocated, h.Pinned
	m.pending = cidSet(h.Pending)
	m.surplus = cidSet(h.Surplus)
	if forgot {
		c.updateLive()
	} else {
		c.heardFrom(m)
	}
	return nil
}

// heardFrom updates the live set after a heartbeat from m. Only m's place
// in it can have changed: the members that time moved out of it leave it
// at the next Tick. A member takes every member's heartbeats, so with
// updateLive's check of every member this was a thousand comparisons per
// heartbeat at a thousand members, and 11% of a simulation's CPU.
func (c *Collection) heardFrom(m *member) {
	if c.live == nil {
		c.updateLive()
		return
	}
	want := !m.leaving && c.inGrace(m)
	if want == m.live {
		return
	}
	m.live = want
	i, found := slices.BinarySearch(c.live, m.id)
	switch {
	case want && !found:
		c.live = slices.Insert(slices.Clip(c.live), i, m.id) // a new slice: Insert on a clipped one copies
	case !want && found:
		c.live = slices.Concat(c.live[:i], c.live[i+1:])
	default:
		return
	}
	c.liveV++
}

// forgetOldest forgets the member heard least recently, and reports
// whether it was live.
func (c *Collection) forgetOldest() bool {
	var oldest *member
	for _, m := range c.members {
		if oldest == nil || m.seen.Before(oldest.seen) {
			oldest = m
		}
	}
	if oldest == nil {
		return false
	}
	delete(c.members, oldest.id)
	return oldest.live
}

func cidSet(cs []cid.Cid) map[string]struct{} {
	if len(cs) == 0 {
		return nil
	}
	out := make(map[string]struct{}, len(cs))
	for _, c := range cs {
		out[c.KeyString()] = struct{}{}
	}
	return out
}

// Heartbeat returns the local member's signed heartbeat for now, for
// node/ to publish every HeartbeatInterval.
func (c *Collection) Heartbeat() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.ensureAlloc()
	t := uint64(max(c.now.UnixNano(), 0))
	if t <= c.lastBeat {
		t = c.lastBeat + 1
	}
	c.lastBeat = t
	h := &Heartbeat{Collection: c.id, Time: t, Leaving: c.leaving, Allocated: a.digests[c.self]}
	c.beatEvery = c.beatInterval()
	if c.beatEvery > c.cfg.HeartbeatInterval {
		h.Interval = c.beatEvery
	}
	if c.leaving {
		h.Allocated = emptyDigest
	}
	for _, k := range a.mine {
		if p := c.pins[k]; p == nil || p.state != pinPinned {
			if len(h.Pending) == MaxHeartbeatList {
				h.Truncated = true
				break
			}
			h.Pending = append(h.Pending, c.items[k].c)
		}
	}
	for _, k := range sortedKeys(c.pins) {
		p := c.pins[k]
		if p.state != pinPinned && p.state != pinUnpinning {
			continue
		}
		h.Pinned++
		if a.isMine[k] || c.items[k] == nil || len(h.Surplus) == MaxHeartbeatList {
			continue
		}
		h.Surplus = append(h.Surplus, p.c)
	}
	if err := h.sign(c.key); err != nil {
		return nil, err
	}
	c.lastBeatMsg = h.Encode()
	return c.lastBeatMsg, nil
}

// Leave marks the local member as leaving: its heartbeats say so, others
// stop allocating to it, and Plan releases each of its items once the new
// holders report it pinned. Released reports when it holds nothing more.
func (c *Collection) Leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaving = true
	c.updateLive()
}

// Released reports whether the local member is leaving and holds no pins.
func (c *Collection) Released() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaving && len(c.pins) == 0
}
