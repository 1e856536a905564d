package collection

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// The wire encoding is a hand-written, length-prefixed binary format with
// exactly one encoding per value, so that the CID of a block and the bytes
// a signature covers are functions of the value alone:
//
//   - every message starts with a kind byte and a version byte (1);
//   - integers are unsigned LEB128 varints in their shortest form;
//   - byte strings, strings, CIDs, peer IDs and keys are a varint length
//     followed by the bytes; CIDs, peer IDs and keys must be in their
//     canonical binary form;
//   - lists are a varint count followed by the elements; lists whose order
//     carries no meaning must be sorted and free of duplicates;
//   - fields appear in a fixed order, with nothing after the last one;
//   - the signature, where there is one, is the last field and signs
//     SignaturePrefix followed by every byte before it.
//
// Decoders reject anything else, so decoding and encoding again gives back
// the same bytes (the fuzz targets check this).

// Message kinds: the first byte of every encoded message.
const (
	KindDescriptor   byte = 0x01
	KindDelta        byte = 0x02
	KindSnapshot     byte = 0x03
	KindChunk        byte = 0x04
	KindHeartbeat    byte = 0x05
	KindHeads        byte = 0x06
	KindHeadsRequest byte = 0x07
	KindDirectAnswer byte = 0x08
)

// WireVersion is the second byte of every encoded message.
const WireVersion byte = 1

// SignaturePrefix separates collection signatures from any other use of a
// node's key.
const SignaturePrefix = "weft/collection/v1\n"

// Limits. Decoders refuse larger messages and lists; writers split their
// output to stay below them.
const (
	MaxBlockSize     = 1 << 20 // deltas, snapshot roots and chunks
	MaxMessageSize   = 1 << 20 // heartbeats and heads, as published
	MaxNameLen       = 128
	MaxLabelLen      = 256
	MaxReplication   = 256
	MaxParents       = 256
	MaxOps           = 4096
	MaxTags          = 1024 // tags of one remove, adds of one snapshot item
	MaxWriters       = 4096
	MaxHeads         = 1024
	MaxSnapshots     = 64
	MaxChunks        = 1 << 14
	MaxChunkItems    = 8192
	MaxHeartbeatList = 1024 // pending or surplus items in one heartbeat
	MaxRecent        = 4096 // delta CIDs in one heads message
	maxCIDLen        = 128
	maxPeerIDLen     = 128
	maxKeyLen        = 2048
	maxSigLen        = 2048
	maxNonceLen      = 64
	maxProofLen      = 64 << 10
)

// BlockPrefix is the CID prefix of every block this package writes:
// CIDv1, raw codec, sha2-256. Links between blocks live inside the
// encoding, so no IPLD codec follows them: node/ pins each live block
// directly (Collection.Blocks) and unpins what Collection.TakeGarbage
// returns.
var BlockPrefix = cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: 32}

func newBlock(data []byte) blocks.Block {
	c, err := BlockPrefix.Sum(data)
	if err != nil {
		panic(fmt.Sprintf("collection: hashing a block: %v", err)) // sha2-256 cannot fail
	}
	b, _ := blocks.NewBlockWithCid(data, c)
	return b
}

func isBlockCID(c cid.Cid) bool {
	return c.Defined() && c.Prefix() == BlockPrefix
}

// checkBlock verifies that b's CID has BlockPrefix and hashes its data.
func checkBlock(b blocks.Block) error {
	if !isBlockCID(b.Cid()) {
		return fmt.Errorf("%w: %s is not a CIDv1 raw sha2-256 CID", ErrBadBlock, b.Cid())
	}
	c, err := BlockPrefix.Sum(b.RawData())
	if err != nil || !c.Equals(b.Cid()) {
		return fmt.Errorf("%w: %s", ErrBadBlock, b.Cid())
	}
	return nil
}

// ---- encoder ----

type encoder struct{ b []byte }

func (e *encoder) header(kind byte) { e.b = append(e.b, kind, WireVersion) }
func (e *encoder) byte1(v byte)     { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) fixed(v []byte)   { e.b = append(e.b, v...) }
func (e *encoder) bytes(v []byte)   { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) str(v string)     { e.uvarint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) cid(c cid.Cid)    { e.str(c.KeyString()) }
func (e *encoder) peer(p peer.ID)   { e.str(string(p)) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// ---- decoder ----

// decoder reads a message. The first error sticks; later reads return zero
// values, so a caller checks d.err once per element or at the end.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) failf(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(format, args...)
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) header(kind byte, what string) {
	if len(d.b) < 2 {
		d.failf("%s: truncated header", what)
		return
	}
	if d.b[0] != kind {
		d.failf("%s: kind byte is 0x%02x, want 0x%02x", what, d.b[0], kind)
		return
	}
	if d.b[1] != WireVersion {
		d.failf("%s: unsupported version %d", what, d.b[1])
		return
	}
	d.off = 2
}

