package collection

import (
	"errors"
	"fmt"
	"sort"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Result says what a call changed.
type Result struct {
	// Applied lists the deltas applied, in order: the block given and any
	// deltas that were waiting for it.
	Applied []cid.Cid
	// Loaded lists the snapshot roots loaded.
	Loaded []cid.Cid
	// Keep lists blocks that became part of the replica's live state:
	// node/ stores and pins them (directly; they are raw blocks).
	Keep []cid.Cid
	// Rejected lists the deltas rejected as a consequence (descendants of a
	// rejected delta), besides the block given.
	Rejected []Rejection
	// HeadsChanged is set when the heads changed: announce them.
	HeadsChanged bool
}

// AddBlock offers one block of the collection: a delta, a snapshot root or
// a snapshot chunk, fetched by CID or loaded from the local store at start.
// Blocks may come in any order and more than once. A delta whose parents
// are not all applied waits for them (Missing names them); a snapshot root
// waits for its chunks. It returns an error, wrapping a Rejection, only
// when this block is refused: malformed, badly signed, for another
// collection, unauthorized, or descending from a rejected delta. Refused
// deltas are remembered (up to MaxRejected) and never applied.
func (c *Collection) AddBlock(b blocks.Block) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var res Result
	err := c.addBlock(b, &res)
	return res, err
}

// errSuperseded marks snapshot roots that add nothing (already folded in):
// remembered so they are not fetched again, but not reported as errors.
var errSuperseded = errors.New("snapshot already folded in")

func (c *Collection) addBlock(b blocks.Block, res *Result) error {
	if err := checkBlock(b); err != nil {
		return err
	}
	k := b.Cid().KeyString()
	if err, ok := c.rejected[k]; ok {
		if err == errSuperseded {
			return nil
		}
		return Rejection{Cid: b.Cid(), Err: err}
	}
	if c.knownBlock(k) {
		c.stats.Duplicates++
		return nil
	}
	data := b.RawData()
	if len(data) == 0 {
		return c.rejectBlock(b.Cid(), malformed("empty block"))
	}
	switch data[0] {
	case KindDelta:
		return c.addDelta(b.Cid(), data, res)
	case KindSnapshot:
		return c.addSnapshot(b.Cid(), data, res)
	case KindChunk:
		return c.addChunk(b.Cid(), data, res)
	}
	return c.rejectBlock(b.Cid(), malformed("block kind 0x%02x is not a delta or snapshot", data[0]))
}

func (c *Collection) knownBlock(k string) bool {
	if _, ok := c.deltas[k]; ok {
		return true
	}
	if _, ok := c.pending[k]; ok {
		return true
	}
	if _, ok := c.snaps[k]; ok {
		return true
	}
	if _, ok := c.loading[k]; ok {
		return true
	}
	if c.chunkRefs[k] > 0 {
		_, have := c.chunkData[k]
		return have
	}
	if _, ok := c.orphans[k]; ok {
		return true
	}
	return c.liveChunks[k] > 0
}

// rejectBlock remembers that a block was refused and counts it.
func (c *Collection) rejectBlock(id cid.Cid, err error) error {
	k := id.KeyString()
	c.unwant(k)
	if _, ok := c.rejected[k]; !ok {
		c.rejected[k] = err
		c.rejOrder = append(c.rejOrder, k)
		for len(c.rejOrder) > c.cfg.MaxRejected {
			delete(c.rejected, c.rejOrder[0])
			c.rejOrder = c.rejOrder[1:]
		}
	}
	if err == errSuperseded {
		return nil
	}
	c.stats.Rejected++
	if errors.Is(err, ErrUnauthorized) {
		c.stats.Unauthorized++
	}
	return Rejection{Cid: id, Err: err}
}

func (c *Collection) addDelta(id cid.Cid, data []byte, res *Result) error {
	d, err := DecodeDelta(data)
	if err != nil {
		return c.rejectBlock(id, err)
	}
	if !d.Collection.Equals(c.id) {
		return c.rejectBlock(id, fmt.Errorf("%w: %s", ErrWrongCollection, d.Collection))
	}
	if err := d.Verify(); err != nil {
		return c.rejectBlock(id, err)
	}
	k := id.KeyString()
	c.gotWanted(k)
	w, known := c.wix[d.Author]
	if known && d.Seq <= c.base[w] {
		c.stats.Covered++
		if wr := c.waits[k]; wr != nil {
			delete(c.waits, k)
			c.resolve(keysOf(wr.children), res)
		}
		return nil
	}
	if len(c.pending) >= c.cfg.MaxPending {
		return ErrPendingFull
	}
	// Deltas by authors never seen may be from anyone: they get at most an
	// eighth of the pending space, so strangers cannot crowd out writers.
	if !known {
		if c.unknownP >= c.cfg.MaxPending/8+1 {
			return ErrPendingFull
		}
		c.unknownP++
	}
	c.pending[k] = &pendingRec{c: id, d: d, data: data, since: c.now, unknown: !known}
	c.resolve([]string{k}, res)
	if err, ok := c.rejected[k]; ok {
		return Rejection{Cid: id, Err: err}
	}
	return nil
}

