package collection

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Heartbeat says that a member is alive and what it holds. Members publish
// one every HeartbeatInterval on the collection's topic.
//
// Instead of listing every item it holds, a member reports a digest of the
// items it computes as allocated to itself, and the exceptions: Pending
// (allocated, not pinned yet) and Surplus (pinned, no longer allocated,
// waiting for the new holders). A receiver that computes the same
// allocation for the member (equal digest) knows exactly what the member
// has pinned; one that does not treats only Surplus as confirmed. So a
// steady-state heartbeat stays small however many items there are.
//
// A member's heartbeats come more seldom as its collection grows (see
// Config.HeartbeatRate); a heartbeat that comes later than the receiver's
// HeartbeatInterval says when the next one is due (Interval), and the
// receiver measures that member's silence against it.
//
// Heartbeats are signed by the member's key inside the message, so they
// can be checked whatever carried them (gossipsub's own signature covers
// the hop, not a relay or a replay). A heartbeat must be newer (Time) than
// the last one from the same member; liveness is measured with the
// receiver's clock.
//
// Wire form (KindHeartbeat):
//
//	kind, version, collection CID, member key, time uvarint (unix ns),
//	flags byte (1 leaving, 2 lists truncated, 4 interval follows),
//	[interval uvarint (milliseconds), with flag 4], allocated digest [32],
//	pinned uvarint, pending [item CID] sorted, surplus [item CID] sorted,
//	signature
type Heartbeat struct {
	Collection cid.Cid
	MemberKey  crypto.PubKey
	Member     peer.ID
	Time       uint64 // unix nanoseconds at the member
	Leaving    bool   // the member is leaving: allocate nothing to it
	Truncated  bool   // Pending or Surplus was cut at MaxHeartbeatList
	// Interval is how long until the member's next heartbeat, in whole
	// milliseconds up to MaxHeartbeatInterval; zero (not sent) means the
	// receiver's own HeartbeatInterval.
	Interval  time.Duration
	Allocated [32]byte
	Pinned    uint64 // items of the collection the member has pinned
	Pending   []cid.Cid
	Surplus   []cid.Cid
	Signature []byte

	body []byte
}

const (
	flagLeaving   = 1
	flagTruncated = 2
	flagInterval  = 4
)

// MaxHeartbeatInterval bounds the Interval a heartbeat may announce.
const MaxHeartbeatInterval = time.Hour

func (h *Heartbeat) encodeBody() []byte {
	var e encoder
	e.header(KindHeartbeat)
	e.cid(h.Collection)
	e.bytes(marshalKey(h.MemberKey))
	e.uvarint(h.Time)
	var flags byte
	if h.Leaving {
		flags |= flagLeaving
	}
	if h.Truncated {
		flags |= flagTruncated
	}
	if h.Interval > 0 {
		flags |= flagInterval
	}
	e.byte1(flags)
	if h.Interval > 0 {
		e.uvarint(uint64(h.Interval / time.Millisecond))
	}
	e.fixed(h.Allocated[:])
	e.uvarint(h.Pinned)
	e.uvarint(uint64(len(h.Pending)))
	for _, c := range h.Pending {
		e.cid(c)
	}
	e.uvarint(uint64(len(h.Surplus)))
	for _, c := range h.Surplus {
		e.cid(c)
	}
	return e.b
}

// Sign sets MemberKey and Member to key's and signs the heartbeat. Members
// get their heartbeats from Collection.Heartbeat; Sign is for tools that
// speak the protocol without a replica (node/adversary).
func (h *Heartbeat) Sign(key crypto.PrivKey) error { return h.sign(key) }

func (h *Heartbeat) sign(key crypto.PrivKey) error {
	h.MemberKey = key.GetPublic()
	id, err := peer.IDFromPublicKey(h.MemberKey)
	if err != nil {
		return fmt.Errorf("sign heartbeat: %w", err)
	}
	h.Member = id
	body := h.encodeBody()
	sig, err := sign(key, body)
	if err != nil {
		return fmt.Errorf("sign heartbeat: %w", err)
	}
	h.body, h.Signature = body, sig
	return nil
}

