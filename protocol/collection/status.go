package collection

import (
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ItemState is an item's replication state, as `weft collection status`
// shows it.
type ItemState string

const (
	// StateOK: every holder reports the item pinned (R copies).
	StateOK ItemState = "ok"
	// StateUnderReplicated: fewer than R copies are confirmed and nothing
	// is being done about it yet: a holder is unheard but within its grace
	// period, or there are fewer live members than R.
	StateUnderReplicated ItemState = "under-replicated"
	// StateRepairing: the holders are all live and heard from, and some are
	// still fetching the item.
	StateRepairing ItemState = "repairing"
)

// ItemStatus is one item's line of `status`.
type ItemStatus struct {
	Item
	Holders []peer.ID // allocated holders, highest weight first
	Pinned  []peer.ID // holders that report the item pinned
	Surplus []peer.ID // members that still hold it while they hand it over
	State   ItemState
}

// MemberState is how a member was last heard.
type MemberState string

const (
	MemberAlive   MemberState = "alive"   // heard within SuspectAfter
	MemberSuspect MemberState = "suspect" // unheard, within GracePeriod: keeps its items
	MemberGone    MemberState = "gone"    // unheard past GracePeriod: its items moved
	MemberLeaving MemberState = "leaving"
)

// MemberStatus is one member as the local replica sees it.
type MemberStatus struct {
	ID       peer.ID
	Self     bool
	State    MemberState
	LastSeen time.Time // local clock; zero for Self
	Pinned   uint64
}

// Status is what `weft collection status` shows.
type Status struct {
	// HeartbeatEvery is the local member's heartbeat interval now, and
	// Grace the GracePeriod of a member with that interval (stretch).
	HeartbeatEvery, Grace time.Duration
	ID                    cid.Cid
	Name                  string
	Creator               peer.ID
	Replication           int
	Writers               []peer.ID
	Heads                 []Link
	Snapshots             []cid.Cid
	Clock                 []Dot
	Members               []MemberStatus
	Items                 []ItemStatus
	Pending               int // deltas waiting for parents
	Missing               int // blocks wanted
	Deltas                int // deltas kept after the snapshots
	Stats                 Stats
}

// Status returns the collection's status: heads, members, and every item
// with its holders and state.
func (c *Collection) Status() Status {
	writers := c.Writers() // takes the lock itself
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.ensureAlloc()
	s := Status{
		ID:          c.id,
		Name:        c.desc.Name,
		Creator:     c.desc.Creator,
		Replication: c.desc.Replication,
		Writers:     writers,
		Heads:       c.headLinks(),
		Snapshots:   c.snapshotCIDs(),
		Clock:       c.clockDots(c.vv),
		Pending:     len(c.pending),
		Missing:     len(c.wanted),
		Deltas:      len(c.deltas),
		Stats:       c.stats,
	}
	s.HeartbeatEvery = c.beatEvery
	if s.HeartbeatEvery == 0 {
		s.HeartbeatEvery = c.cfg.HeartbeatInterval
	}
	_, s.Grace = c.stretch(s.HeartbeatEvery)
	self := MemberStatus{ID: c.self, Self: true, State: MemberAlive}
	for _, p := range c.pins {
		if p.state == pinPinned || p.state == pinUnpinning {
			self.Pinned++
		}
	}
	if c.leaving {
		self.State = MemberLeaving
	}
	s.Members = append(s.Members, self)
	for _, id := range c.memberIDs() {
		m := c.members[id]
		ms := MemberStatus{ID: id, LastSeen: m.seen, Pinned: m.pinned}
		switch {
		case m.leaving:
			ms.State = MemberLeaving
		case c.fresh(m):
			ms.State = MemberAlive
		case c.inGrace(m):
			ms.State = MemberSuspect
		default:
			ms.State = MemberGone
		}
		s.Members = append(s.Members, ms)
	}
	for _, k := range c.sortedItemKeys() {
		s.Items = append(s.Items, c.itemStatus(a, k))
	}
	return s
}

// ItemStatus returns one item's status.
func (c *Collection) ItemStatus(item cid.Cid) (ItemStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := item.KeyString()
	if c.items[k] == nil {
		return ItemStatus{}, false
	}
	return c.itemStatus(c.ensureAlloc(), k), true
}

func (c *Collection) itemStatus(a *allocation, k string) ItemStatus {
	it := c.itemOf(c.items[k])
	st := ItemStatus{Item: it, Holders: append([]peer.ID(nil), a.holders[k]...)}
	stale := false
	for _, h := range st.Holders {
		if c.confirmed(a, h, k) {
			st.Pinned = append(st.Pinned, h)
		}
		if h != c.self {
			if m := c.members[h]; m == nil || !c.fresh(m) {
				stale = true
			}
		}
	}
	if p := c.pins[k]; p != nil && !a.isAllocated(c.self, k) && (p.state == pinPinned || p.state == pinUnpinning) {
		st.Surplus = append(st.Surplus, c.self)
	}
	for _, id := range c.memberIDs() {
		m := c.members[id]
		if _, ok := m.surplus[k]; ok && c.fresh(m) && !a.isAllocated(id, k) {
			st.Surplus = append(st.Surplus, id)
		}
	}
	switch {
	case len(st.Pinned) >= it.Effective:
		st.State = StateOK
	case len(c.live) < it.Effective || stale:
		st.State = StateUnderReplicated
	default:
		st.State = StateRepairing
	}
	return st
}

func (c *Collection) memberIDs() []peer.ID {
	ids := make([]peer.ID, 0, len(c.members))
	for id := range c.members {
		ids = append(ids, id)
	}
	sortPeers(ids)
	return ids
}

func (c *Collection) snapshotCIDs() []cid.Cid {
	out := make([]cid.Cid, 0, len(c.snaps))
	for _, k := range sortedKeys(c.snaps) {
		out = append(out, c.snaps[k].root)
	}
	return out
}
