package collection

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// chunkTarget is the size at which Snapshot starts a new chunk.
const chunkTarget = 256 << 10

type snapRec struct {
	root   cid.Cid
	s      *Snapshot
	clock  []uint64 // by local author index
	chunks []cid.Cid
	size   int // bytes of the root and the chunks
}

type snapLoad struct {
	root   cid.Cid
	s      *Snapshot
	size   int // bytes of the root
	grants map[peer.ID]grantRec
	since  time.Time
}

// Snapshot folds the replica's whole state into a signed snapshot (a root
// and its chunks), loads it locally and returns its blocks: node/ stores
// and pins them and announces Heads. The deltas it folds, and snapshots it
// supersedes, become garbage after Config.GCDelay. It returns no blocks if
// there is nothing to fold. Only writers may write snapshots.
func (c *Collection) Snapshot() ([]blocks.Block, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.canWrite() {
		return nil, fmt.Errorf("snapshot: %w", ErrNotWriter)
	}
	if len(c.deltas) == 0 && len(c.snaps) <= 1 {
		return nil, nil
	}
	clock := c.clockDots(c.vv)
	pos := make(map[int]uint32, len(clock))
	for i, d := range clock {
		pos[c.wix[d.Author]] = uint32(i)
	}
	s := &Snapshot{
		Collection: c.id,
		Time:       uint64(c.now.UnixMilli()),
		Clock:      clock,
		Heads:      c.headLinks(),
		Items:      uint64(len(c.items)),
	}
	seen := map[string]bool{}
	for _, g := range c.grants {
		if !seen[string(g.proof)] {
			seen[string(g.proof)] = true
			s.Grants = append(s.Grants, g.proof)
		}
	}
	sort.Slice(s.Grants, func(i, j int) bool { return bytes.Compare(s.Grants[i], s.Grants[j]) < 0 })

	var out []blocks.Block
	var cur Chunk
	size := 0
	flush := func() {
		if len(cur.Items) == 0 {
			return
		}
		cur.Collection = c.id
		b := newBlock(cur.Encode())
		out = append(out, b)
		s.Chunks = append(s.Chunks, b.Cid())
		cur, size = Chunk{}, 0
	}
	for _, k := range c.sortedItemKeys() {
		it := c.items[k]
		ci := ChunkItem{Item: it.c, Adds: make([]ChunkAdd, 0, len(it.adds))}
		n := len(k) + 4
		for _, a := range it.adds {
			ci.Adds = append(ci.Adds, ChunkAdd{Writer: pos[a.w], Seq: a.seq, Index: a.idx, Replication: a.repl, Label: a.label})
			n += 16 + len(a.label)
		}
		sort.Slice(ci.Adds, func(i, j int) bool { return chunkAddLess(ci.Adds[i], ci.Adds[j]) })
		if len(cur.Items) == MaxChunkItems || (size > 0 && size+n > chunkTarget) {
			flush()
		}
		cur.Items = append(cur.Items, ci)
		size += n
	}
	flush()
	if len(s.Chunks) > MaxChunks {
		return nil, fmt.Errorf("snapshot: %d chunks, limit %d", len(s.Chunks), MaxChunks)
	}
	if err := s.sign(c.key); err != nil {
		return nil, err
	}
	root := newBlock(s.Encode())
	if len(root.RawData()) > MaxBlockSize {
		return nil, fmt.Errorf("snapshot: root of %d bytes, limit %d", len(root.RawData()), MaxBlockSize)
	}
	out = append([]blocks.Block{root}, out...)
	var res Result
	for _, b := range out {
		if err := c.addBlock(b, &res); err != nil {
			return nil, fmt.Errorf("load own snapshot: %w", err)
		}
	}
	if _, ok := c.snaps[root.Cid().KeyString()]; !ok {
		return nil, fmt.Errorf("load own snapshot %s: not loaded", root.Cid())
	}
	return out, nil
}

// ShouldSnapshot reports whether this member should write a snapshot now:
// at least SnapshotThreshold deltas are kept since the last snapshot (or
// it keeps several concurrent snapshots, which one new snapshot would
// replace), the local key may write, and among the writers seen alive this
// member ranks first by rendezvous hashing (so usually one member writes
// it).
func (c *Collection) ShouldSnapshot() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if (len(c.deltas) < c.cfg.SnapshotThreshold && len(c.snaps) < 2) || !c.canWrite() {
		return false
	}
	var writers []peer.ID
	for _, p := range c.live {
		if p == c.desc.Creator {
			writers = append(writers, p)
		} else if w, ok := c.wix[p]; ok {
			if _, ok := c.grants[w]; ok {
				writers = append(writers, p)
			}
		}
	}
	if len(writers) == 0 {
		return true // leaving: no one else to ask
	}
	top := Holders(c.id, writers, 1)
	return top[0] == c.self
}

