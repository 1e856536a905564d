package collection

import (
	"bytes"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Dot is one entry of a version vector: the highest sequence number of an
// author that a state includes. Because each author's deltas form a chain
// (each has the previous one in its past), a set of deltas closed under
// "is a parent of" is described exactly by one Dot per author.
type Dot struct {
	Author peer.ID
	Seq    uint64
}

// Snapshot is the signed root of a snapshot: it folds every delta up to
// Clock into the items listed by its chunks, so a new member loads it
// instead of the history before it, and members may drop that history.
//
// Wire form (KindSnapshot):
//
//	kind, version, collection CID, author key, time uvarint (unix ms),
//	clock [author peer ID, seq] sorted by author, heads [cid, author, seq]
//	sorted by CID, grants [encoded grant delta] sorted by bytes,
//	items uvarint, chunks [CID] in item order, signature
//
// Grants carries, for every writer, the creator-signed delta that granted
// it, so whoever loads the snapshot can check the writers (and the
// snapshot's own author) without the history those deltas came from.
type Snapshot struct {
	Collection cid.Cid
	AuthorKey  crypto.PubKey
	Author     peer.ID
	Time       uint64
	Clock      []Dot    // sorted by author, each Seq >= 1
	Heads      []Link   // the maximal deltas folded in, sorted by CID
	Grants     [][]byte // encoded deltas holding only grants, by the creator
	Items      uint64   // number of items over all chunks
	Chunks     []cid.Cid
	Signature  []byte

	body []byte
}

// Chunk holds a run of a snapshot's items, sorted by item CID; items
// continue from one chunk to the next. Chunks are not signed: the signed
// root names them by CID.
//
// Wire form (KindChunk):
//
//	kind, version, collection CID, items [item CID, adds [writer uvarint
//	(index into the root's Clock), seq, index, replication, label]]
type Chunk struct {
	Collection cid.Cid
	Items      []ChunkItem
}

// ChunkItem is one live item of a snapshot with its live adds.
type ChunkItem struct {
	Item cid.Cid
	Adds []ChunkAdd // sorted by (Writer, Seq, Index), at least one
}

// ChunkAdd is one live add of an item. Writer indexes the root's Clock.
type ChunkAdd struct {
	Writer      uint32
	Seq         uint64
	Index       uint32
	Replication int
	Label       string
}

func (s *Snapshot) encodeBody() []byte {
	var e encoder
	e.header(KindSnapshot)
	e.cid(s.Collection)
	e.bytes(marshalKey(s.AuthorKey))
	e.uvarint(s.Time)
	e.uvarint(uint64(len(s.Clock)))
	for _, d := range s.Clock {
		e.peer(d.Author)
		e.uvarint(d.Seq)
	}
	e.uvarint(uint64(len(s.Heads)))
	for _, h := range s.Heads {
		e.cid(h.Cid)
		e.peer(h.Author)
		e.uvarint(h.Seq)
	}
	e.uvarint(uint64(len(s.Grants)))
	for _, g := range s.Grants {
		e.bytes(g)
	}
	e.uvarint(s.Items)
	e.uvarint(uint64(len(s.Chunks)))
	for _, c := range s.Chunks {
		e.cid(c)
	}
	return e.b
}

func (s *Snapshot) sign(key crypto.PrivKey) error {
	s.AuthorKey = key.GetPublic()
	id, err := peer.IDFromPublicKey(s.AuthorKey)
	if err != nil {
		return fmt.Errorf("sign snapshot: %w", err)
	}
	s.Author = id
	if err := s.validate(); err != nil {
		return fmt.Errorf("sign snapshot: %w", err)
	}
	body := s.encodeBody()
	sig, err := sign(key, body)
	if err != nil {
		return fmt.Errorf("sign snapshot: %w", err)
	}
	s.body, s.Signature = body, sig
	return nil
}

// Encode returns the canonical encoding of a signed snapshot root.
func (s *Snapshot) Encode() []byte {
	body := s.body
	if body == nil {
		body = s.encodeBody()
	}
	e := encoder{b: append(make([]byte, 0, len(body)+len(s.Signature)+3), body...)}
	e.bytes(s.Signature)
	return e.b
}

// Verify checks the root's signature (not the grants: Collection does that
// against the creator's key).
func (s *Snapshot) Verify() error {
	body := s.body
	if body == nil {
		body = s.encodeBody()
	}
	if err := verify(s.AuthorKey, body, s.Signature); err != nil {
		return fmt.Errorf("snapshot by %s: %w", s.Author, err)
	}
	return nil
}

// seqOf returns the clock's entry for author, 0 if none.
func (s *Snapshot) seqOf(author peer.ID) uint64 {
	lo, hi := 0, len(s.Clock)
	for lo < hi {
		m := (lo + hi) / 2
		if s.Clock[m].Author < author {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s.Clock) && s.Clock[lo].Author == author {
		return s.Clock[lo].Seq
	}
	return 0
}

func (s *Snapshot) validate() error {
	if !s.Collection.Defined() {
		return malformed("snapshot: no collection")
	}
	if len(s.Clock) > MaxWriters {
		return tooLarge("snapshot: %d clock entries, limit %d", len(s.Clock), MaxWriters)
	}
	for i, d := range s.Clock {
		if d.Seq == 0 || d.Author == "" {
			return malformed("snapshot: clock entry %d empty", i)
		}
		if i > 0 && s.Clock[i-1].Author >= d.Author {
			return malformed("snapshot: clock not sorted by author or repeated")
		}
	}
	if len(s.Heads) > MaxHeads {
		return tooLarge("snapshot: %d heads, limit %d", len(s.Heads), MaxHeads)
	}
	for i, h := range s.Heads {
		if !isBlockCID(h.Cid) {
			return malformed("snapshot: head %d: not a CIDv1 raw sha2-256 CID", i)
		}
		if i > 0 && !cidLess(s.Heads[i-1].Cid, h.Cid) {
			return malformed("snapshot: heads not sorted by CID or repeated")
		}
		if h.Seq == 0 || h.Seq > s.seqOf(h.Author) {
			return malformed("snapshot: head %d (%s, %d) outside the clock", i, h.Author, h.Seq)
		}
	}
	if len(s.Grants) > MaxWriters {
		return tooLarge("snapshot: %d grants, limit %d", len(s.Grants), MaxWriters)
	}
	for i, g := range s.Grants {
		if len(g) == 0 || len(g) > maxProofLen {
			return malformed("snapshot: grant %d of %d bytes", i, len(g))
		}
		if i > 0 && bytes.Compare(s.Grants[i-1], g) >= 0 {
			return malformed("snapshot: grants not sorted or repeated")
		}
	}
	if len(s.Chunks) > MaxChunks {
		return tooLarge("snapshot: %d chunks, limit %d", len(s.Chunks), MaxChunks)
	}
	for i, c := range s.Chunks {
		if !isBlockCID(c) {
			return malformed("snapshot: chunk %d: not a CIDv1 raw sha2-256 CID", i)
		}
	}
	if s.Items > uint64(len(s.Chunks))*MaxChunkItems {
		return malformed("snapshot: %d items cannot fit in %d chunks", s.Items, len(s.Chunks))
	}
	if s.Items < uint64(len(s.Chunks)) {
		return malformed("snapshot: %d chunks for %d items", len(s.Chunks), s.Items)
	}
	return nil
}

// DecodeSnapshot decodes an encoded snapshot root and checks its form. It
// does not verify the signature or the grants.
func DecodeSnapshot(data []byte) (*Snapshot, error) {
	if len(data) > MaxBlockSize {
		return nil, tooLarge("snapshot: %d bytes, limit %d", len(data), MaxBlockSize)
	}
	r := decoder{b: data}
	r.header(KindSnapshot, "snapshot")
	s := &Snapshot{}
	s.Collection = r.link("snapshot collection")
	s.AuthorKey, s.Author = r.pubkey("snapshot author")
	s.Time = r.uvarint("snapshot time")
	n := r.count("snapshot clock", MaxWriters, 3)
	if n > 0 {
		s.Clock = make([]Dot, n)
	}
	for i := range s.Clock {
		s.Clock[i].Author = r.peer("clock author")
		s.Clock[i].Seq = r.uvarint("clock seq")
		if r.err != nil {
			return nil, fmt.Errorf("snapshot: clock entry %d: %w", i, r.err)
		}
	}
	n = r.count("snapshot heads", MaxHeads, 4)
	if n > 0 {
		s.Heads = make([]Link, n)
	}
	for i := range s.Heads {
		h := &s.Heads[i]
		h.Cid = r.link("head cid")
		h.Author = r.peer("head author")
		h.Seq = r.uvarint("head seq")
		if r.err != nil {
			return nil, fmt.Errorf("snapshot: head %d: %w", i, r.err)
		}
	}
	n = r.count("snapshot grants", MaxWriters, 2)
	if n > 0 {
		s.Grants = make([][]byte, n)
	}
	for i := range s.Grants {
		s.Grants[i] = append([]byte(nil), r.bytes("grant", maxProofLen)...)
		if r.err != nil {
			return nil, fmt.Errorf("snapshot: grant %d: %w", i, r.err)
		}
	}
	s.Items = r.uvarint("snapshot items")
	n = r.count("snapshot chunks", MaxChunks, 2)
	if n > 0 {
		s.Chunks = make([]cid.Cid, n)
	}
	for i := range s.Chunks {
		s.Chunks[i] = r.link("chunk cid")
		if r.err != nil {
			return nil, fmt.Errorf("snapshot: chunk %d: %w", i, r.err)
		}
	}
	bodyEnd := r.off
	s.Signature = append([]byte(nil), r.bytes("snapshot signature", maxSigLen)...)
	r.end("snapshot")
	if r.err != nil {
		return nil, r.err
	}
	if len(s.Signature) == 0 {
		return nil, malformed("snapshot: empty signature")
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	s.body = data[:bodyEnd:bodyEnd]
	return s, nil
}

// Encode returns the canonical encoding of a chunk.
func (c *Chunk) Encode() []byte {
	var e encoder
	e.header(KindChunk)
	e.cid(c.Collection)
	e.uvarint(uint64(len(c.Items)))
	for _, it := range c.Items {
		e.cid(it.Item)
		e.uvarint(uint64(len(it.Adds)))
		for _, a := range it.Adds {
			e.uvarint(uint64(a.Writer))
			e.uvarint(a.Seq)
			e.uvarint(uint64(a.Index))
			e.uvarint(uint64(a.Replication))
			e.str(a.Label)
		}
	}
	return e.b
}

func chunkAddLess(a, b ChunkAdd) bool {
	if a.Writer != b.Writer {
		return a.Writer < b.Writer
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	return a.Index < b.Index
}

// DecodeChunk decodes an encoded chunk and checks its form. Whether its
// writer indexes and sequence numbers fit the root is checked on load.
func DecodeChunk(data []byte) (*Chunk, error) {
	if len(data) > MaxBlockSize {
		return nil, tooLarge("chunk: %d bytes, limit %d", len(data), MaxBlockSize)
	}
	r := decoder{b: data}
	r.header(KindChunk, "chunk")
	c := &Chunk{}
	c.Collection = r.link("chunk collection")
	n := r.count("chunk items", MaxChunkItems, 3)
	if r.err == nil && n == 0 {
		return nil, malformed("chunk: no items")
	}
	c.Items = make([]ChunkItem, n)
	for i := range c.Items {
		it := &c.Items[i]
		it.Item = r.cid("item cid")
		m := r.count("item adds", MaxTags, 5)
		if r.err == nil && m == 0 {
			return nil, malformed("chunk: item %d: no adds", i)
		}
		it.Adds = make([]ChunkAdd, m)
		for j := range it.Adds {
			a := &it.Adds[j]
			w := r.uvarint("add writer")
			a.Seq = r.uvarint("add seq")
			idx := r.uvarint("add index")
			rep := r.uvarint("add replication")
			a.Label = r.str("add label", MaxLabelLen)
			if r.err != nil {
				return nil, fmt.Errorf("chunk: item %d: add %d: %w", i, j, r.err)
			}
			switch {
			case w >= MaxWriters:
				return nil, malformed("chunk: item %d: add %d: writer %d out of range", i, j, w)
			case a.Seq == 0:
				return nil, malformed("chunk: item %d: add %d: seq 0", i, j)
			case idx >= MaxOps:
				return nil, malformed("chunk: item %d: add %d: index %d out of range", i, j, idx)
			case rep > MaxReplication:
				return nil, malformed("chunk: item %d: add %d: replication %d above %d", i, j, rep, MaxReplication)
			}
			a.Writer, a.Index, a.Replication = uint32(w), uint32(idx), int(rep)
			if j > 0 && !chunkAddLess(it.Adds[j-1], *a) {
				return nil, malformed("chunk: item %d: adds not sorted or repeated", i)
			}
		}
		if r.err != nil {
			return nil, fmt.Errorf("chunk: item %d: %w", i, r.err)
		}
		if i > 0 && !cidLess(c.Items[i-1].Item, it.Item) {
			return nil, malformed("chunk: items not sorted by CID or repeated")
		}
	}
	r.end("chunk")
	if r.err != nil {
		return nil, r.err
	}
	return c, nil
}