// Encode returns the canonical encoding of a signed heartbeat.
func (h *Heartbeat) Encode() []byte {
	body := h.body
	if body == nil {
		body = h.encodeBody()
	}
	e := encoder{b: append(make([]byte, 0, len(body)+len(h.Signature)+3), body...)}
	e.bytes(h.Signature)
	return e.b
}

// Verify checks the signature.
func (h *Heartbeat) Verify() error {
	body := h.body
	if body == nil {
		body = h.encodeBody()
	}
	if err := verify(h.MemberKey, body, h.Signature); err != nil {
		return fmt.Errorf("heartbeat from %s: %w", h.Member, err)
	}
	return nil
}

func decodeSortedCIDs(r *decoder, field string, max int) []cid.Cid {
	n := r.count(field, max, 2)
	if n == 0 {
		return nil
	}
	out := make([]cid.Cid, n)
	for i := range out {
		out[i] = r.cid(field)
		if r.err != nil {
			return nil
		}
		if i > 0 && !cidLess(out[i-1], out[i]) {
			r.failf("%s: not sorted or repeated", field)
			return nil
		}
	}
	return out
}

// DecodeHeartbeat decodes an encoded heartbeat and checks its form. It
// does not verify the signature.
func DecodeHeartbeat(data []byte) (*Heartbeat, error) {
	if len(data) > MaxMessageSize {
		return nil, tooLarge("heartbeat: %d bytes, limit %d", len(data), MaxMessageSize)
	}
	r := decoder{b: data}
	r.header(KindHeartbeat, "heartbeat")
	h := &Heartbeat{}
	h.Collection = r.link("heartbeat collection")
	h.MemberKey, h.Member = r.pubkey("heartbeat member")
	h.Time = r.uvarint("heartbeat time")
	flags := r.byte1("heartbeat flags")
	if r.err == nil && flags&^(flagLeaving|flagTruncated|flagInterval) != 0 {
		return nil, malformed("heartbeat: unknown flags 0x%02x", flags)
	}
	h.Leaving, h.Truncated = flags&flagLeaving != 0, flags&flagTruncated != 0
	if flags&flagInterval != 0 {
		ms := r.uvarint("heartbeat interval")
		if r.err == nil && (ms == 0 || ms > uint64(MaxHeartbeatInterval/time.Millisecond)) {
			return nil, malformed("heartbeat: interval %d ms out of range 1..%d", ms, MaxHeartbeatInterval/time.Millisecond)
		}
		h.Interval = time.Duration(ms) * time.Millisecond
	}
	copy(h.Allocated[:], r.fixed("heartbeat allocated digest", 32))
	h.Pinned = r.uvarint("heartbeat pinned")
	h.Pending = decodeSortedCIDs(&r, "heartbeat pending", MaxHeartbeatList)
	h.Surplus = decodeSortedCIDs(&r, "heartbeat surplus", MaxHeartbeatList)
	bodyEnd := r.off
	h.Signature = append([]byte(nil), r.bytes("heartbeat signature", maxSigLen)...)
	r.end("heartbeat")
	if r.err != nil {
		return nil, r.err
	}
	if len(h.Signature) == 0 {
		return nil, malformed("heartbeat: empty signature")
	}
	h.body = data[:bodyEnd:bodyEnd]
	return h, nil
}

// Heads announces a member's view of the collection: the snapshots it
// keeps and its heads, and, in answer to a HeadsRequest, the CIDs of every
// delta it keeps after those snapshots (Recent), so a late joiner fetches
// the whole recent history in one round instead of walking the DAG one
// parent at a time.
//
// Heads messages are hints and are not signed: everything they name is
// fetched by CID and checked (signatures, authorization) before use, and
// gossipsub signs the message itself.
//
// Wire form (KindHeads):
//
//	kind, version, collection CID, snapshots [CID] sorted,
//	heads [cid, author, seq] sorted by CID, recent [CID] sorted
type Heads struct {
	Collection cid.Cid
	Snapshots  []cid.Cid
	Heads      []Link
	Recent     []cid.Cid
}

