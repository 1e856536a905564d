package unixfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// fuzzDAG holds blocks keyed by multihash, so the fuzzer's blocks are
// found whatever CID version or codec a link names them by: a link whose
// codec does not fit the bytes gives a decode error, as from a real store.
// A mutated block is stored under its new hash; links to its old one then
// dangle, which readers must also survive.
type fuzzDAG struct {
	mu     sync.Mutex
	blocks map[string][]byte
}

// encodeBlocks frames blocks for the fuzzer: each a uvarint length and its
// bytes, the root first.
func encodeBlocks(bs [][]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// decodeBlocks undoes encodeBlocks and returns the DAG and its root's CID
// (dag-pb when the root decodes as dag-pb, raw otherwise).
func decodeBlocks(data []byte) (*fuzzDAG, cid.Cid, bool) {
	d := &fuzzDAG{blocks: map[string][]byte{}}
	var root cid.Cid
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			break
		}
		b := data[k : k+int(n)]
		data = data[k+int(n):]
		c, err := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
		if err != nil {
			return nil, cid.Undef, false
		}
		d.blocks[string(c.Hash())] = b
		if !root.Defined() {
			root = c
			if _, err := mdag.DecodeProtobuf(b); err != nil {
				root = cid.NewCidV1(cid.Raw, c.Hash())
			}
		}
	}
	return d, root, root.Defined()
}

func (d *fuzzDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	b, ok := d.blocks[string(c.Hash())]
	d.mu.Unlock()
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	blk, err := blocks.NewBlockWithCid(b, c)
	if err != nil {
		return nil, err
	}
	return decodeAny(blk)
}

func (d *fuzzDAG) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		nd, err := d.Get(ctx, c)
		ch <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(ch)
	return ch
}

func (d *fuzzDAG) Add(_ context.Context, nd ipld.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.blocks[string(nd.Cid().Hash())] = nd.RawData()
	return nil
}

func (d *fuzzDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		_ = d.Add(ctx, nd)
	}
	return nil
}
func (d *fuzzDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (d *fuzzDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }

// seedBlocks frames the DAG under root in dag, root first.
func seedBlocks(t testing.TB, dag *fuzzDAG, root cid.Cid) []byte {
	t.Helper()
	hashes := slices.Sorted(maps.Keys(dag.blocks))
	bs := [][]byte{dag.blocks[string(root.Hash())]}
	for _, h := range hashes {
		if h != string(root.Hash()) {
			bs = append(bs, dag.blocks[h])
		}
	}
	return encodeBlocks(bs)
}

// addSeed imports nd with opts and returns it framed for the fuzzer.
func addSeed(t testing.TB, nd files.Node, opts Options) []byte {
	t.Helper()
	dag := &fuzzDAG{blocks: map[string][]byte{}}
	root, err := AddNode(context.Background(), dag, nd, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return seedBlocks(t, dag, root)
}

// FuzzDirectory feeds the directory readers (Stat, Ls, Get, over basic and
// HAMT-sharded directories, files and symlinks) DAGs made of arbitrary
// blocks. None may panic or hang; every name Ls returns passes ValidName;
// Get writes nothing outside its output path and, when it fails, leaves
// nothing at all.
func FuzzDirectory(f *testing.F) {
	small := func() files.Node {
		return files.NewMapDirectory(map[string]files.Node{
			"a.txt": files.NewBytesFile([]byte("hello")),
			"sub": files.NewMapDirectory(map[string]files.Node{
				"b": files.NewBytesFile([]byte(strings.Repeat("x", 300))),
			}),
			"link": files.NewLinkFile("a.txt", nil),
			"out":  files.NewLinkFile("/etc", nil),
		})
	}
	f.Add(addSeed(f, small(), DefaultOptions()))
	v0, err := Profile(ProfileV0_2015)
	if err != nil {
		f.Fatal(err)
	}
	v0.ChunkSize = 100
	f.Add(addSeed(f, small(), v0))
	sharded := DefaultOptions()
	sharded.HAMTThreshold, sharded.HAMTFanout = 1, 8
	entries := map[string]files.Node{}
	for i := range 40 {
		entries[fmt.Sprintf("entry-%02d", i)] = files.NewBytesFile([]byte{byte(i)})
	}
	f.Add(addSeed(f, files.NewMapDirectory(entries), sharded))
	hs, err := unixfstest.HostileDAGs("/tmp/weft-fuzz-outside")
	if err != nil {
		f.Fatal(err)
	}
	for _, h := range hs {
		dag := &fuzzDAG{blocks: map[string][]byte{}}
		for _, b := range h.Blocks {
			dag.blocks[string(b.Cid().Hash())] = b.RawData()
		}
		seed := seedBlocks(f, dag, h.Root)
		// The framing must carry the attack: a seed that no longer reaches
		// the bad name would test nothing.
		d, root, _ := decodeBlocks(seed)
		if err := Get(context.Background(), d, root, filepath.Join(f.TempDir(), "out")); !errors.Is(err, ErrBadName) {
			f.Fatalf("seed %s: get: %v, want ErrBadName", h.Name, err)
		}
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a failure too: past the deadline, dump every stack.
		watchdog := time.AfterFunc(20*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("fuzz input hung:\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		dag, root, ok := decodeBlocks(data)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = Stat(ctx, dag, root)
		entries, err := Ls(ctx, dag, root)
		if err == nil {
			for _, e := range entries {
				if ValidName(e.Name) != nil {
					t.Fatalf("ls returned bad name %q", e.Name)
				}
			}
		}
		if r, err := Cat(ctx, dag, root); err == nil {
			buf := make([]byte, 4096)
			for {
				if _, err := r.Read(buf); err != nil {
					break
				}
			}
			r.Close()
		}
		_, _ = Readlink(ctx, dag, root)

		base := t.TempDir()
		out := filepath.Join(base, "out")
		err = Get(ctx, dag, root, out)
		var paths []string
		_ = filepath.WalkDir(base, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && p != base {
				paths = append(paths, p)
			}
			return nil
		})
		for _, p := range paths {
			if p != out && !strings.HasPrefix(p, out+string(os.PathSeparator)) {
				t.Fatalf("get wrote %s, outside %s", p, out)
			}
		}
		if err != nil && len(paths) > 0 {
			t.Fatalf("get failed (%v) but left %v", err, paths)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Logf("slow input: %v", err)
		}
	})
}