type linkState int

const (
	linkOK linkState = iota
	linkMissing
	linkBad
)

// linkStateOf says whether a parent link is satisfied (applied or folded
// into a snapshot), missing, or can never be satisfied.
func (c *Collection) linkStateOf(l Link) (linkState, error) {
	k := l.Cid.KeyString()
	if r := c.deltas[k]; r != nil {
		if c.wids[r.w] != l.Author || r.seq != l.Seq {
			return linkBad, fmt.Errorf("%w: %s is (%s, %d), link says (%s, %d)",
				ErrBadParent, l.Cid, c.wids[r.w], r.seq, l.Author, l.Seq)
		}
		return linkOK, nil
	}
	w, known := c.wix[l.Author]
	if known && l.Seq <= c.base[w] {
		return linkOK, nil
	}
	if err, ok := c.rejected[k]; ok && err != errSuperseded {
		return linkBad, fmt.Errorf("%w: %s: %v", ErrRejectedParent, l.Cid, err)
	}
	if known && l.Seq <= c.vv[w] {
		return linkBad, fmt.Errorf("%w: (%s, %d) is another delta", ErrBadParent, l.Author, l.Seq)
	}
	return linkMissing, nil
}

// resolve applies the pending deltas named in work whose parents are all
// satisfied, then the deltas that were waiting for those, and so on.
func (c *Collection) resolve(work []string, res *Result) {
	for len(work) > 0 {
		k := work[len(work)-1]
		work = work[:len(work)-1]
		p := c.pending[k]
		if p == nil {
			continue
		}
		ready := true
		var bad error
		for _, l := range p.d.Parents {
			st, err := c.linkStateOf(l)
			if st == linkBad {
				bad = err
				break
			}
			if st == linkMissing {
				ready = false
				c.waitFor(l, k)
			}
		}
		if bad == nil && !ready {
			continue
		}
		c.dropPending(k)
		if bad == nil {
			bad = c.apply(p, res)
		}
		if bad != nil {
			c.rejectBlock(p.c, bad)
			if len(res.Rejected) < 1000 {
				res.Rejected = append(res.Rejected, Rejection{Cid: p.c, Err: bad})
			}
		}
		// Children waiting for this delta: now applicable, or rejected in
		// turn (linkStateOf sees the rejection).
		if wr := c.waits[k]; wr != nil {
			delete(c.waits, k)
			for ch := range wr.children {
				work = append(work, ch)
			}
		}
	}
}

func (c *Collection) dropPending(k string) {
	p := c.pending[k]
	if p == nil {
		return
	}
	if p.unknown {
		c.unknownP--
	}
	delete(c.pending, k)
}

func (c *Collection) waitFor(l Link, child string) {
	k := l.Cid.KeyString()
	wr := c.waits[k]
	if wr == nil {
		wr = &waitRec{link: l, children: map[string]struct{}{}}
		c.waits[k] = wr
	}
	wr.children[child] = struct{}{}
	if _, ok := c.pending[k]; !ok {
		c.wantLink(l, "")
	}
}

// pastOf returns the causal context of a delta with these parents: the
// pointwise maximum of the parents' contexts. A parent folded into a
// snapshot contributes the snapshot's clock (an upper bound of its own).
func (c *Collection) pastOf(parents []Link) []uint64 {
	past := make([]uint64, len(c.wids))
	for _, l := range parents {
		src := c.base
		if r := c.deltas[l.Cid.KeyString()]; r != nil {
			src = r.vv
		}
		for i, v := range src {
			if v > past[i] {
				past[i] = v
			}
		}
	}
	return past
}