func (d *decoder) end(what string) {
	if d.err == nil && d.off != len(d.b) {
		d.failf("%s: %d trailing byte(s)", what, len(d.b)-d.off)
	}
}

func (d *decoder) byte1(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.failf("%s: truncated", field)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.failf("%s: truncated varint", field)
		return 0
	case n < 0:
		d.failf("%s: varint overflows 64 bits", field)
		return 0
	case n > 1 && d.b[d.off+n-1] == 0:
		d.failf("%s: varint not in shortest form", field)
		return 0
	}
	d.off += n
	return v
}

// count reads a list length, refusing more than max elements or more than
// the remaining bytes could hold at minSize bytes each (so a forged count
// cannot make the caller allocate).
func (d *decoder) count(field string, max, minSize int) int {
	v := d.uvarint(field + " count")
	if d.err != nil {
		return 0
	}
	if v > uint64(max) {
		d.err = tooLarge("%s: %d elements, limit %d", field, v, max)
		return 0
	}
	if v*uint64(minSize) > uint64(d.remaining()) {
		d.failf("%s: %d elements cannot fit in %d bytes", field, v, d.remaining())
		return 0
	}
	return int(v)
}

func (d *decoder) fixed(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if d.remaining() < n {
		d.failf("%s: truncated", field)
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) bytes(field string, max int) []byte {
	l := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	if l > uint64(max) {
		d.err = tooLarge("%s: %d bytes, limit %d", field, l, max)
		return nil
	}
	return d.fixed(field, int(l))
}

func (d *decoder) str(field string, max int) string {
	b := d.bytes(field, max)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.failf("%s: not valid UTF-8", field)
		return ""
	}
	return string(b)
}

// cid reads any CID in canonical binary form (items may be CIDv0).
func (d *decoder) cid(field string) cid.Cid {
	b := d.bytes(field, maxCIDLen)
	if d.err != nil {
		return cid.Undef
	}
	c, err := cid.Cast(b)
	if err != nil {
		d.failf("%s: %v", field, err)
		return cid.Undef
	}
	if c.KeyString() != string(b) {
		d.failf("%s: CID not in canonical form", field)
		return cid.Undef
	}
	return c
}

// link reads the CID of a block of this package (BlockPrefix).
func (d *decoder) link(field string) cid.Cid {
	c := d.cid(field)
	if d.err == nil && c.Prefix() != BlockPrefix {
		d.failf("%s: %s is not a CIDv1 raw sha2-256 CID", field, c)
		return cid.Undef
	}
	return c
}

func (d *decoder) peer(field string) peer.ID {
	b := d.bytes(field, maxPeerIDLen)
	if d.err != nil {
		return ""
	}
	id, err := peer.IDFromBytes(b)
	if err != nil {
		d.failf("%s: %v", field, err)
		return ""
	}
	if string(id) != string(b) {
		d.failf("%s: peer ID not in canonical form", field)
		return ""
	}
	return id
}

// pubkey reads a libp2p public key (protobuf form) and the peer ID it gives.
func (d *decoder) pubkey(field string) (crypto.PubKey, peer.ID) {
	b := d.bytes(field, maxKeyLen)
	if d.err != nil {
		return nil, ""
	}
	k, err := crypto.UnmarshalPublicKey(b)
	if err != nil {
		d.failf("%s: %v", field, err)
		return nil, ""
	}
	again, err := crypto.MarshalPublicKey(k)
	if err != nil || !bytes.Equal(again, b) {
		d.failf("%s: key not in canonical form", field)
		return nil, ""
	}
	id, err := peer.IDFromPublicKey(k)
	if err != nil {
		d.failf("%s: %v", field, err)
		return nil, ""
	}
	return k, id
}

// ---- signatures ----

func signingBytes(body []byte) []byte {
	out := make([]byte, 0, len(SignaturePrefix)+len(body))
	out = append(out, SignaturePrefix...)
	return append(out, body...)
}

func sign(key crypto.PrivKey, body []byte) ([]byte, error) {
	sig, err := key.Sign(signingBytes(body))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

func verify(key crypto.PubKey, body, sig []byte) error {
	if key == nil {
		return fmt.Errorf("%w: no key", ErrBadSignature)
	}
	ok, err := key.Verify(signingBytes(body), sig)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}

func marshalKey(k crypto.PubKey) []byte {
	b, err := crypto.MarshalPublicKey(k)
	if err != nil {
		panic(fmt.Sprintf("collection: marshal public key: %v", err))
	}
	return b
}

// cidLess orders CIDs by their binary form, the order of every sorted CID
// list on the wire.
func cidLess(a, b cid.Cid) bool { return a.KeyString() < b.KeyString() }
