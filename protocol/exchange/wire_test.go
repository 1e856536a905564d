package exchange

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

func rawCid(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

func TestRequestRoundTrip(t *testing.T) {
	a, b := rawCid("a"), rawCid("b")
	for _, r := range []Request{
		{Wants: []Want{{Cid: a, Scope: DAG()}}},
		{Wants: []Want{{Cid: a, Scope: Block()}, {Cid: b, Scope: DAG()}}, Limit: 16 << 20},
		{Wants: []Want{{Cid: a, Scope: Range(0, -1)}}},
		{Wants: []Want{{Cid: a, Scope: Range(10, 0)}}},
		{Wants: []Want{{Cid: a, Scope: Range(1<<40, 5)}}},
		{Wants: []Want{{Cid: a, Scope: DAG()}}, Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	} {
		var buf bytes.Buffer
		if err := WriteRequest(&buf, r); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRequest(bufio.NewReader(&buf))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRequestRejects(t *testing.T) {
	c := rawCid("a")
	want := func(fields ...[]byte) []byte { return bytes.Join(fields, nil) }
	tagB := func(n protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), v)
	}
	tagV := func(n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, n, protowire.VarintType), v)
	}
	good := want(tagB(fieldCid, c.Bytes()), tagV(fieldScope, 1))
	tooMany := bytes.Repeat(tagB(fieldWants, good), MaxWants+1)
	for name, b := range map[string][]byte{
		"empty":            {},
		"truncated":        tagB(fieldWants, good)[:5],
		"wants as varint":  tagV(fieldWants, 1),
		"repeated limit":   want(tagB(fieldWants, good), tagV(fieldLimit, 1), tagV(fieldLimit, 2)),
		"no cid":           tagB(fieldWants, tagV(fieldScope, 1)),
		"bad cid":          tagB(fieldWants, want(tagB(fieldCid, []byte{1, 2, 3}), tagV(fieldScope, 1))),
		"no scope":         tagB(fieldWants, tagB(fieldCid, c.Bytes())),
		"unknown scope":    tagB(fieldWants, want(tagB(fieldCid, c.Bytes()), tagV(fieldScope, 9))),
		"offset on dag":    tagB(fieldWants, want(good, tagV(fieldOffset, 3))),
		"repeated cid":     tagB(fieldWants, want(good, tagB(fieldCid, c.Bytes()))),
		"scope as bytes":   tagB(fieldWants, want(tagB(fieldCid, c.Bytes()), tagB(fieldScope, []byte{1}))),
		"too many wants":   tooMany,
		"oversize request": make([]byte, MaxRequestSize+1),
		"repeated trace":   want(tagB(fieldWants, good), tagB(fieldTrace, []byte("a")), tagB(fieldTrace, []byte("b"))),
		"trace as varint":  want(tagB(fieldWants, good), tagV(fieldTrace, 1)),
		"oversize trace":   want(tagB(fieldWants, good), tagB(fieldTrace, bytes.Repeat([]byte("a"), MaxTraceSize+1))),
		"trace not ascii":  want(tagB(fieldWants, good), tagB(fieldTrace, []byte("00-\n"))),
	} {
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// Unknown fields are skipped, for later additions.
	if _, err := DecodeRequest(want(tagB(fieldWants, want(good, tagV(9, 1))), tagB(7, []byte("x")))); err != nil {
		t.Errorf("unknown fields: %v", err)
	}
	// A request without a trace (an older requester) decodes as before, and
	// an older provider skips the trace as an unknown field: what it decodes
	// is the request without it.
	withTrace := AppendRequest(nil, Request{Wants: []Want{{Cid: c, Scope: DAG()}}, Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	if r, err := DecodeRequest(AppendRequest(nil, Request{Wants: []Want{{Cid: c, Scope: DAG()}}})); err != nil || r.Trace != "" {
		t.Errorf("request without trace: %+v, %v", r, err)
	}
	if !bytes.HasPrefix(withTrace, tagB(fieldWants, good)) || len(withTrace) == len(tagB(fieldWants, good)) {
		t.Errorf("the trace is not a field after the wants: %x", withTrace)
	}
	// The length prefix is bounded before anything is read.
	r := bufio.NewReader(bytes.NewReader(protowire.AppendVarint(nil, MaxRequestSize+1)))
	if _, err := ReadRequest(r); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversize prefix: %v", err)
	}
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
		t.Errorf("clean end: %v", err)
	}
}

func TestFrames(t *testing.T) {
	c := rawCid("x")
	frames := []Frame{
		{Type: FrameBlock, Data: []byte("hello")},
		{Type: FrameBlock, Data: []byte{}},
		{Type: FrameMissing, Cid: c},
		{Type: FrameEnd},
		{Type: FrameError, Code: CodeBusy, Message: "busy"},
	}
	var stream []byte
	for _, f := range frames {
		stream = AppendFrame(stream, f)
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	for _, want := range frames {
		got, err := ReadFrame(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want.Data == nil && got.Data != nil || want.Data != nil && !bytes.Equal(got.Data, want.Data) ||
			got.Type != want.Type || !got.Cid.Equals(want.Cid) || got.Code != want.Code || got.Message != want.Message {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	// A long message is cut to the bound, on a rune boundary.
	long := AppendFrame(nil, Frame{Type: FrameError, Code: 1, Message: strings.Repeat("é", MaxErrorMessage)})
	if f, err := ReadFrame(bufio.NewReader(bytes.NewReader(long)), nil); err != nil || len(f.Message) > MaxErrorMessage {
		t.Fatalf("long message: %v, %d bytes", err, len(f.Message))
	}
	for name, b := range map[string][]byte{
		"zero length":      {0},
		"unknown type":     {1, 0x09},
		"end with payload": {2, byte(FrameEnd), 0},
		"missing bad cid":  {3, byte(FrameMissing), 1, 2},
		"oversize":         protowire.AppendVarint(nil, MaxFrameSize+1),
		"huge missing":     append(protowire.AppendVarint(nil, 1000), byte(FrameMissing)),
		"error bad utf8":   {4, byte(FrameError), 1, 0xff, 0xfe},
	} {
		_, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), nil)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// A block frame asks for its room before it is allocated.
	b := AppendFrame(nil, Frame{Type: FrameBlock, Data: make([]byte, 1000)})
	refuse := errors.New("no room")
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), func(n int) error {
		if n != 1000 {
			t.Errorf("reserve(%d)", n)
		}
		return refuse
	}); err != refuse {
		t.Fatalf("err = %v", err)
	}
}

// TestWalkOrder: the walk is a depth-first pre-order over dag-pb links
// that visits each block once, the same on every run.
func TestWalkOrder(t *testing.T) {
	src := newMem()
	root := addFile(t, src, randBytes(10, 1<<20), smallOpts())
	var want []cid.Cid
	seen := map[cid.Cid]bool{}
	var dfs func(c cid.Cid)
	dfs = func(c cid.Cid) {
		if seen[c] {
			return
		}
		seen[c] = true
		want = append(want, c)
		nd, err := dagOf(src).Get(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range nd.Links() {
			dfs(l.Cid)
		}
	}
	dfs(root)
	got := dagBlocks(t, src, root, DAG())
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("walk order differs from depth-first pre-order:\n got %v\nwant %v", got, want)
	}
	if b := dagBlocks(t, src, root, Block()); len(b) != 1 {
		t.Fatalf("block scope walked %d blocks", len(b))
	}
}

// TestChildrenRange: a file node with inline data before its children
// (legal UnixFS, though importers do not write it) shifts the children's
// spans, and only children meeting the range are followed.
func TestChildrenRange(t *testing.T) {
	fsn := ft.NewFSNode(ft.TFile)
	fsn.SetData([]byte("0123456789")) // bytes 0..10
	a, b, c := rawCid("a"), rawCid("b"), rawCid("c")
	fsn.AddBlockSize(100) // a: 10..110
	fsn.AddBlockSize(100) // b: 110..210
	fsn.AddBlockSize(100) // c: 210..310
	data, _ := fsn.GetBytes()
	nd := merkledag.NodeWithData(data)
	for i, x := range []cid.Cid{a, b, c} {
		nd.AddRawLink(string(rune('a'+i)), &ipld.Link{Cid: x, Size: 100})
	}
	it := item{c: nd.Cid(), scope: Range(5, 150)} // 5..155: a whole, b 0..45
	got := children(nil, it, nd.RawData())
	want := []item{
		{c: a, scope: DAG(), est: 100},
		{c: b, scope: Scope{Kind: ScopeRange, Offset: 0, Length: 45}, est: 45},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got := children(nil, item{c: nd.Cid(), scope: Range(0, 5)}, nd.RawData()); len(got) != 0 {
		t.Fatalf("range inside the inline data: %+v", got)
	}
	if got := children(nil, item{c: nd.Cid(), scope: Range(300, -1)}, nd.RawData()); len(got) != 1 ||
		got[0].scope != (Scope{Kind: ScopeRange, Offset: 90, Length: 10}) {
		t.Fatalf("range to the end: %+v", got)
	}
}

// TestDedupAndIdentity: a file of zeros repeats one leaf; each distinct
// block crosses once. A link to an identity CID is never sent.
func TestDedupAndIdentity(t *testing.T) {
	src := newMem()
	zeros := make([]byte, 2<<20)
	root := addFile(t, src, zeros, smallOpts())
	distinct := len(dagBlocks(t, src, root, DAG()))
	if distinct > 4 {
		t.Fatalf("zeros made %d distinct blocks", distinct)
	}
	idh, _ := mh.Sum([]byte("inline"), mh.IDENTITY, -1)
	inline := cid.NewCidV1(cid.Raw, idh)
	top := merkledag.NodeWithData(nil)
	top.AddRawLink("i", &ipld.Link{Cid: inline, Size: 6})
	top.AddRawLink("r", &ipld.Link{Cid: root, Size: 0})
	src.Put(context.Background(), top)

	peers := newPipes(t)
	peers.peers["p"] = serverPeer(t, src)
	dst := newMem()
	f := newFetcher(t, dst, peers, nil)
	st, err := f.Fetch(context.Background(), top.Cid(), DAG(), []peer.ID{"p"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != int64(distinct+1) {
		t.Fatalf("fetched %d blocks, want %d", st.Blocks, distinct+1)
	}
	if !bytes.Equal(catFile(t, dst, root), zeros) {
		t.Fatal("wrong bytes")
	}
}

// TestUnverifiable: a link to a CID whose hash boxo's allowlist refuses is
// neither sent nor followed, and the fetch says it is incomplete.
func TestUnverifiable(t *testing.T) {
	src := newMem()
	h, _ := mh.Sum([]byte("weak"), mh.MURMUR3X64_64, -1)
	weak := cid.NewCidV1(cid.Raw, h)
	top := merkledag.NodeWithData([]byte("top"))
	top.AddRawLink("w", &ipld.Link{Cid: weak, Size: 4})
	src.Put(context.Background(), top)
	peers := newPipes(t)
	peers.peers["p"] = serverPeer(t, src)
	dst := newMem()
	f := newFetcher(t, dst, peers, nil)
	_, err := f.Fetch(context.Background(), top.Cid(), DAG(), []peer.ID{"p"})
	var fe *FetchError
	if !errors.As(err, &fe) || !fe.First.Equals(weak) || len(fe.Peers) != 0 {
		t.Fatalf("err = %v", err)
	}
	if dst.len() != 1 {
		t.Fatalf("stored %d blocks", dst.len())
	}
}
