package collection

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

func sampleDelta(t testing.TB) *Delta {
	key, id := testKey(t, 1)
	_, other := testKey(t, 2)
	coll := newBlock([]byte("collection")).Cid()
	p1 := newBlock([]byte("p1")).Cid()
	p2 := newBlock([]byte("p2")).Cid()
	parents := []Link{{Cid: p1, Author: id, Seq: 3}, {Cid: p2, Author: other, Seq: 9}}
	sortLinks(parents)
	tags := []Tag{{Author: id, Seq: 2, Index: 0}, {Author: other, Seq: 1, Index: 5}}
	if !tagLess(tags[0], tags[1]) {
		tags[0], tags[1] = tags[1], tags[0]
	}
	d := &Delta{
		Collection: coll, Seq: 4, Time: 1700000000000, Parents: parents,
		Ops: []Op{
			{Kind: OpRemove, Item: itemCID(1), Tags: tags},
			{Kind: OpAdd, Item: itemCID(1), Replication: 5, Label: "ünïcode label"},
			{Kind: OpAdd, Item: itemCID(2)},
		},
	}
	if err := d.Sign(key); err != nil {
		t.Fatal(err)
	}
	return d
}

func sampleHeartbeat(t testing.TB) *Heartbeat {
	key, _ := testKey(t, 3)
	h := &Heartbeat{
		Collection: newBlock([]byte("collection")).Cid(), Time: 123456789, Leaving: true,
		Pinned: 7, Pending: []cid.Cid{itemCID(1)}, Surplus: []cid.Cid{itemCID(2), itemCID(3)},
	}
	if !cidLess(h.Surplus[0], h.Surplus[1]) {
		h.Surplus[0], h.Surplus[1] = h.Surplus[1], h.Surplus[0]
	}
	h.Allocated[0] = 0xAB
	if err := h.sign(key); err != nil {
		t.Fatal(err)
	}
	return h
}

func sampleSnapshot(t testing.TB) (*Snapshot, *Chunk) {
	creator, cid1 := testKey(t, 1)
	_, w := testKey(t, 2)
	d := testDescriptor(t, creator, 3)
	c := newReplica(t, d, creator, fastConfig())
	mustAdd(t, c, addItems(1, 2, 3)...)
	if _, err := c.Grant(w); err != nil {
		t.Fatal(err)
	}
	_ = cid1
	bs, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeSnapshot(bs[0].RawData())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := DecodeChunk(bs[1].RawData())
	if err != nil {
		t.Fatal(err)
	}
	return s, ch
}