// apply checks a delta whose parents are all satisfied against its causal
// past and, if it passes, applies it. The checks depend only on the
// delta's causal past, so every replica decides the same way whatever the
// order of delivery.
func (c *Collection) apply(p *pendingRec, res *Result) error {
	d := p.d
	w, known := c.wix[d.Author]
	if !known {
		return fmt.Errorf("%w: %s", ErrUnauthorized, d.Author)
	}
	past := c.pastOf(d.Parents)
	if d.Seq <= c.vv[w] {
		if other, ok := c.byDot[dot{w, d.Seq}]; ok && other != p.c.KeyString() {
			first, _ := cid.Cast([]byte(other))
			if len(c.evidence) < 100 {
				c.evidence = append(c.evidence, Equivocation{Author: d.Author, Seq: d.Seq, First: first, Second: p.c})
			}
		}
		c.stats.Equivocations++
		return fmt.Errorf("%w: (%s, %d)", ErrEquivocation, d.Author, d.Seq)
	}
	if past[w] != d.Seq-1 {
		return fmt.Errorf("%w: seq %d, but the past holds the author's seq %d", ErrBadSeq, d.Seq, past[w])
	}
	if w != 0 {
		g, ok := c.grants[w]
		if !ok || past[0] < g.seq {
			return fmt.Errorf("%w: %s has no grant in the delta's past", ErrUnauthorized, d.Author)
		}
	}
	for i := range d.Ops {
		op := &d.Ops[i]
		switch op.Kind {
		case OpGrant:
			if w != 0 {
				return fmt.Errorf("op %d: %w", i, ErrGrantNotCreator)
			}
		case OpRemove:
			for _, t := range op.Tags {
				tw, ok := c.wix[t.Author]
				if !ok || t.Seq > past[tw] {
					return fmt.Errorf("op %d: %w: (%s, %d)", i, ErrUnobservedRemove, t.Author, t.Seq)
				}
			}
		}
	}

	// Apply.
	for i := range d.Ops {
		op := &d.Ops[i]
		switch op.Kind {
		case OpAdd:
			k := op.Item.KeyString()
			it := c.items[k]
			if it == nil {
				it = &itemRec{c: op.Item, hrw: itemDigest(op.Item)}
				c.items[k] = it
			}
			it.adds = append(it.adds, addRec{w: w, seq: d.Seq, idx: uint32(i), repl: op.Replication, label: op.Label})
			c.itemsV++
		case OpRemove:
			k := op.Item.KeyString()
			it := c.items[k]
			if it == nil {
				continue
			}
			kept := it.adds[:0]
			for _, a := range it.adds {
				if !tagsHave(op.Tags, c.wids[a.w], a.seq, a.idx) {
					kept = append(kept, a)
				}
			}
			it.adds = kept
			if len(kept) == 0 {
				delete(c.items, k)
			}
			c.itemsV++
		case OpGrant:
			gw := c.intern(op.Peer)
			if g, ok := c.grants[gw]; !ok || d.Seq < g.seq {
				c.grants[gw] = grantRec{seq: d.Seq, proof: p.data}
			}
			if len(past) < len(c.wids) {
				past = append(past, make([]uint64, len(c.wids)-len(past))...)
			}
		}
	}
	past[w] = d.Seq
	k := p.c.KeyString()
	rec := &deltaRec{c: p.c, w: w, seq: d.Seq, vv: past, parents: d.Parents, size: len(p.data)}
	c.deltas[k] = rec
	c.byDot[dot{w, d.Seq}] = k
	c.vv[w] = d.Seq
	// The heads are the deltas no applied delta names as a parent: exactly
	// the maximal ones, since each delta names every head its author had.
	for _, l := range d.Parents {
		delete(c.heads, l.Cid.KeyString())
	}
	c.heads[k] = d.link(p.c)
	c.stats.Applied++
	res.Applied = append(res.Applied, p.c)
	res.Keep = append(res.Keep, p.c)
	res.HeadsChanged = true
	return nil
}

// tagsHave reports whether the sorted tags hold (author, seq, idx).
func tagsHave(tags []Tag, author peer.ID, seq uint64, idx uint32) bool {
	t := Tag{Author: author, Seq: seq, Index: idx}
	i := sort.Search(len(tags), func(i int) bool { return !tagLess(tags[i], t) })
	return i < len(tags) && tags[i] == t
}

// ---- wanted blocks ----

// Missing returns the CIDs of the blocks the replica wants: parents of
// waiting deltas, chunks of snapshot roots, and heads and snapshots
// announced by peers that it does not have. node/ fetches them all at
// once (Sync does) and hands them to AddBlock.
func (c *Collection) Missing() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.missing()
}

func (c *Collection) missing() []cid.Cid {
	out := make([]cid.Cid, 0, len(c.wanted))
	for _, w := range c.wanted {
		out = append(out, w.c)
	}
	sort.Slice(out, func(i, j int) bool { return cidLess(out[i], out[j]) })
	return out
}

// want records a block to fetch unless it is known, pending or rejected.
// by is the member whose heads message claimed it ("" for blocks named by
// signed data the replica holds: parents of deltas, chunks of snapshots);
// a claim counts against the member's budget (auth.go). It reports
// whether the block is wanted now.
func (c *Collection) want(id cid.Cid, by peer.ID) bool {
	k := id.KeyString()
	if _, ok := c.rejected[k]; ok {
		return false
	}
	if c.knownBlock(k) {
		return false
	}
	if _, ok := c.wanted[k]; ok {
		return true
	}
	if by != "" && !c.mayClaim(by) {
		c.stats.OverBudget++
		return false
	}
	if len(c.wanted) >= c.cfg.MaxPending && !c.evictFor(by) {
		c.stats.WantedFull++
		return false
	}
	c.wanted[k] = wantRec{c: id, since: c.now, by: by}
	if by != "" {
		c.claimOf(by).open++
	}
	return true
}

// wantLink records the block a link names, with its (author, seq).
func (c *Collection) wantLink(l Link, by peer.ID) {
	k := l.Cid.KeyString()
	if w, ok := c.wanted[k]; ok {
		if w.seq == 0 {
			w.author, w.seq = l.Author, l.Seq
			c.wanted[k] = w
		}
		return
	}
	c.want(l.Cid, by)
	if w, ok := c.wanted[k]; ok {
		w.author, w.seq = l.Author, l.Seq
		c.wanted[k] = w
	}
}

func keysOf(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
