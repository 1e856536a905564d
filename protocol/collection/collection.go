package collection

import (
	"fmt"
	"sort"
	"sync"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Collection is one member's replica of a collection: the CRDT state, the
// DAG bookkeeping, the members seen through heartbeats and the local pins.
//
// A Collection does no I/O and starts no goroutines. Its methods are safe
// for concurrent use: each takes one mutex for its whole (short) run and
// never calls out while holding it. Time advances only through Tick, so
// tests drive it with a fake clock. node/ owns the loop around it: it
// publishes what Heartbeat and Heads return, feeds received topic messages
// to HandleMessage and fetched blocks to AddBlock (or lets Sync fetch
// them through a BlockGetter), stores and pins Result.Keep and the blocks
// writes return, unpins TakeGarbage, and carries out Plan's actions,
// reporting each with PinDone or UnpinDone.
type Collection struct {
	mu sync.Mutex

	cfg     Config
	desc    *Descriptor
	id      cid.Cid
	key     crypto.PrivKey
	self    peer.ID
	now     time.Time
	started time.Time

	// Authors are interned: index 0 is the creator. Only authors of applied
	// deltas, granted peers and authors in loaded snapshots get an index, so
	// strangers cannot grow these tables.
	wix  map[peer.ID]int
	wids []peer.ID

	vv        []uint64        // per author: highest seq applied or covered
	base      []uint64        // per author: highest seq folded into loaded snapshots
	baseHeads map[string]Link // maximal deltas of the folded set

	deltas map[string]*deltaRec // applied and not folded, by CID key
	byDot  map[dot]string
	heads  map[string]Link
	grants map[int]grantRec // writer index -> earliest grant
	items  map[string]*itemRec
	itemsV uint64 // bumped on every change to items

	pending     map[string]*pendingRec
	unknownP    int                 // pending deltas whose author has no index yet
	waits       map[string]*waitRec // missing parent CID key -> children
	wanted      map[string]wantRec
	snaps       map[string]*snapRec  // loaded snapshots kept live, by root key
	loading     map[string]*snapLoad // roots waiting for their chunks
	chunkRefs   map[string]int       // chunk key -> loading roots naming it
	chunkData   map[string][]byte    // chunks received for loading roots
	liveChunks  map[string]int       // chunk key -> loaded snapshots naming it
	orphans     map[string]orphan    // chunks whose root has not come yet
	orphanBytes int
	rejected    map[string]error
	rejOrder    []string
	retiring    []retired
	garbage     []cid.Cid
	evidence    []Equivocation
	stats       Stats

	// membership.go and alloc.go
	members   map[peer.ID]*member
	live      []peer.ID
	liveV     uint64
	liveSelf  bool // whether live holds self (updateLive)
	leaving   bool
	requested time.Time // last HeadsRequest
	lastBeat  uint64
	// beatEvery is the interval the last Heartbeat announced (zero before
	// the first); maxHeard the longest any member's heartbeat announced.
	beatEvery, maxHeard time.Duration
	pins                map[string]*pinRec
	alloc               *allocation

	// auth.go
	claims    map[peer.ID]*claimRec
	strangers map[peer.ID]*stranger
	answered  map[peer.ID]time.Time // requester -> last answer scheduled for it
	answerDue bool                  // an answer is scheduled (TakeAnswer)

	// What other members announced and asked lately (HeadsHeard,
	// RequestHeard): heads digests by when last heard.
	heardHeads map[[32]byte]time.Time
	heardReqs  map[[32]byte]time.Time

	// direct.go
	lastBeatMsg    []byte                // the last Heartbeat, encoded
	directAnswered map[peer.ID]time.Time // requester -> last direct answer
}

type dot struct {
	w   int
	seq uint64
}

type deltaRec struct {
	c       cid.Cid
	w       int
	seq     uint64
	vv      []uint64 // causal context: the delta and everything before it
	parents []Link
	size    int
}

type grantRec struct {
	seq   uint64
	proof []byte // the encoded creator delta holding the grant
}

type itemRec struct {
	c    cid.Cid
	hrw  [32]byte // rendezvous digest of the item
	adds []addRec // live adds; an item with none is removed from the map
}

type addRec struct {
	w     int
	seq   uint64
	idx   uint32
	repl  int
	label string
}

type pendingRec struct {
	c       cid.Cid
	d       *Delta
	data    []byte
	since   time.Time
	unknown bool // the author had no index when it arrived
}

type waitRec struct {
	link     Link
	children map[string]struct{}
}

// wantRec is a block to fetch; author and seq are set when a link named
// it, so that it can be dropped once a snapshot folds it in.
type wantRec struct {
	c      cid.Cid
	since  time.Time
	author peer.ID
	seq    uint64
	by     peer.ID // the member whose heads message claimed it; "" for blocks signed data named
}

type retired struct {
	c  cid.Cid
	at time.Time
}

// Equivocation is evidence that an author signed two different deltas with
// the same sequence number. Both are signed, so the evidence can be shown
// to anyone. The second one seen was rejected.
type Equivocation struct {
	Author        peer.ID
	Seq           uint64
	First, Second cid.Cid
}

// Stats counts what a Collection has seen.
type Stats struct {
	Applied         uint64 // deltas applied
	Duplicates      uint64 // blocks seen again
	Covered         uint64 // deltas ignored because a loaded snapshot folds them
	Rejected        uint64 // blocks rejected, for any reason
	Unauthorized    uint64 // deltas rejected because their author may not write
	Equivocations   uint64
	SnapshotsLoaded uint64
	Heartbeats      uint64 // heartbeats accepted
	BadHeartbeats   uint64 // heartbeats refused (stale, bad signature, malformed)

	// Refusals of topic messages (auth.go).
	NotMember   uint64 // heads messages and requests from senders that are not members
	OverBudget  uint64 // claimed blocks not taken: the sender's claim budget was used up
	RateLimited uint64 // heads requests not answered: the requester was answered within AnswerInterval
	FalseClaims uint64 // claimed blocks not fetched within ClaimTimeout
	WantedFull  uint64 // wanted blocks evicted or not taken because the wanted set was full
	Answers     uint64 // answers to heads requests handed out by TakeAnswer
	// The direct exchange (direct.go): answers given, and answers taken
	// from members.
	DirectAnswers uint64
	DirectTaken   uint64
	Suppressed    uint64 // scheduled answers cancelled: another member answered alike first
	// Announcements and requests node/ did not send because another
	// member had sent the same (HeadsHeard, RequestHeard).
	HeadsSkipped    uint64
	RequestsSkipped uint64
}

// New returns the replica of the collection desc describes, for the member
// holding key, with its clock at now. The replica starts empty: load the
// blocks the node already stores with AddBlock (in any order) and fetch
// the rest with Sync.
func New(desc *Descriptor, key crypto.PrivKey, cfg Config, now time.Time) (*Collection, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if desc == nil {
		return nil, fmt.Errorf("new collection: no descriptor")
	}
	if err := desc.validate(); err != nil {
		return nil, fmt.Errorf("new collection: %w", err)
	}
	if key == nil {
		return nil, fmt.Errorf("new collection: no key")
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("new collection: key: %w", err)
	}
	if _, err := crypto.MarshalPublicKey(key.GetPublic()); err != nil {
		return nil, fmt.Errorf("new collection: key: %w", err)
	}
	c := &Collection{
		cfg:        cfg.withDefaults(),
		desc:       desc,
		id:         desc.ID(),
		key:        key,
		self:       self,
		now:        now,
		started:    now,
		wix:        map[peer.ID]int{},
		baseHeads:  map[string]Link{},
		deltas:     map[string]*deltaRec{},
		byDot:      map[dot]string{},
		heads:      map[string]Link{},
		grants:     map[int]grantRec{},
		items:      map[string]*itemRec{},
		pending:    map[string]*pendingRec{},
		waits:      map[string]*waitRec{},
		wanted:     map[string]wantRec{},
		snaps:      map[string]*snapRec{},
		loading:    map[string]*snapLoad{},
		chunkRefs:  map[string]int{},
		chunkData:  map[string][]byte{},
		liveChunks: map[string]int{},
		orphans:    map[string]orphan{},
		rejected:   map[string]error{},
		members:    map[peer.ID]*member{},
		pins:       map[string]*pinRec{},
		claims:     map[peer.ID]*claimRec{},
		strangers:  map[peer.ID]*stranger{},
		answered:   map[peer.ID]time.Time{},
		heardHeads: map[[32]byte]time.Time{},
		heardReqs:  map[[32]byte]time.Time{},

		directAnswered: map[peer.ID]time.Time{},
	}
	c.intern(desc.Creator)
	c.updateLive()
	return c, nil
}

// ID returns the collection ID (the descriptor's CID).
func (c *Collection) ID() cid.Cid { return c.id }

// Descriptor returns the collection's descriptor.
func (c *Collection) Descriptor() *Descriptor { return c.desc }

// Self returns the local member's peer ID.
func (c *Collection) Self() peer.ID { return c.self }

func (c *Collection) intern(p peer.ID) int {
	if w, ok := c.wix[p]; ok {
		return w
	}
	w := len(c.wids)
	c.wix[p] = w
	c.wids = append(c.wids, p)
	c.vv = append(c.vv, 0)
	c.base = append(c.base, 0)
	return w
}

// canWrite reports whether the local key may write now.
func (c *Collection) canWrite() bool {
	if c.self == c.desc.Creator {
		return true
	}
	w, ok := c.wix[c.self]
	if !ok {
		return false
	}
	_, ok = c.grants[w]
	return ok
}

// CanWrite reports whether the local key is the creator's or a granted
// writer's, as far as this replica knows.
func (c *Collection) CanWrite() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.canWrite()
}