func TestWireRoundTrip(t *testing.T) {
	d := sampleDelta(t)
	enc := d.Encode()
	got, err := DecodeDelta(enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Encode(), enc) {
		t.Fatal("delta does not re-encode to the same bytes")
	}
	if got.Author != d.Author || got.Seq != 4 || len(got.Ops) != 3 || got.Ops[1].Label != "ünïcode label" || got.Ops[1].Replication != 5 {
		t.Fatalf("decoded delta differs: %+v", got)
	}

	h := sampleHeartbeat(t)
	hb, err := DecodeHeartbeat(h.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Verify(); err != nil {
		t.Fatal(err)
	}
	if !hb.Leaving || hb.Truncated || hb.Pinned != 7 || len(hb.Surplus) != 2 || hb.Allocated[0] != 0xAB {
		t.Fatalf("decoded heartbeat differs: %+v", hb)
	}

	h.Interval = 50*time.Second + 7*time.Millisecond
	if err := h.sign(mustKey(t, 3)); err != nil {
		t.Fatal(err)
	}
	if hb, err = DecodeHeartbeat(h.Encode()); err != nil || hb.Verify() != nil || hb.Interval != h.Interval {
		t.Fatalf("heartbeat with an interval: %v, %+v", err, hb)
	}

	s, ch := sampleSnapshot(t)
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	s2, err := DecodeSnapshot(s.Encode())
	if err != nil || !bytes.Equal(s2.Encode(), s.Encode()) {
		t.Fatalf("snapshot round trip: %v", err)
	}
	if len(s.Grants) != 1 || s.Items != 3 || len(s.Chunks) != 1 || len(s.Heads) != 1 {
		t.Fatalf("snapshot: %+v", s)
	}
	ch2, err := DecodeChunk(ch.Encode())
	if err != nil || !bytes.Equal(ch2.Encode(), ch.Encode()) || len(ch2.Items) != 3 {
		t.Fatalf("chunk round trip: %v", err)
	}

	hd := &Heads{Collection: s.Collection, Snapshots: []cid.Cid{s.Chunks[0]}, Heads: s.Heads, Recent: []cid.Cid{s.Heads[0].Cid}}
	hd2, err := DecodeHeads(hd.Encode())
	if err != nil || !bytes.Equal(hd2.Encode(), hd.Encode()) {
		t.Fatalf("heads round trip: %v", err)
	}
	q := &HeadsRequest{Collection: s.Collection, Digest: [32]byte{1, 2, 3}}
	q2, err := DecodeHeadsRequest(q.Encode())
	if err != nil || q2.Digest != q.Digest {
		t.Fatalf("heads request round trip: %v", err)
	}

	desc := testDescriptor(t, mustKey(t, 9), 3)
	desc2, err := DecodeDescriptor(desc.Encode())
	if err != nil || !desc2.ID().Equals(desc.ID()) || desc2.Creator != desc.Creator {
		t.Fatalf("descriptor round trip: %v", err)
	}
}

func TestSignatureCoversEveryByte(t *testing.T) {
	enc := sampleDelta(t).Encode()
	sigStart := len(enc) - 64 - 1 // ed25519: 64-byte signature, 1-byte length
	for i := 2; i < sigStart; i++ {
		mut := bytes.Clone(enc)
		mut[i] ^= 0x01
		d, err := DecodeDelta(mut)
		if err != nil {
			continue // no longer well-formed: fine
		}
		if d.Verify() == nil {
			t.Fatalf("flipping byte %d kept the signature valid", i)
		}
	}
	hb := sampleHeartbeat(t).Encode()
	mut := bytes.Clone(hb)
	mut[len(mut)-70] ^= 1
	if h, err := DecodeHeartbeat(mut); err == nil && h.Verify() == nil {
		t.Fatal("tampered heartbeat verified")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := sampleDelta(t).Encode()
	hb := sampleHeartbeat(t).Encode()
	withByte := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	// A delta whose parents are out of order: swap the order by re-encoding.
	unsorted := sampleDelta(t)
	unsorted.Parents[0], unsorted.Parents[1] = unsorted.Parents[1], unsorted.Parents[0]
	unsortedEnc := append(unsorted.encodeBody(), 1, 0)
	mixedGrant := sampleDelta(t)
	mixedGrant.Ops = append(mixedGrant.Ops, Op{Kind: OpGrant, Peer: mixedGrant.Author})
	mixedEnc := append(mixedGrant.encodeBody(), 1, 0)

	cases := []struct {
		name   string
		decode func([]byte) error
		data   []byte
		want   error
		msg    string
	}{
		{"empty", decDelta, nil, ErrMalformed, "truncated header"},
		{"wrong kind", decDelta, hb, ErrMalformed, "kind byte"},
		{"wrong version", decDelta, withByte(good, 1, 9), ErrMalformed, "version"},
		{"trailing byte", decDelta, append(bytes.Clone(good), 0), ErrMalformed, "trailing"},
		{"truncated", decDelta, good[:len(good)-10], ErrMalformed, "truncated"},
		{"too large", decDelta, make([]byte, MaxBlockSize+1), ErrTooLarge, ""},
		{"parents unsorted", decDelta, unsortedEnc, ErrMalformed, "sorted"},
		{"grant mixed", decDelta, mixedEnc, ErrMalformed, "grants mixed"},
		{"non-minimal varint", decDelta, nonMinimal(), ErrMalformed, "shortest"},
		{"huge count", decDelta, hugeCount(t), ErrTooLarge, "limit"},
		{"heartbeat flags", decHeartbeat, withByte(hb, flagsOffset(t, hb), 0x80), ErrMalformed, "flags"},
		{"heartbeat trailing", decHeartbeat, append(bytes.Clone(hb), 1), ErrMalformed, "trailing"},
		{"heartbeat interval 0", decHeartbeat, withInterval(t, hb, 0), ErrMalformed, "interval 0 ms"},
		{"heartbeat interval over an hour", decHeartbeat, withInterval(t, hb, uint64(MaxHeartbeatInterval/time.Millisecond)+1), ErrMalformed, "out of range"},
		{"snapshot garbage", decSnapshot, []byte{KindSnapshot, 1, 0xff}, ErrMalformed, ""},
		{"chunk empty", decChunk, []byte{KindChunk, 1}, ErrMalformed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func decDelta(b []byte) error     { _, err := DecodeDelta(b); return err }
func decHeartbeat(b []byte) error { _, err := DecodeHeartbeat(b); return err }
func decSnapshot(b []byte) error  { _, err := DecodeSnapshot(b); return err }
func decChunk(b []byte) error     { _, err := DecodeChunk(b); return err }

// nonMinimal is a delta header whose collection-length varint is padded.
func nonMinimal() []byte { return []byte{KindDelta, 1, 0x80 | 36, 0x00} }

// hugeCount is a delta with a valid prefix up to an absurd parent count.
func hugeCount(t testing.TB) []byte {
	var e encoder
	e.header(KindDelta)
	e.cid(newBlock([]byte("c")).Cid())
	k, _ := testKey(t, 1)
	e.bytes(marshalKey(k.GetPublic()))
	e.uvarint(1)
	e.uvarint(1)
	e.uvarint(1 << 40)
	return e.b
}

// withInterval is hb with flag 4 set and ms written as its interval.
func withInterval(t testing.TB, hb []byte, ms uint64) []byte {
	i := flagsOffset(t, hb)
	var e encoder
	e.uvarint(ms)
	out := append(bytes.Clone(hb[:i]), hb[i]|flagInterval)
	out = append(out, e.b...)
	return append(out, hb[i+1:]...)
}

func flagsOffset(t testing.TB, hb []byte) int {
	h, err := DecodeHeartbeat(hb)
	if err != nil {
		t.Fatal(err)
	}
	var e encoder
	e.header(KindHeartbeat)
	e.cid(h.Collection)
	e.bytes(marshalKey(h.MemberKey))
	e.uvarint(h.Time)
	return len(e.b)
}
