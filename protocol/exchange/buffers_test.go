package exchange

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// countingBuffers is a Buffers that tracks what it handed out.
type countingBuffers struct {
	mu    sync.Mutex
	live  map[*byte]bool
	gets  int
	sizes []int // asked for, in order
	bad   error
}

func newCountingBuffers() *countingBuffers { return &countingBuffers{live: make(map[*byte]bool)} }

func (b *countingBuffers) Get(n int) []byte {
	buf := make([]byte, n, max(n, 1))
	b.mu.Lock()
	b.live[&buf[:1][0]] = true
	b.gets++
	b.sizes = append(b.sizes, n)
	b.mu.Unlock()
	return buf
}

func (b *countingBuffers) Put(buf []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := &buf[:1][0]
	if !b.live[k] && b.bad == nil {
		b.bad = fmt.Errorf("Put of a %d-byte slice not from Get, or given back twice", len(buf))
	}
	delete(b.live, k)
}

// check fails t if a slice is still out or one came back wrongly.
func (b *countingBuffers) outstanding() (int, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live), b.gets, b.bad
}

// readerBlocks serves blocks through ReadInto, as the node's store does;
// it corrupts the data of the blocks lie picks.
type readerBlocks struct {
	*memBlocks
	lie func(c cid.Cid, data []byte) bool
}

func (r readerBlocks) ReadInto(ctx context.Context, c cid.Cid, buf []byte) ([]byte, error) {
	blk, err := r.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	data := append(buf[:0], blk.RawData()...)
	if r.lie != nil && r.lie(c, data) {
		data[len(data)/2] ^= 1
	}
	return data, nil
}

// copyingBlocks keeps copies of what PutMany is given, as a disk store does
// (so the fetch may reuse its buffers); onPut, if set, runs after each
// PutMany.
type copyingBlocks struct {
	*memBlocks
	onPut func()
}

func (c copyingBlocks) PutMany(ctx context.Context, bs []blocks.Block) error {
	if c.onPut != nil {
		defer c.onPut()
	}
	cp := make([]blocks.Block, len(bs))
	for i, b := range bs {
		blk, err := blocks.NewBlockWithCid(bytes.Clone(b.RawData()), b.Cid())
		if err != nil {
			return err
		}
		cp[i] = blk
	}
	return c.memBlocks.PutMany(ctx, cp)
}

// TestBuffersGivenBack: a Fetcher and a Server that read blocks into
// Buffers give every buffer back, on success and when a provider sends a
// bad block (the fetch moves to the other provider and discards what the
// liar sent after it).
func TestBuffersGivenBack(t *testing.T) {
	src := newMem()
	data := randBytes(21, 8<<20)
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	for _, tc := range []struct {
		name string
		lie  func(c cid.Cid, data []byte) bool
	}{
		{"all good", nil},
		// Caught at an inner node (checked as it arrives, for its links)
		// or at a leaf (checked by the verifier).
		{"a liar", func(c cid.Cid, _ []byte) bool { return !c.Equals(root) }},
		{"a liar of leaves", func(_ cid.Cid, d []byte) bool { return len(d) > 32<<10 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers := newPipes(t)
			var srvBufs []*countingBuffers
			for _, p := range []peer.ID{"liar", "good"} {
				bs := readerBlocks{memBlocks: src}
				if p == "liar" {
					bs.lie = tc.lie
				}
				sb := newCountingBuffers()
				srvBufs = append(srvBufs, sb)
				s, err := NewServer(ServerConfig{Blocks: bs, Buffers: sb})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				peers.peers[p] = func(st Stream) { s.Handle(st, "fetcher") }
			}
			fb := newCountingBuffers()
			dst := copyingBlocks{memBlocks: newMem()}
			f := newFetcher(t, dst, peers, func(c *Config) {
				c.PutCopies = true
				c.Buffers = fb
				c.UnitBytes = 1 << 20
			})
			st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"liar", "good"})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(catFile(t, dst.memBlocks, root), data) {
				t.Fatal("wrong bytes")
			}
			if tc.lie != nil && st.Peers["liar"].Err == nil {
				t.Fatalf("the liar was not caught: %+v", st.Peers["liar"])
			}
			if n, gets, err := fb.outstanding(); n != 0 || err != nil || gets < len(order) {
				t.Fatalf("fetcher: %d buffers not given back of %d, %v", n, gets, err)
			}
			for i, sb := range srvBufs {
				waitFor(t, 5*time.Second, func() bool { n, _, _ := sb.outstanding(); return n == 0 })
				if _, _, err := sb.outstanding(); err != nil {
					t.Fatalf("server %d: %v", i, err)
				}
			}
		})
	}
}

