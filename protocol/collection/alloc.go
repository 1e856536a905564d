package collection

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sort"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

var emptyDigest = sha256.Sum256(nil)

// allocation caches the holders of every item for one items version and
// one live set.
type allocation struct {
	itemsV, liveV uint64
	holders       map[string][]peer.ID // item key -> holders, highest weight first
	mine          []string             // item keys allocated to the local member, sorted
	isMine        map[string]bool
	digests       map[peer.ID][32]byte // live member -> digest of its allocated items
}

func (c *Collection) ensureAlloc() *allocation {
	if a := c.alloc; a != nil && a.itemsV == c.itemsV && a.liveV == c.liveV {
		return a
	}
	a := &allocation{
		itemsV:  c.itemsV,
		liveV:   c.liveV,
		holders: make(map[string][]peer.ID, len(c.items)),
		isMine:  map[string]bool{},
		digests: make(map[peer.ID][32]byte, len(c.live)),
	}
	md := make([][32]byte, len(c.live))
	hs := make([]hash.Hash, len(c.live))
	idx := make(map[peer.ID]int, len(c.live))
	for i, p := range c.live {
		md[i] = memberDigest(p)
		hs[i] = sha256.New()
		idx[p] = i
	}
	var lenBuf [binary.MaxVarintLen64]byte
	for _, k := range c.sortedItemKeys() {
		it := c.items[k]
		r := c.itemOf(it).Effective
		holders := topR(&it.hrw, c.live, md, r, make([]peer.ID, 0, min(r, len(c.live))))
		a.holders[k] = holders
		for _, h := range holders {
			hh := hs[idx[h]]
			n := binary.PutUvarint(lenBuf[:], uint64(len(k)))
			hh.Write(lenBuf[:n])
			hh.Write([]byte(k))
			if h == c.self {
				a.mine = append(a.mine, k)
				a.isMine[k] = true
			}
		}
	}
	for i, p := range c.live {
		var d [32]byte
		hs[i].Sum(d[:0])
		a.digests[p] = d
	}
	c.alloc = a
	return a
}

// AllocationDigest returns the digest of the items allocated to p in the
// local view (the value p's heartbeat must carry for its pins to count),
// and whether p is live.
func (c *Collection) AllocationDigest(p peer.ID) ([32]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.ensureAlloc().digests[p]
	return d, ok
}

// HoldersOf returns the holders of item in the local view, highest weight
// first, or nil if the item is not in the collection.
func (c *Collection) HoldersOf(item cid.Cid) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]peer.ID(nil), c.ensureAlloc().holders[item.KeyString()]...)
}

// ---- local pins ----

type pinState uint8

const (
	pinPinning pinState = iota + 1
	pinPinned
	pinUnpinning
	pinFailed
)

type pinRec struct {
	c       cid.Cid
	state   pinState
	retryAt time.Time
}

// ActionKind is what Plan asks node/ to do.
type ActionKind uint8

const (
	ActionPin   ActionKind = 1 // fetch and pin the item (recursively)
	ActionUnpin ActionKind = 2 // unpin the item
)

func (k ActionKind) String() string {
	switch k {
	case ActionPin:
		return "pin"
	case ActionUnpin:
		return "unpin"
	}
	return "ActionKind(?)"
}

// Action is one pin or unpin for node/ to carry out, then report with
// PinDone or UnpinDone.
type Action struct {
	Kind  ActionKind
	Item  cid.Cid
	Label string
}

