package exchange

import (
	"context"
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/protocol/unixfs"
)

// genFile is a provider's store for a large file that it never holds: the
// file's bytes are a pure function of their offset, its leaves are made on
// demand, and only the inner nodes are kept.
type genFile struct {
	chunk  int
	inner  map[cid.Cid]blocks.Block
	leaves map[cid.Cid]leafRef
}

type leafRef struct{ i, n int } // chunk index, length

// genChunk fills b with chunk i of the generated file: i, then a
// xorshift stream seeded by i.
func genChunk(b []byte, i int) {
	binary.LittleEndian.PutUint64(b, uint64(i))
	x := uint64(i)*0x9e3779b97f4a7c15 + 1
	for j := 8; j+8 <= len(b); j += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[j:], x)
	}
}

type genReader struct {
	i, off int
	left   int64
	buf    []byte
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if g.off == len(g.buf) {
		genChunk(g.buf, g.i)
		g.i++
		g.off = 0
	}
	n := copy(p, g.buf[g.off:])
	if int64(n) > g.left {
		n = int(g.left)
	}
	g.off += n
	g.left -= int64(n)
	return n, nil
}

// collectDAG records what an import writes: inner nodes kept, raw leaves
// only numbered (they arrive in file order).
type collectDAG struct {
	g *genFile
}

func (d collectDAG) Add(_ context.Context, nd ipld.Node) error {
	if _, ok := nd.(*merkledag.RawNode); ok && len(nd.RawData()) >= 8 {
		d.g.leaves[nd.Cid()] = leafRef{int(binary.LittleEndian.Uint64(nd.RawData())), len(nd.RawData())}
		return nil
	}
	blk, _ := blocks.NewBlockWithCid(nd.RawData(), nd.Cid())
	d.g.inner[nd.Cid()] = blk
	return nil
}

func (d collectDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		_ = d.Add(ctx, nd)
	}
	return nil
}
func (d collectDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}
func (d collectDAG) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption)
	close(ch)
	return ch
}
func (d collectDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (d collectDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }

func newGenFile(t testing.TB, size int64) (*genFile, cid.Cid) {
	opts := unixfs.DefaultOptions() // 1 MiB raw leaves
	g := &genFile{chunk: int(opts.ChunkSize), inner: map[cid.Cid]blocks.Block{}, leaves: map[cid.Cid]leafRef{}}
	root, err := unixfs.AddFile(context.Background(), collectDAG{g},
		&genReader{left: size, buf: make([]byte, g.chunk), off: g.chunk}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g, root
}

func (g *genFile) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	if b, ok := g.inner[c]; ok {
		return b, nil
	}
	ref, ok := g.leaves[c]
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	b := make([]byte, g.chunk)
	genChunk(b, ref.i)
	b = b[:ref.n]
	return blocks.NewBlockWithCid(b, c)
}

// sinkBlocks keeps which blocks were written, not their bytes.
type sinkBlocks struct {
	mu    sync.Mutex
	have  map[cid.Cid]struct{}
	bytes int64
}

func (s *sinkBlocks) Has(_ context.Context, c cid.Cid) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.have[c]
	return ok, nil
}

func (s *sinkBlocks) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (s *sinkBlocks) PutMany(_ context.Context, bs []blocks.Block) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bs {
		s.have[b.Cid()] = struct{}{}
		s.bytes += int64(len(b.RawData()))
	}
	return nil
}

// TestMemoryFlat fetches a 1 GiB file (64 MiB under -race or -short)
// between two libp2p hosts in this process and checks that the heap never
// grows more than 100 MiB above where it started. The provider makes its
// blocks on demand and the requester keeps none, so what remains is the
// exchange's own buffering (and the provider's, measured here too).
func TestMemoryFlat(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() || raceEnabled {
		size = 64 << 20
	}
	g, root := newGenFile(t, size)
	a, b := newHost(t), newHost(t)
	serve(t, a, g)
	connect(t, b, a)
	dst := &sinkBlocks{have: map[cid.Cid]struct{}{}}
	f := newFetcher(t, dst, hostStreams{b}, nil)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}()
	start := time.Now()
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{a.ID()})
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if dst.bytes < size {
		t.Fatalf("fetched %d bytes of %d", dst.bytes, size)
	}
	grow := int64(peak) - int64(base)
	t.Logf("fetched %d MiB in %v (%d blocks); heap in use: %d MiB before, peak %d MiB (+%d MiB)",
		size>>20, time.Since(start).Round(time.Millisecond), st.Blocks, base>>20, peak>>20, grow>>20)
	if grow > 100<<20 {
		t.Errorf("heap grew by %d MiB during the fetch, want < 100 MiB", grow>>20)
	}
}