// TestBuffersGivenBackOnFailures: the buffers of blocks cut short by a
// broken stream, and of a fetch cancelled midway, come back too.
func TestBuffersGivenBackOnFailures(t *testing.T) {
	src := newMem()
	data := randBytes(22, 8<<20)
	root := addFile(t, src, data, smallOpts())
	t.Run("a stream broken inside a block", func(t *testing.T) {
		peers := newPipes(t)
		peers.peers["cut"] = scriptedPeer(func(_ Request, w io.Writer) {
			// A block frame announcing 64 KiB, a part of it, then the end.
			hdr := binary.AppendUvarint(nil, 1+64<<10)
			w.Write(append(hdr, byte(FrameBlock)))
			w.Write(make([]byte, 1000))
			w.(Stream).Reset()
		})
		peers.peers["good"] = serverPeer(t, src)
		fb := newCountingBuffers()
		dst := copyingBlocks{memBlocks: newMem()}
		f := newFetcher(t, dst, peers, func(c *Config) {
			c.PutCopies = true
			c.Buffers = fb
		})
		// The cut peer alone: the fetch fails, having read into a buffer.
		if _, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"cut"}); err == nil {
			t.Fatal("a fetch from a peer that broke its stream succeeded")
		}
		if n, gets, err := fb.outstanding(); n != 0 || err != nil || gets == 0 {
			t.Fatalf("%d of %d buffers not given back, %v", n, gets, err)
		}
		if _, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"good"}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(catFile(t, dst.memBlocks, root), data) {
			t.Fatal("wrong bytes")
		}
		if n, _, err := fb.outstanding(); n != 0 || err != nil {
			t.Fatalf("%d buffers not given back, %v", n, err)
		}
	})
	t.Run("a cancelled fetch", func(t *testing.T) {
		peers := newPipes(t)
		peers.peers["p"] = serverPeer(t, src)
		fb := newCountingBuffers()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dst := copyingBlocks{memBlocks: newMem()}
		dst.onPut = func() {
			if dst.len() >= 20 {
				cancel()
			}
		}
		f := newFetcher(t, dst, peers, func(c *Config) {
			c.PutCopies = true
			c.Buffers = fb
			c.BatchBytes = 64 << 10 // a batch per block: the cancel lands midway
		})
		if _, err := f.Fetch(ctx, root, DAG(), []peer.ID{"p"}); err == nil {
			t.Fatal("a cancelled fetch succeeded")
		}
		if n, _, err := fb.outstanding(); n != 0 || err != nil {
			t.Fatalf("%d buffers not given back, %v", n, err)
		}
	})
}

// TestServerBuffersFitBlocks: a Server whose Getter tells block sizes
// asks Buffers for buffers of each block's size (larger than 1 MiB for big
// leaves, small for inner nodes), and gives them all back.
func TestServerBuffersFitBlocks(t *testing.T) {
	src := newMem()
	opts := smallOpts()
	opts.ChunkSize = 1<<20 + 100<<10 // dag-pb leaves a little over 1 MiB
	data := randBytes(23, 4<<20)
	root := addFile(t, src, data, opts)
	sb := newCountingBuffers()
	s, err := NewServer(ServerConfig{Blocks: readerBlocks{memBlocks: src}, Buffers: sb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	peers := newPipes(t)
	peers.peers["p"] = func(st Stream) { s.Handle(st, "fetcher") }
	dst := newMem()
	if _, err := newFetcher(t, dst, peers, nil).Fetch(context.Background(), root, DAG(), []peer.ID{"p"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
	waitFor(t, 5*time.Second, func() bool { n, _, _ := sb.outstanding(); return n == 0 })
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.bad != nil {
		t.Fatal(sb.bad)
	}
	if len(sb.sizes) == 0 || slices.Max(sb.sizes) <= readBufSize || slices.Min(sb.sizes) >= 64<<10 {
		t.Fatalf("buffers asked for: %v; want each block's size", sb.sizes)
	}
}