// Plan returns the pins and unpins due now for the local member, and
// marks them in progress so the next Plan does not repeat them:
//
//   - pin every item allocated to it that it does not hold (an item whose
//     pin failed is asked again after PinRetry);
//   - unpin every item removed from the collection;
//   - unpin an item it holds but is no longer allocated only when enough
//     of the item's holders report it pinned in fresh heartbeats (R of
//     them, or all of them if fewer members are live), so an item never
//     has fewer than R copies during a move.
//
// For WarmUp after New, Plan returns nothing: the member has not heard
// every member's heartbeat yet, and would pin (or release) on the belief
// that it is alone. When a member announced a heartbeat interval longer
// than HeartbeatInterval, the warm-up lasts that much longer.
func (c *Collection) Plan() []Action {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.Before(c.warmUntil()) {
		return nil
	}
	a := c.ensureAlloc()
	var out []Action
	for _, k := range a.mine {
		p := c.pins[k]
		if p != nil && (p.state != pinFailed || c.now.Before(p.retryAt)) {
			continue
		}
		it := c.items[k]
		c.pins[k] = &pinRec{c: it.c, state: pinPinning}
		out = append(out, Action{Kind: ActionPin, Item: it.c, Label: c.itemOf(it).Label})
	}
	for _, k := range sortedKeys(c.pins) {
		p := c.pins[k]
		if a.isMine[k] {
			continue
		}
		switch p.state {
		case pinFailed:
			delete(c.pins, k) // no longer wanted here
			continue
		case pinPinned:
		default:
			continue
		}
		if c.items[k] != nil && !c.safeToRelease(a, k) {
			continue
		}
		p.state = pinUnpinning
		out = append(out, Action{Kind: ActionUnpin, Item: p.c})
	}
	return out
}

// safeToRelease reports whether the holders of item k (not the local
// member) confirm enough copies for the local one to go.
func (c *Collection) safeToRelease(a *allocation, k string) bool {
	holders := a.holders[k]
	need := min(c.itemOf(c.items[k]).Effective, len(holders))
	if need == 0 {
		return false
	}
	n := 0
	for _, h := range holders {
		if h != c.self && c.confirmed(a, h, k) {
			n++
		}
	}
	return n >= need
}

// confirmed reports whether member h's last heartbeat, fresh, says it has
// item k pinned.
func (c *Collection) confirmed(a *allocation, h peer.ID, k string) bool {
	if h == c.self {
		p := c.pins[k]
		return p != nil && (p.state == pinPinned || p.state == pinUnpinning)
	}
	m := c.members[h]
	if m == nil || !c.fresh(m) {
		return false
	}
	if _, ok := m.surplus[k]; ok {
		return true
	}
	if m.truncated || m.leaving {
		return false
	}
	d, ok := a.digests[h]
	if !ok || d != m.digest {
		return false
	}
	if !a.isAllocated(h, k) {
		return false
	}
	_, pending := m.pending[k]
	return !pending
}

func (a *allocation) isAllocated(h peer.ID, k string) bool {
	for _, p := range a.holders[k] {
		if p == h {
			return true
		}
	}
	return false
}

// PinDone reports that a pin asked by Plan finished; err != nil means it
// failed and Plan asks again after PinRetry.
func (c *Collection) PinDone(item cid.Cid, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := item.KeyString()
	p := c.pins[k]
	if p == nil {
		p = &pinRec{c: item}
		c.pins[k] = p
	}
	if err != nil {
		p.state, p.retryAt = pinFailed, c.now.Add(c.cfg.PinRetry)
		return
	}
	p.state = pinPinned
}

// UnpinDone reports that an unpin asked by Plan finished; on error the
// item counts as still pinned.
func (c *Collection) UnpinDone(item cid.Cid, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := item.KeyString()
	if err != nil {
		if p := c.pins[k]; p != nil {
			p.state = pinPinned
		}
		return
	}
	delete(c.pins, k)
}

// RestorePins tells a new replica which items the local store already
// holds pinned for this collection (after a restart).
func (c *Collection) RestorePins(items []cid.Cid) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range items {
		c.pins[it.KeyString()] = &pinRec{c: it, state: pinPinned}
	}
}

// Pinned returns the items the local member holds pinned (or is
// unpinning), sorted.
func (c *Collection) Pinned() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cid.Cid
	for _, k := range sortedKeys(c.pins) {
		if p := c.pins[k]; p.state == pinPinned || p.state == pinUnpinning {
			out = append(out, p.c)
		}
	}
	return out
}

// sortPeers sorts peer IDs in place.
func sortPeers(ps []peer.ID) { sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] }) }

// warmUntil is when the warm-up ends: WarmUp after New, lengthened by as
// much as the longest heartbeat interval heard exceeds HeartbeatInterval.
func (c *Collection) warmUntil() time.Time {
	return c.started.Add(c.cfg.WarmUp + max(c.maxHeard-c.cfg.HeartbeatInterval, 0))
}
