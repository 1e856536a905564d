package unixfstest

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sort"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/hamt"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
)

// Hostile is a UnixFS DAG built to make a reader write outside the folder
// it extracts to: entry names no importer would write, crafted as dag-pb
// nodes directly.
type Hostile struct {
	Name string // what it tries, for subtest names
	Root cid.Cid
	// Bad is the entry name a reader must refuse, and its error quote.
	Bad    string
	Blocks []blocks.Block
}

// CAR returns the DAG as a CARv1 with Root as its root.
func (h Hostile) CAR() ([]byte, error) {
	var buf bytes.Buffer
	w, err := carstorage.NewWritable(&buf, []cid.Cid{h.Root}, carv2.WriteAsCarV1(true))
	if err != nil {
		return nil, err
	}
	for _, b := range h.Blocks {
		if err := w.Put(context.Background(), b.Cid().KeyString(), b.RawData()); err != nil {
			return nil, err
		}
	}
	if err := w.Finalize(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// HostileDAGs returns the attacks on a reader that makes paths from entry
// names. outside is an absolute directory the attacks aim at (symlink
// targets, absolute names); a safe reader writes nothing there.
func HostileDAGs(outside string) ([]Hostile, error) {
	type entry struct {
		name string
		nd   func(b *builder) ipld.Node
	}
	file := func(s string) func(*builder) ipld.Node {
		return func(b *builder) ipld.Node { return b.add(mdag.NewRawNode([]byte(s))) }
	}
	link := func(target string) func(*builder) ipld.Node {
		return func(b *builder) ipld.Node {
			data, err := ft.SymlinkData(target)
			if err != nil {
				b.err = err
				return mdag.NewRawNode(nil)
			}
			return b.add(mdag.NodeWithData(data))
		}
	}
	var dir func(es ...entry) func(*builder) ipld.Node
	dir = func(es ...entry) func(*builder) ipld.Node {
		return func(b *builder) ipld.Node {
			d := ft.EmptyDirNode()
			for _, e := range es {
				if err := d.AddNodeLink(e.name, e.nd(b)); err != nil {
					b.err = err
				}
			}
			return b.add(d)
		}
	}
	shard := func(es ...entry) func(*builder) ipld.Node {
		return func(b *builder) ipld.Node {
			s, err := hamt.NewShard(b, 256)
			if err != nil {
				b.err = err
				return mdag.NewRawNode(nil)
			}
			for _, e := range es {
				if err := s.Set(context.Background(), e.name, e.nd(b)); err != nil {
					b.err = err
				}
			}
			nd, err := s.Node() // adds itself and its inner shards to b
			if err != nil {
				b.err = err
				return mdag.NewRawNode(nil)
			}
			return nd
		}
	}
	abs := filepath.Join(outside, "abs-pwned")
	cases := []struct {
		name, bad string
		root      func(*builder) ipld.Node
	}{
		{"dotdot", "..", dir(entry{"..", file("pwned")})},
		{"dotdot-slash", "../x", dir(entry{"../x", file("pwned")})},
		{"absolute", abs, dir(entry{abs, file("pwned")})},
		{"slash", "a/b", dir(entry{"a/b", file("pwned")})},
		{"empty", "", dir(entry{"", file("pwned")})},
		{"dot", ".", dir(entry{".", file("pwned")})},
		{"nul", "a\x00b", dir(entry{"a\x00b", file("pwned")})},
		// Good entries first, so a streaming reader has written some
		// before it meets the bad one deeper down.
		{"nested-dotdot", "..", dir(entry{"aaa", file("fine")},
			entry{"zzz", dir(entry{"..", dir(entry{"..", file("pwned")})})})},
		// The classic tar attack: a symlink out, then a path through it.
		{"symlink-then-path", "a/passwd", dir(entry{"a", link(outside)}, entry{"a/passwd", file("pwned")})},
		{"symlink-then-dir", "a", dir(entry{"a", link(outside)}, entry{"a", dir(entry{"passwd", file("pwned")})})},
		{"hamt-dotdot", "..", shard(entry{"fine", file("fine")}, entry{"..", file("pwned")})},
	}
	var out []Hostile
	for _, c := range cases {
		b := &builder{blocks: map[cid.Cid]blocks.Block{}}
		root := c.root(b)
		if b.err != nil {
			return nil, fmt.Errorf("build %s: %w", c.name, b.err)
		}
		h := Hostile{Name: c.name, Root: root.Cid(), Bad: c.bad}
		for _, blk := range b.blocks {
			h.Blocks = append(h.Blocks, blk)
		}
		sort.Slice(h.Blocks, func(i, j int) bool { return h.Blocks[i].Cid().KeyString() < h.Blocks[j].Cid().KeyString() })
		out = append(out, h)
	}
	return out, nil
}

// builder is a DAGService that only collects what is added, for building
// DAGs (hamt.Shard writes through one).
type builder struct {
	blocks map[cid.Cid]blocks.Block
	err    error
}

func (b *builder) add(nd ipld.Node) ipld.Node {
	b.blocks[nd.Cid()] = nd
	return nd
}

func (b *builder) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	blk, ok := b.blocks[c]
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if c.Prefix().Codec == cid.Raw {
		return mdag.NewRawNode(blk.RawData()), nil
	}
	return ipld.Decode(blk, mdag.DecodeProtobufBlock)
}

func (b *builder) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		nd, err := b.Get(ctx, c)
		ch <- &ipld.NodeOption{Node: nd, Err: err}
	}
	close(ch)
	return ch
}

func (b *builder) Add(_ context.Context, nd ipld.Node) error { b.add(nd); return nil }
func (b *builder) AddMany(_ context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		b.add(nd)
	}
	return nil
}
func (b *builder) Remove(context.Context, cid.Cid) error       { return nil }
func (b *builder) RemoveMany(context.Context, []cid.Cid) error { return nil }
