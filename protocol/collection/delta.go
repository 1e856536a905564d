package collection

import (
	"fmt"
	"sort"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Link names a delta by CID together with its author and sequence number.
// The (author, seq) pair lets a node that folded history into a snapshot
// tell a parent it already covers from one it is missing without keeping
// the CID of every delta ever written.
type Link struct {
	Cid    cid.Cid
	Author peer.ID
	Seq    uint64
}

// Tag identifies one add: the author and sequence number of its delta and
// the index of the op within the delta. A remove lists the tags it
// observed, so a concurrent add (whose tag it has not seen) survives: an
// observed-remove set.
type Tag struct {
	Author peer.ID
	Seq    uint64
	Index  uint32
}

func tagLess(a, b Tag) bool {
	if a.Author != b.Author {
		return a.Author < b.Author
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	return a.Index < b.Index
}

// OpKind is the kind of an Op.
type OpKind uint8

const (
	OpAdd    OpKind = 1 // add Item with Replication and Label
	OpRemove OpKind = 2 // remove the adds of Item named by Tags
	OpGrant  OpKind = 3 // make Peer a writer (creator only)
)

func (k OpKind) String() string {
	switch k {
	case OpAdd:
		return "add"
	case OpRemove:
		return "remove"
	case OpGrant:
		return "grant"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one change in a delta.
type Op struct {
	Kind        OpKind
	Item        cid.Cid // OpAdd, OpRemove
	Replication int     // OpAdd: copies wanted, 0 for the collection default
	Label       string  // OpAdd: optional name, at most MaxLabelLen bytes
	Tags        []Tag   // OpRemove: sorted, distinct, at least one
	Peer        peer.ID // OpGrant
}

// Delta is one signed change to a collection. It is stored as a block
// (BlockPrefix); its parents are the heads its author had applied when it
// wrote it, so deltas form a Merkle DAG.
//
// Wire form (KindDelta):
//
//	kind, version, collection CID, author key, seq uvarint, time uvarint
//	(unix ms, informational), parents [cid, author peer ID, seq] sorted by
//	CID, ops [kind byte + fields], signature
//
// with ops
//
//	add:    item CID, replication uvarint, label string
//	remove: item CID, tags [author peer ID, seq, index] sorted
//	grant:  peer ID
//
// A delta that grants holds only grants, so it stays small enough to be
// carried as a proof inside snapshots.
type Delta struct {
	Collection cid.Cid
	AuthorKey  crypto.PubKey
	Author     peer.ID // derived from AuthorKey
	Seq        uint64  // 1 for the author's first delta, then +1 each
	Time       uint64  // unix milliseconds at the author; not trusted
	Parents    []Link  // sorted by CID
	Ops        []Op
	Signature  []byte

	body []byte // encoding up to the signature, set by Decode and Sign
}

func (d *Delta) encodeBody() []byte {
	var e encoder
	e.header(KindDelta)
	e.cid(d.Collection)
	e.bytes(marshalKey(d.AuthorKey))
	e.uvarint(d.Seq)
	e.uvarint(d.Time)
	e.uvarint(uint64(len(d.Parents)))
	for _, p := range d.Parents {
		e.cid(p.Cid)
		e.peer(p.Author)
		e.uvarint(p.Seq)
	}
	e.uvarint(uint64(len(d.Ops)))
	for _, op := range d.Ops {
		e.byte1(byte(op.Kind))
		switch op.Kind {
		case OpAdd:
			e.cid(op.Item)
			e.uvarint(uint64(op.Replication))
			e.str(op.Label)
		case OpRemove:
			e.cid(op.Item)
			e.uvarint(uint64(len(op.Tags)))
			for _, t := range op.Tags {
				e.peer(t.Author)
				e.uvarint(t.Seq)
				e.uvarint(uint64(t.Index))
			}
		case OpGrant:
			e.peer(op.Peer)
		}
	}
	return e.b
}

// Sign sets AuthorKey and Author from key, checks d (parents must already
// be sorted by CID, tags too) and signs it. It keeps the signed encoding:
// do not change d afterwards.
func (d *Delta) Sign(key crypto.PrivKey) error {
	d.AuthorKey = key.GetPublic()
	id, err := peer.IDFromPublicKey(d.AuthorKey)
	if err != nil {
		return fmt.Errorf("sign delta: %w", err)
	}
	d.Author = id
	if err := d.validate(); err != nil {
		return fmt.Errorf("sign delta: %w", err)
	}
	body := d.encodeBody()
	sig, err := sign(key, body)
	if err != nil {
		return fmt.Errorf("sign delta: %w", err)
	}
	d.body, d.Signature = body, sig
	return nil
}

// Encode returns the canonical encoding of a signed delta.
func (d *Delta) Encode() []byte {
	body := d.body
	if body == nil {
		body = d.encodeBody()
	}
	e := encoder{b: append(make([]byte, 0, len(body)+len(d.Signature)+3), body...)}
	e.bytes(d.Signature)
	return e.b
}

// Verify checks the signature.
func (d *Delta) Verify() error {
	body := d.body
	if body == nil {
		body = d.encodeBody()
	}
	if err := verify(d.AuthorKey, body, d.Signature); err != nil {
		return fmt.Errorf("delta %d by %s: %w", d.Seq, d.Author, err)
	}
	return nil
}

// link returns the link naming this delta, stored under CID c.
func (d *Delta) link(c cid.Cid) Link { return Link{Cid: c, Author: d.Author, Seq: d.Seq} }

// validate checks the rules the encoding cannot express.
func (d *Delta) validate() error {
	if !d.Collection.Defined() {
		return malformed("delta: no collection")
	}
	if d.Seq == 0 {
		return malformed("delta: seq must be at least 1")
	}
	if len(d.Parents) > MaxParents {
		return tooLarge("delta: %d parents, limit %d", len(d.Parents), MaxParents)
	}
	for i, p := range d.Parents {
		if !isBlockCID(p.Cid) {
			return malformed("delta: parent %d: not a CIDv1 raw sha2-256 CID", i)
		}
		if i > 0 && !cidLess(d.Parents[i-1].Cid, p.Cid) {
			return malformed("delta: parents not sorted by CID or repeated")
		}
		if p.Seq == 0 {
			return malformed("delta: parent %d: seq 0", i)
		}
		if p.Author == d.Author && p.Seq >= d.Seq {
			return malformed("delta: parent %d: own seq %d not below %d", i, p.Seq, d.Seq)
		}
	}
	if len(d.Ops) == 0 {
		return malformed("delta: no ops")
	}
	if len(d.Ops) > MaxOps {
		return tooLarge("delta: %d ops, limit %d", len(d.Ops), MaxOps)
	}
	grants := 0
	for i, op := range d.Ops {
		if err := op.validate(); err != nil {
			return fmt.Errorf("delta: op %d: %w", i, err)
		}
		if op.Kind == OpGrant {
			grants++
		}
	}
	if grants > 0 && grants != len(d.Ops) {
		return malformed("delta: grants mixed with other ops")
	}
	return nil
}

func (op *Op) validate() error {
	switch op.Kind {
	case OpAdd:
		if !op.Item.Defined() {
			return malformed("add: no item")
		}
		if op.Replication < 0 || op.Replication > MaxReplication {
			return malformed("add: replication %d outside 0..%d", op.Replication, MaxReplication)
		}
		if len(op.Label) > MaxLabelLen {
			return tooLarge("add: label of %d bytes, limit %d", len(op.Label), MaxLabelLen)
		}
	case OpRemove:
		if !op.Item.Defined() {
			return malformed("remove: no item")
		}
		if len(op.Tags) == 0 {
			return malformed("remove: no tags")
		}
		if len(op.Tags) > MaxTags {
			return tooLarge("remove: %d tags, limit %d", len(op.Tags), MaxTags)
		}
		for i, t := range op.Tags {
			if t.Seq == 0 || t.Author == "" {
				return malformed("remove: tag %d: empty", i)
			}
			if t.Index >= MaxOps {
				return malformed("remove: tag %d: index %d out of range", i, t.Index)
			}
			if i > 0 && !tagLess(op.Tags[i-1], t) {
				return malformed("remove: tags not sorted or repeated")
			}
		}
	case OpGrant:
		if op.Peer == "" {
			return malformed("grant: no peer")
		}
	default:
		return malformed("unknown op kind %d", op.Kind)
	}
	return nil
}

// DecodeDelta decodes an encoded delta and checks its form. It does not
// verify the signature (Verify does) nor whether the author may write
// (Collection does, against the delta's causal past).
func DecodeDelta(data []byte) (*Delta, error) {
	if len(data) > MaxBlockSize {
		return nil, tooLarge("delta: %d bytes, limit %d", len(data), MaxBlockSize)
	}
	r := decoder{b: data}
	r.header(KindDelta, "delta")
	d := &Delta{}
	d.Collection = r.link("delta collection")
	d.AuthorKey, d.Author = r.pubkey("delta author")
	d.Seq = r.uvarint("delta seq")
	d.Time = r.uvarint("delta time")
	n := r.count("delta parents", MaxParents, 3)
	if n > 0 {
		d.Parents = make([]Link, n)
	}
	for i := range d.Parents {
		p := &d.Parents[i]
		p.Cid = r.link("parent cid")
		p.Author = r.peer("parent author")
		p.Seq = r.uvarint("parent seq")
		if r.err != nil {
			return nil, fmt.Errorf("delta: parent %d: %w", i, r.err)
		}
	}
	n = r.count("delta ops", MaxOps, 2)
	d.Ops = make([]Op, n)
	for i := range d.Ops {
		if err := decodeOp(&r, &d.Ops[i]); err != nil {
			return nil, fmt.Errorf("delta: op %d: %w", i, err)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("delta: %w", r.err)
	}
	bodyEnd := r.off
	d.Signature = append([]byte(nil), r.bytes("delta signature", maxSigLen)...)
	r.end("delta")
	if r.err != nil {
		return nil, r.err
	}
	if len(d.Signature) == 0 {
		return nil, malformed("delta: empty signature")
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	d.body = data[:bodyEnd:bodyEnd]
	return d, nil
}

func decodeOp(r *decoder, op *Op) error {
	op.Kind = OpKind(r.byte1("op kind"))
	switch op.Kind {
	case OpAdd:
		op.Item = r.cid("add item")
		rep := r.uvarint("add replication")
		if r.err == nil && rep > MaxReplication {
			return malformed("add: replication %d above %d", rep, MaxReplication)
		}
		op.Replication = int(rep)
		op.Label = r.str("add label", MaxLabelLen)
	case OpRemove:
		op.Item = r.cid("remove item")
		n := r.count("remove tags", MaxTags, 3)
		if n > 0 {
			op.Tags = make([]Tag, n)
		}
		for i := range op.Tags {
			t := &op.Tags[i]
			t.Author = r.peer("tag author")
			t.Seq = r.uvarint("tag seq")
			idx := r.uvarint("tag index")
			if r.err != nil {
				return fmt.Errorf("tag %d: %w", i, r.err)
			}
			if idx >= MaxOps {
				return malformed("tag %d: index %d out of range", i, idx)
			}
			t.Index = uint32(idx)
		}
	case OpGrant:
		op.Peer = r.peer("grant peer")
	default:
		if r.err == nil {
			return malformed("unknown op kind %d", op.Kind)
		}
	}
	return r.err
}

// sortLinks sorts links by CID, the wire order.
func sortLinks(ls []Link) {
	sort.Slice(ls, func(i, j int) bool { return cidLess(ls[i].Cid, ls[j].Cid) })
}