// Writers returns the creator and the granted writers, sorted.
func (c *Collection) Writers() []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []peer.ID{c.desc.Creator}
	for w := range c.grants {
		if c.wids[w] != c.desc.Creator {
			out = append(out, c.wids[w])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Item is one live item of a collection.
type Item struct {
	Cid         cid.Cid
	Label       string
	Replication int // the replication asked for, 0 for the default
	Effective   int // the replication in force
}

// item attributes: concurrent adds of the same item (the only way an item
// has more than one live add) resolve to the highest replication, and the
// label of the greatest add by (seq, author, index).
func (c *Collection) itemOf(it *itemRec) Item {
	out := Item{Cid: it.c}
	var best *addRec
	for i := range it.adds {
		a := &it.adds[i]
		if a.repl > out.Replication {
			out.Replication = a.repl
		}
		if best == nil || a.seq > best.seq || (a.seq == best.seq && (c.wids[a.w] > c.wids[best.w] ||
			(a.w == best.w && a.idx > best.idx))) {
			best = a
		}
	}
	if best != nil {
		out.Label = best.label
	}
	out.Effective = out.Replication
	if out.Effective == 0 {
		out.Effective = c.desc.Replication
	}
	return out
}

// Items returns the live items sorted by CID.
func (c *Collection) Items() []Item {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Item, 0, len(c.items))
	for _, k := range c.sortedItemKeys() {
		out = append(out, c.itemOf(c.items[k]))
	}
	return out
}

// Has reports whether item is in the collection.
func (c *Collection) Has(item cid.Cid) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[item.KeyString()]
	return ok
}

