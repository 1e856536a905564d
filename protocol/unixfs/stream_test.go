package unixfs

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// diskDAG keeps each block in its own file, so that the blocks of a test
// do not count towards the Go heap the test measures.
type diskDAG struct{ dir string }

func (d diskDAG) path(c cid.Cid) string { return filepath.Join(d.dir, c.String()) }

func (d diskDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	data, err := os.ReadFile(d.path(c))
	if os.IsNotExist(err) {
		return nil, ipld.ErrNotFound{Cid: c}
	} else if err != nil {
		return nil, err
	}
	blk, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	switch c.Prefix().Codec {
	case cid.Raw:
		return mdag.DecodeRawBlock(blk)
	case cid.DagProtobuf:
		return mdag.DecodeProtobufBlock(blk)
	}
	return nil, fmt.Errorf("codec %#x", c.Prefix().Codec)
}

func (d diskDAG) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		nd, err := d.Get(ctx, c)
		ch <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(ch)
	return ch
}

func (d diskDAG) Add(_ context.Context, nd ipld.Node) error {
	return os.WriteFile(d.path(nd.Cid()), nd.RawData(), 0o644)
}

func (d diskDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := d.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (d diskDAG) Remove(_ context.Context, c cid.Cid) error { return os.Remove(d.path(c)) }

func (d diskDAG) RemoveMany(ctx context.Context, cs []cid.Cid) error {
	for _, c := range cs {
		if err := d.Remove(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// heapPeak samples the live Go heap; sample is cheap enough to call once
// per chunk.
type heapPeak struct{ max uint64 }

func (h *heapPeak) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.max = max(h.max, ms.HeapAlloc)
}

// peakWriter samples the heap every MiB written through it.
type peakWriter struct {
	w    io.Writer
	h    *heapPeak
	next int64
	n    int64
}

func (p *peakWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.n >= p.next {
		p.h.sample()
		p.next += 1 << 20
	}
	return p.w.Write(b)
}

// TestStreaming checks that adding and reading a file takes memory that
// does not grow with the file: an 80 MiB file may not use much more heap
// than a 16 MiB one, on the way in or out.
func TestStreaming(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 96 MiB of blocks to disk")
	}
	ctx := context.Background()
	// A tight GC pace, so that the peaks measure what is live rather than
	// how late a collection ran on a loaded machine.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	measure := func(size int64) (addPeak, catPeak uint64) {
		dag := diskDAG{t.TempDir()}
		runtime.GC()
		var add heapPeak
		add.sample()
		c, err := AddFile(ctx, dag, unixfstest.NewInput("stream", size), DefaultOptions(), func(int64) { add.sample() })
		if err != nil {
			t.Fatal(err)
		}

		runtime.GC()
		var cat heapPeak
		cat.sample()
		r, err := Cat(ctx, dag, c)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, want := sha256.New(), sha256.New()
		if _, err := io.Copy(&peakWriter{w: got, h: &cat}, r); err != nil {
			t.Fatal(err)
		}
		io.Copy(want, unixfstest.NewInput("stream", size))
		if string(got.Sum(nil)) != string(want.Sum(nil)) {
			t.Fatal("cat gave other bytes than were added")
		}
		return add.max, cat.max
	}
	const mib = 1 << 20
	smallAdd, smallCat := measure(16 * mib)
	bigAdd, bigCat := measure(80 * mib)
	t.Logf("peak heap: add %d MiB (16 MiB file) vs %d MiB (80 MiB file); cat %d vs %d MiB",
		smallAdd/mib, bigAdd/mib, smallCat/mib, bigCat/mib)
	const slack = 16 * mib // GC pacing; growth with the file would be 64 MiB
	if bigAdd > smallAdd+slack {
		t.Errorf("add: heap peaked at %d MiB for 80 MiB, %d MiB for 16 MiB", bigAdd/mib, smallAdd/mib)
	}
	if bigCat > smallCat+slack {
		t.Errorf("cat: heap peaked at %d MiB for 80 MiB, %d MiB for 16 MiB", bigCat/mib, smallCat/mib)
	}
}
