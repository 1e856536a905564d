package exchange

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// go test runs the seeds; fuzz with, for instance:
//
//	go test -run '^$' -fuzz FuzzDecodeRequest -fuzztime 30s ./protocol/exchange/
//
// FuzzProviderAnswer runs a Fetcher, whose goroutines make its coverage
// vary from run to run; give it -fuzzminimizetime 0, or the fuzzer spends
// its time minimizing instead of fuzzing.

func FuzzDecodeRequest(f *testing.F) {
	a, b := rawCid("a"), rawCid("b")
	for _, r := range []Request{
		{Wants: []Want{{Cid: a, Scope: DAG()}}},
		{Wants: []Want{{Cid: a, Scope: Block()}, {Cid: b, Scope: Range(3, 100)}}, Limit: 1 << 20},
		{Wants: []Want{{Cid: b, Scope: Range(0, -1)}}},
		{Wants: []Want{{Cid: a, Scope: DAG()}}, Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	} {
		f.Add(AppendRequest(nil, r))
	}
	// A trace field with a control byte, and one repeated.
	f.Add(append(AppendRequest(nil, Request{Wants: []Want{{Cid: a, Scope: DAG()}}}), 0x1a, 0x02, 'a', 0x07))
	f.Add(append(AppendRequest(nil, Request{Wants: []Want{{Cid: a, Scope: DAG()}}, Trace: "x"}), 0x1a, 0x01, 'y'))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(r.Wants) == 0 || len(r.Wants) > MaxWants {
			t.Fatalf("decoded %d wants", len(r.Wants))
		}
		if len(r.Trace) > MaxTraceSize {
			t.Fatalf("decoded a trace of %d bytes", len(r.Trace))
		}
		for _, w := range r.Wants {
			if !w.Cid.Defined() || w.Scope.validate() != nil {
				t.Fatalf("decoded an invalid want %+v", w)
			}
		}
		again, err := DecodeRequest(AppendRequest(nil, r))
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, again)
		}
	})
}

// FuzzDecodeFrame reads a stream of frames, as a requester does.
func FuzzDecodeFrame(f *testing.F) {
	var all []byte
	for _, fr := range []Frame{
		{Type: FrameBlock, Data: []byte("data")},
		{Type: FrameMissing, Cid: rawCid("m")},
		{Type: FrameEnd},
		{Type: FrameError, Code: CodeBusy, Message: "busy"},
	} {
		one := AppendFrame(nil, fr)
		f.Add(one)
		all = append(all, one...)
	}
	f.Add(all)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			var reserved int
			fr, err := ReadFrame(r, func(n int) error {
				if n > MaxBlockSize {
					t.Fatalf("reserve(%d) above MaxBlockSize", n)
				}
				reserved = n
				return nil
			})
			if err != nil {
				return
			}
			if fr.Type == FrameBlock && len(fr.Data) != reserved {
				t.Fatalf("block of %d bytes, reserved %d", len(fr.Data), reserved)
			}
			enc := AppendFrame(nil, fr)
			again, err := ReadFrame(bufio.NewReader(bytes.NewReader(enc)), nil)
			if err != nil {
				t.Fatalf("re-encoded %v frame does not decode: %v", fr.Type, err)
			}
			if again.Type != fr.Type || !bytes.Equal(again.Data, fr.Data) || !again.Cid.Equals(fr.Cid) ||
				again.Code != fr.Code || again.Message != fr.Message {
				t.Fatalf("round trip changed the frame: %+v, %+v", fr, again)
			}
		}
	})
}

// fuzzDAG is a small file of many blocks and three levels.
var fuzzDAG struct {
	once  sync.Once
	src   *memBlocks
	root  cid.Cid
	order []cid.Cid
	in    map[cid.Cid]bool
}

func fuzzFile(t testing.TB) {
	fuzzDAG.once.Do(func() {
		opts := smallOpts()
		opts.ChunkSize = 256
		opts.MaxLinks = 4
		src := newMem()
		root := addFile(t, src, randBytes(11, 6000), opts)
		fuzzDAG.src, fuzzDAG.root = src, root
		fuzzDAG.order = dagBlocks(t, src, root, DAG())
		fuzzDAG.in = map[cid.Cid]bool{}
		for _, c := range fuzzDAG.order {
			fuzzDAG.in[c] = true
		}
	})
}

// replayStream is a provider that answers with fixed bytes.
type replayStream struct{ io.Reader }

func (replayStream) Write(p []byte) (int, error) { return len(p), nil }
func (replayStream) Close() error                { return nil }
func (replayStream) Reset() error                { return nil }

type replayStreams []byte

func (r replayStreams) NewStream(context.Context, peer.ID) (Stream, error) {
	return replayStream{bytes.NewReader(r)}, nil
}

// FuzzProviderAnswer: whatever a provider answers, the requester stores
// only blocks that verify and belong to the DAG asked for, and never
// reports success without all of them.
func FuzzProviderAnswer(f *testing.F) {
	fuzzFile(f)
	var good []byte
	for _, c := range fuzzDAG.order {
		b, _ := fuzzDAG.src.Get(context.Background(), c)
		good = AppendFrame(good, Frame{Type: FrameBlock, Data: b.RawData()})
	}
	good = AppendFrame(good, Frame{Type: FrameEnd})
	f.Add(good)
	f.Add(good[:len(good)/2])
	bad := bytes.Clone(good)
	bad[len(bad)/3] ^= 0x40
	f.Add(bad)
	f.Add(AppendFrame(nil, Frame{Type: FrameMissing, Cid: fuzzDAG.root}))
	f.Fuzz(func(t *testing.T, answer []byte) {
		dst := newMem()
		fe, err := NewFetcher(Config{Blocks: dst, Streams: replayStreams(answer)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = fe.Fetch(context.Background(), fuzzDAG.root, DAG(), []peer.ID{"p"})
		dst.verifyAll(t)
		dst.mu.RLock()
		for _, b := range dst.m {
			if !fuzzDAG.in[b.Cid()] {
				t.Errorf("stored %s, which is not in the DAG", b.Cid())
			}
		}
		n := len(dst.m)
		dst.mu.RUnlock()
		if err == nil && n != len(fuzzDAG.order) {
			t.Fatalf("success with %d of %d blocks", n, len(fuzzDAG.order))
		}
	})
}