// Len returns the number of live items.
func (c *Collection) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

func (c *Collection) sortedItemKeys() []string {
	keys := make([]string, 0, len(c.items))
	for k := range c.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// headLinks returns the heads sorted by CID.
func (c *Collection) headLinks() []Link {
	out := make([]Link, 0, len(c.heads))
	for _, l := range c.heads {
		out = append(out, l)
	}
	sortLinks(out)
	return out
}

// Clock returns the version vector of the replica: for each author, the
// highest sequence number applied or folded in, sorted by author.
func (c *Collection) Clock() []Dot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clockDots(c.vv)
}

func (c *Collection) clockDots(vv []uint64) []Dot {
	var out []Dot
	for w, s := range vv {
		if s > 0 {
			out = append(out, Dot{Author: c.wids[w], Seq: s})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Author < out[j].Author })
	return out
}

// Stats returns the counters.
func (c *Collection) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Equivocations returns the evidence of equivocation seen so far (at most
// the first 100).
func (c *Collection) Equivocations() []Equivocation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Equivocation(nil), c.evidence...)
}

// ---- writes ----

// AddItem is one item to add.
type AddItem struct {
	Cid         cid.Cid
	Replication int    // 0: the collection's default
	Label       string // optional
}

// Add adds items, or updates the replication and label of items already
// there (an update removes the adds it sees and adds anew). It returns the
// signed delta blocks, already applied locally: node/ stores and pins them
// and announces Heads.
func (c *Collection) Add(items ...AddItem) ([]blocks.Block, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ops []Op
	for _, it := range items {
		op := Op{Kind: OpAdd, Item: it.Cid, Replication: it.Replication, Label: it.Label}
		if err := op.validate(); err != nil {
			return nil, fmt.Errorf("add %s: %w", it.Cid, err)
		}
		if rec := c.items[it.Cid.KeyString()]; rec != nil {
			ops = append(ops, c.removeOp(rec))
		}
		ops = append(ops, op)
	}
	return c.write(ops)
}