// covers reports whether one loaded snapshot already folds in everything
// s does. (A snapshot covered only by several together is still loaded:
// it lets them all go.)
func (c *Collection) covers(s *Snapshot) bool {
	for _, r := range c.snaps {
		if c.clockWithin(s.Clock, r.clock) {
			return true
		}
	}
	return false
}

func (c *Collection) clockWithin(clock []Dot, vv []uint64) bool {
	for _, d := range clock {
		w, ok := c.wix[d.Author]
		if !ok || w >= len(vv) || d.Seq > vv[w] {
			return false
		}
	}
	return true
}

// checkGrants verifies the grant proofs of a snapshot and returns the
// earliest grant of every writer.
func (c *Collection) checkGrants(s *Snapshot) (map[peer.ID]grantRec, error) {
	creatorSeq := s.seqOf(c.desc.Creator)
	out := map[peer.ID]grantRec{}
	for i, g := range s.Grants {
		d, err := DecodeDelta(g)
		if err != nil {
			return nil, fmt.Errorf("%w: grant %d: %v", ErrBadSnapshot, i, err)
		}
		switch {
		case !d.Collection.Equals(c.id):
			return nil, fmt.Errorf("%w: grant %d: %v", ErrBadSnapshot, i, ErrWrongCollection)
		case d.Author != c.desc.Creator:
			return nil, fmt.Errorf("%w: grant %d not by the creator", ErrBadSnapshot, i)
		case d.Ops[0].Kind != OpGrant:
			return nil, fmt.Errorf("%w: grant %d holds no grant", ErrBadSnapshot, i)
		case d.Seq > creatorSeq:
			return nil, fmt.Errorf("%w: grant %d outside the snapshot's clock", ErrBadSnapshot, i)
		}
		if err := d.Verify(); err != nil {
			return nil, fmt.Errorf("%w: grant %d: %v", ErrBadSnapshot, i, err)
		}
		for _, op := range d.Ops {
			if g0, ok := out[op.Peer]; !ok || d.Seq < g0.seq {
				out[op.Peer] = grantRec{seq: d.Seq, proof: g}
			}
		}
	}
	for _, d := range s.Clock {
		if d.Author == c.desc.Creator {
			continue
		}
		if _, ok := out[d.Author]; !ok {
			return nil, fmt.Errorf("%w: author %s in the clock has no grant", ErrBadSnapshot, d.Author)
		}
	}
	return out, nil
}

func (c *Collection) addSnapshot(id cid.Cid, data []byte, res *Result) error {
	s, err := DecodeSnapshot(data)
	if err != nil {
		return c.rejectBlock(id, err)
	}
	if !s.Collection.Equals(c.id) {
		return c.rejectBlock(id, fmt.Errorf("%w: %s", ErrWrongCollection, s.Collection))
	}
	if err := s.Verify(); err != nil {
		return c.rejectBlock(id, err)
	}
	grants, err := c.checkGrants(s)
	if err != nil {
		return c.rejectBlock(id, err)
	}
	if s.Author != c.desc.Creator {
		if _, ok := grants[s.Author]; !ok {
			return c.rejectBlock(id, fmt.Errorf("%w: snapshot author %s", ErrUnauthorized, s.Author))
		}
	}
	if c.covers(s) {
		return c.rejectBlock(id, errSuperseded)
	}
	k := id.KeyString()
	c.gotWanted(k)
	c.loading[k] = &snapLoad{root: id, s: s, size: len(data), grants: grants, since: c.now}
	for _, ch := range s.Chunks {
		ck := ch.KeyString()
		c.chunkRefs[ck]++
		if o, ok := c.orphans[ck]; ok {
			c.chunkData[ck] = o.data
			c.dropOrphan(ck)
		}
		if _, have := c.chunkData[ck]; !have {
			c.want(ch, "")
		}
	}
	c.finishLoads(res)
	return nil
}

// maxOrphanBytes bounds the chunks kept before their root arrives (as when
// node/ loads its stored blocks in no particular order at start).
const maxOrphanBytes = 64 << 20