// Encode returns the canonical encoding.
func (h *Heads) Encode() []byte {
	var e encoder
	e.header(KindHeads)
	e.cid(h.Collection)
	e.uvarint(uint64(len(h.Snapshots)))
	for _, c := range h.Snapshots {
		e.cid(c)
	}
	e.uvarint(uint64(len(h.Heads)))
	for _, l := range h.Heads {
		e.cid(l.Cid)
		e.peer(l.Author)
		e.uvarint(l.Seq)
	}
	e.uvarint(uint64(len(h.Recent)))
	for _, c := range h.Recent {
		e.cid(c)
	}
	return e.b
}

// DecodeHeads decodes an encoded heads message and checks its form.
func DecodeHeads(data []byte) (*Heads, error) {
	if len(data) > MaxMessageSize {
		return nil, tooLarge("heads: %d bytes, limit %d", len(data), MaxMessageSize)
	}
	r := decoder{b: data}
	r.header(KindHeads, "heads")
	h := &Heads{}
	h.Collection = r.link("heads collection")
	h.Snapshots = decodeSortedLinks(&r, "heads snapshots", MaxSnapshots)
	n := r.count("heads heads", MaxHeads, 4)
	if n > 0 {
		h.Heads = make([]Link, n)
	}
	for i := range h.Heads {
		l := &h.Heads[i]
		l.Cid = r.link("head cid")
		l.Author = r.peer("head author")
		l.Seq = r.uvarint("head seq")
		if r.err != nil {
			return nil, fmt.Errorf("heads: head %d: %w", i, r.err)
		}
		if l.Seq == 0 {
			return nil, malformed("heads: head %d: seq 0", i)
		}
		if i > 0 && !cidLess(h.Heads[i-1].Cid, l.Cid) {
			return nil, malformed("heads: heads not sorted by CID or repeated")
		}
	}
	h.Recent = decodeSortedLinks(&r, "heads recent", MaxRecent)
	r.end("heads")
	if r.err != nil {
		return nil, r.err
	}
	return h, nil
}

func decodeSortedLinks(r *decoder, field string, max int) []cid.Cid {
	out := decodeSortedCIDs(r, field, max)
	for _, c := range out {
		if c.Prefix() != BlockPrefix {
			r.failf("%s: %s is not a CIDv1 raw sha2-256 CID", field, c)
			return nil
		}
	}
	return out
}

// HeadsRequest asks the topic's members for their Heads at once, as a node
// does when it joins or reconnects. Digest is the requester's HeadsDigest:
// members with the same digest have nothing to tell it and stay silent.
//
// Wire form (KindHeadsRequest): kind, version, collection CID, digest [32]
type HeadsRequest struct {
	Collection cid.Cid
	Digest     [32]byte
}

// Encode returns the canonical encoding.
func (q *HeadsRequest) Encode() []byte {
	var e encoder
	e.header(KindHeadsRequest)
	e.cid(q.Collection)
	e.fixed(q.Digest[:])
	return e.b
}

// DecodeHeadsRequest decodes an encoded heads request.
func DecodeHeadsRequest(data []byte) (*HeadsRequest, error) {
	if len(data) > MaxMessageSize {
		return nil, tooLarge("heads request: %d bytes", len(data))
	}
	r := decoder{b: data}
	r.header(KindHeadsRequest, "heads request")
	q := &HeadsRequest{}
	q.Collection = r.link("heads request collection")
	copy(q.Digest[:], r.fixed("heads request digest", 32))
	r.end("heads request")
	if r.err != nil {
		return nil, r.err
	}
	return q, nil
}

// headsDigest hashes sorted snapshot CIDs and sorted head CIDs.
func headsDigest(snaps []cid.Cid, heads []Link) [32]byte {
	h := sha256.New()
	var e encoder
	e.uvarint(uint64(len(snaps)))
	for _, c := range snaps {
		e.cid(c)
	}
	e.uvarint(uint64(len(heads)))
	for _, l := range heads {
		e.cid(l.Cid)
	}
	h.Write(e.b)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