// Remove removes items. Every item must be in the collection.
func (c *Collection) Remove(items ...cid.Cid) ([]blocks.Block, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ops []Op
	for _, it := range items {
		rec := c.items[it.KeyString()]
		if rec == nil {
			return nil, fmt.Errorf("remove %s: %w", it, ErrNoItem)
		}
		ops = append(ops, c.removeOp(rec))
	}
	return c.write(ops)
}

func (c *Collection) removeOp(rec *itemRec) Op {
	tags := make([]Tag, 0, len(rec.adds))
	for _, a := range rec.adds {
		tags = append(tags, Tag{Author: c.wids[a.w], Seq: a.seq, Index: a.idx})
	}
	sort.Slice(tags, func(i, j int) bool { return tagLess(tags[i], tags[j]) })
	if len(tags) > MaxTags {
		tags = tags[:MaxTags] // not reachable in practice: one add per concurrent writer
	}
	return Op{Kind: OpRemove, Item: rec.c, Tags: tags}
}

// Grant makes peers writers. Only the creator may grant. Peers that are
// writers already are skipped; if all are, Grant writes nothing.
func (c *Collection) Grant(peers ...peer.ID) ([]blocks.Block, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.self != c.desc.Creator {
		return nil, fmt.Errorf("grant: %w", ErrGrantNotCreator)
	}
	var ops []Op
	for _, p := range peers {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("grant %s: %w", p, err)
		}
		if w, ok := c.wix[p]; ok {
			if _, ok := c.grants[w]; ok || p == c.desc.Creator {
				continue
			}
		}
		ops = append(ops, Op{Kind: OpGrant, Peer: p})
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return c.write(ops)
}

// write signs ops into as many deltas as the limits need and applies them.
func (c *Collection) write(ops []Op) ([]blocks.Block, error) {
	if !c.canWrite() {
		return nil, ErrNotWriter
	}
	var out []blocks.Block
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n < MaxOps {
			s := opSize(&ops[n])
			if n > 0 && size+s > MaxBlockSize/2 {
				break
			}
			size += s
			n++
		}
		// Keep an update's remove and add in one delta.
		if n < len(ops) && n > 1 && ops[n-1].Kind == OpRemove && ops[n].Kind == OpAdd && ops[n].Item == ops[n-1].Item {
			n--
		}
		b, err := c.writeOne(ops[:n])
		if err != nil {
			return out, err
		}
		out = append(out, b)
		ops = ops[n:]
	}
	return out, nil
}

func opSize(op *Op) int {
	return 16 + len(op.Item.KeyString()) + len(op.Label) + len(op.Peer) + len(op.Tags)*(48)
}

func (c *Collection) writeOne(ops []Op) (blocks.Block, error) {
	w := c.intern(c.self)
	d := &Delta{
		Collection: c.id,
		Seq:        c.vv[w] + 1,
		Time:       uint64(c.now.UnixMilli()),
		Parents:    c.parentLinks(),
		Ops:        append([]Op(nil), ops...),
	}
	if err := d.Sign(c.key); err != nil {
		return nil, err
	}
	b := newBlock(d.Encode())
	var res Result
	if err := c.addBlock(b, &res); err != nil {
		return nil, fmt.Errorf("apply own delta: %w", err)
	}
	if _, ok := c.deltas[b.Cid().KeyString()]; !ok {
		return nil, fmt.Errorf("apply own delta %s: not applied", b.Cid())
	}
	return b, nil
}

// parentLinks returns the heads to use as parents, sorted, at most
// MaxParents (keeping the local author's own head, which the sequence rule
// needs in the past).
func (c *Collection) parentLinks() []Link {
	ls := c.headLinks()
	if len(ls) <= MaxParents {
		return ls
	}
	out := make([]Link, 0, MaxParents)
	for _, l := range ls {
		if l.Author == c.self {
			out = append(out, l)
		}
	}
	for _, l := range ls {
		if len(out) == MaxParents {
			break
		}
		if l.Author != c.self {
			out = append(out, l)
		}
	}
	sortLinks(out)
	return out
}