func (c *Collection) addChunk(id cid.Cid, data []byte, res *Result) error {
	k := id.KeyString()
	if c.chunkRefs[k] == 0 {
		// No root names it yet: keep it a while, within bounds.
		if _, ok := c.orphans[k]; ok {
			return nil
		}
		if c.orphanBytes+len(data) > maxOrphanBytes {
			return fmt.Errorf("chunk %s: no snapshot being loaded names it", id)
		}
		c.orphans[k] = orphan{data: data, since: c.now}
		c.orphanBytes += len(data)
		return nil
	}
	c.unwant(k)
	c.chunkData[k] = data
	c.finishLoads(res)
	return nil
}

// finishLoads loads every snapshot whose chunks have all arrived.
func (c *Collection) finishLoads(res *Result) {
	for _, k := range sortedKeys(c.loading) {
		l := c.loading[k]
		complete := true
		for _, ch := range l.s.Chunks {
			if _, ok := c.chunkData[ch.KeyString()]; !ok {
				complete = false
				break
			}
		}
		if !complete {
			continue
		}
		err := c.loadSnapshot(l, res)
		c.dropLoad(k)
		if err != nil {
			c.rejectBlock(l.root, err)
			if err != errSuperseded {
				res.Rejected = append(res.Rejected, Rejection{Cid: l.root, Err: err})
			}
		}
	}
}

type orphan struct {
	data  []byte
	since time.Time
}

func (c *Collection) dropOrphan(k string) {
	if o, ok := c.orphans[k]; ok {
		c.orphanBytes -= len(o.data)
		delete(c.orphans, k)
	}
}

func (c *Collection) dropLoad(k string) {
	l := c.loading[k]
	if l == nil {
		return
	}
	delete(c.loading, k)
	for _, ch := range l.s.Chunks {
		ck := ch.KeyString()
		if c.chunkRefs[ck]--; c.chunkRefs[ck] <= 0 {
			delete(c.chunkRefs, ck)
			delete(c.chunkData, ck)
			c.unwant(ck)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// loadSnapshot checks a complete snapshot's chunks and joins its state
// into the replica's. The join is the state-based merge of an
// observed-remove set with causal contexts: an add survives if both sides
// have it, or one side has it and the other's clock has not seen it.
func (c *Collection) loadSnapshot(l *snapLoad, res *Result) error {
	s := l.s
	if c.covers(s) { // another snapshot got there first
		return errSuperseded
	}
	sw := make([]int, len(s.Clock))
	for i, d := range s.Clock {
		sw[i] = c.intern(d.Author)
	}
	sItems, size, err := c.decodeSnapItems(l, sw)
	if err != nil {
		return err
	}
	svv := make([]uint64, len(c.wids))
	for i, d := range s.Clock {
		svv[sw[i]] = d.Seq
	}
	oldvv := append([]uint64(nil), c.vv...)
	oldBase := append([]uint64(nil), c.base...)
	c.mergeSnapItems(sItems, svv, oldvv)
	for p, g := range l.grants {
		w := c.intern(p)
		if g0, ok := c.grants[w]; !ok || g.seq < g0.seq {
			c.grants[w] = g
		}
	}
	if len(svv) < len(c.wids) {
		svv = append(svv, make([]uint64, len(c.wids)-len(svv))...)
	}
	for len(oldBase) < len(c.wids) {
		oldBase = append(oldBase, 0)
	}
	for w := range c.wids {
		c.vv[w] = max(c.vv[w], svv[w])
		c.base[w] = max(c.base[w], svv[w])
	}
	c.mergeSnapHeads(s.Heads, svv, oldBase)

	// Fold: deltas the snapshot covers leave the live set.
	for k, r := range c.deltas {
		if r.seq <= c.base[r.w] {
			delete(c.deltas, k)
			delete(c.byDot, dot{r.w, r.seq})
			c.retire(r.c)
		}
	}
	// Snapshots this one supersedes.
	for k, r := range c.snaps {
		if clockLE(r.clock, svv) {
			c.dropSnap(k)
		}
	}
	rec := &snapRec{root: l.root, s: s, clock: svv, chunks: s.Chunks, size: size}
	c.snaps[l.root.KeyString()] = rec
	for _, ch := range s.Chunks {
		c.liveChunks[ch.KeyString()]++
	}
	c.stats.SnapshotsLoaded++
	res.Loaded = append(res.Loaded, l.root)
	res.Keep = append(res.Keep, l.root)
	res.Keep = append(res.Keep, s.Chunks...)
	res.HeadsChanged = true
	c.afterFold(res)
	return nil
}

// snapItem is one item of a snapshot being loaded, with its adds in this
// collection's writer numbering.
type snapItem struct {
	c    cid.Cid
	adds []addRec
}

// decodeSnapItems decodes and checks the chunks of l: each names this
// collection, items are in strictly ascending order, every add lies inside
// the snapshot's clock, and the count matches the root. sw maps the
// snapshot's writer indexes to ours. It returns the items by key and the
// snapshot's size in bytes.
func (c *Collection) decodeSnapItems(l *snapLoad, sw []int) (map[string]*snapItem, int, error) {
	s := l.s
	items := make(map[string]*snapItem, s.Items)
	var prev string
	var count uint64
	size := l.size
	for i, ch := range s.Chunks {
		data := c.chunkData[ch.KeyString()]
		size += len(data)
		chunk, err := DecodeChunk(data)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: chunk %d: %v", ErrBadSnapshot, i, err)
		}
		if !chunk.Collection.Equals(c.id) {
			return nil, 0, fmt.Errorf("%w: chunk %d: %v", ErrBadSnapshot, i, ErrWrongCollection)
		}
		for _, it := range chunk.Items {
			k := it.Item.KeyString()
			if count > 0 && k <= prev {
				return nil, 0, fmt.Errorf("%w: chunk %d: items out of order", ErrBadSnapshot, i)
			}
			prev = k
			count++
			si := &snapItem{c: it.Item, adds: make([]addRec, 0, len(it.Adds))}
			for _, a := range it.Adds {
				if int(a.Writer) >= len(s.Clock) || a.Seq > s.Clock[a.Writer].Seq {
					return nil, 0, fmt.Errorf("%w: chunk %d: add (%d, %d) outside the clock", ErrBadSnapshot, i, a.Writer, a.Seq)
				}
				si.adds = append(si.adds, addRec{w: sw[a.Writer], seq: a.Seq, idx: a.Index, repl: a.Replication, label: a.Label})
			}
			items[k] = si
		}
	}
	if count != s.Items {
		return nil, 0, fmt.Errorf("%w: root says %d items, chunks hold %d", ErrBadSnapshot, s.Items, count)
	}
	return items, size, nil
}

// hasAdd reports whether adds holds a (same writer, sequence and index).
func hasAdd(adds []addRec, a addRec) bool {
	for _, b := range adds {
		if b.w == a.w && b.seq == a.seq && b.idx == a.idx {
			return true
		}
	}
	return false
}

// mergeSnapItems merges a snapshot's items into ours: our adds that the
// snapshot has seen (its clock svv covers them) and dropped are gone, and
// its adds we have not seen (beyond our clock oldvv) are new.
func (c *Collection) mergeSnapItems(sItems map[string]*snapItem, svv, oldvv []uint64) {
	for k, it := range c.items {
		var sAdds []addRec
		if si := sItems[k]; si != nil {
			sAdds = si.adds
		}
		kept := it.adds[:0]
		for _, a := range it.adds {
			if hasAdd(sAdds, a) || a.seq > svv[a.w] {
				kept = append(kept, a)
			}
		}
		it.adds = kept
		if len(kept) == 0 {
			delete(c.items, k)
		}
	}
	for k, si := range sItems {
		it := c.items[k]
		for _, a := range si.adds {
			if a.seq <= oldvv[a.w] {
				continue // seen, and removed since (or kept above)
			}
			if it == nil {
				it = &itemRec{c: si.c, hrw: itemDigest(si.c)}
				c.items[k] = it
			}
			if !hasAdd(it.adds, a) {
				it.adds = append(it.adds, a)
			}
		}
	}
	c.itemsV++
}

// mergeSnapHeads computes the folded frontier and the heads after a snapshot
// with heads sHeadList and clock svv is merged into ours (whose base clock
// was oldBase). A link covered by a clock but not among that side's heads
// lies below one of them.
func (c *Collection) mergeSnapHeads(sHeadList []Link, svv, oldBase []uint64) {
	sHeads := make(map[string]Link, len(sHeadList))
	for _, h := range sHeadList {
		sHeads[h.Cid.KeyString()] = h
	}
	oldBaseHeads := c.baseHeads
	under := func(h Link, vv []uint64, heads map[string]Link) bool {
		w, ok := c.wix[h.Author]
		if !ok || w >= len(vv) || h.Seq > vv[w] {
			return false
		}
		_, isHead := heads[h.Cid.KeyString()]
		return !isHead
	}
	newBaseHeads := map[string]Link{}
	for k, h := range oldBaseHeads {
		if !under(h, svv, sHeads) {
			newBaseHeads[k] = h
		}
	}
	for k, h := range sHeads {
		if !under(h, oldBase, oldBaseHeads) {
			newBaseHeads[k] = h
		}
	}
	c.baseHeads = newBaseHeads
	// The new heads are the maximal deltas of the union: a candidate is not
	// maximal if either side folds it in without it being one of that
	// side's heads, or if an applied delta names it as a parent.
	named := map[string]bool{}
	for _, r := range c.deltas {
		for _, l := range r.parents {
			named[l.Cid.KeyString()] = true
		}
	}
	cands := map[string]Link{}
	for k, h := range c.heads {
		cands[k] = h
	}
	for k, h := range sHeads {
		cands[k] = h
	}
	newHeads := map[string]Link{}
	for k, h := range cands {
		if !named[k] && !under(h, svv, sHeads) && !under(h, oldBase, oldBaseHeads) {
			newHeads[k] = h
		}
	}
	c.heads = newHeads
}

// afterFold runs once a snapshot has moved the base clock: pending deltas
// now folded in are dropped, wanted links now covered are forgotten, and
// deltas waiting for folded parents may go ahead.
func (c *Collection) afterFold(res *Result) {
	for k, p := range c.pending {
		if w, ok := c.wix[p.d.Author]; ok && p.d.Seq <= c.base[w] {
			c.dropPending(k)
			c.stats.Covered++
		}
	}
	for k, w := range c.wanted {
		if w.seq > 0 {
			if st, _ := c.linkStateOf(Link{Cid: w.c, Author: w.author, Seq: w.seq}); st != linkMissing {
				c.unwant(k)
			}
		}
	}
	var retry []string
	for k, wr := range c.waits {
		if st, _ := c.linkStateOf(wr.link); st != linkMissing {
			delete(c.waits, k)
			c.unwant(k)
			retry = append(retry, keysOf(wr.children)...)
		}
	}
	sort.Strings(retry)
	c.resolve(retry, res)
}

func (c *Collection) dropSnap(k string) {
	r := c.snaps[k]
	delete(c.snaps, k)
	c.retire(r.root)
	for _, ch := range r.chunks {
		ck := ch.KeyString()
		if c.liveChunks[ck]--; c.liveChunks[ck] <= 0 {
			delete(c.liveChunks, ck)
			c.retire(ch)
		}
	}
}

func clockLE(a, b []uint64) bool {
	for i, v := range a {
		if v == 0 {
			continue
		}
		if i >= len(b) || v > b[i] {
			return false
		}
	}
	return true
}

func (c *Collection) retire(id cid.Cid) {
	if c.cfg.GCDelay <= 0 {
		c.garbage = append(c.garbage, id)
		return
	}
	c.retiring = append(c.retiring, retired{c: id, at: c.now.Add(c.cfg.GCDelay)})
}

// TakeGarbage returns, once, the blocks that left the live state (folded
// into a snapshot, or part of a superseded snapshot) and whose GCDelay
// has passed: node/ unpins them.
func (c *Collection) TakeGarbage() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.garbage
	c.garbage = nil
	return g
}

// Blocks returns every block the replica keeps live: snapshot roots and
// chunks, deltas not folded into a snapshot, and folded blocks whose
// GCDelay has not passed. It is what node/ should keep pinned.
func (c *Collection) Blocks() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cid.Cid
	for _, r := range c.snaps {
		out = append(out, r.root)
		out = append(out, r.chunks...)
	}
	for _, r := range c.deltas {
		out = append(out, r.c)
	}
	for _, r := range c.retiring {
		out = append(out, r.c)
	}
	sort.Slice(out, func(i, j int) bool { return cidLess(out[i], out[j]) })
	return out
}

// StoreSize returns the number of deltas kept after the loaded snapshots
// and the bytes of the replica's live blocks (deltas and snapshots, not
// counting folded blocks waiting for GCDelay): what the store needs for
// this collection.
func (c *Collection) StoreSize() (deltas int, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.deltas {
		bytes += r.size
	}
	for _, r := range c.snaps {
		bytes += r.size
	}
	return len(c.deltas), bytes
}
