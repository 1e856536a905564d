package node

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/weft-p2p/weft/protocol/unixfs"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// carSeeds returns CARs to start the fuzzer from: a small tree as CARv1
// and CARv2, the hostile DAGs, and broken ones.
func carSeeds(t testing.TB) [][]byte {
	t.Helper()
	ctx := context.Background()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	dag := merkledag.NewDAGService(blockservice.New(bs, nil))
	opts := unixfs.DefaultOptions()
	opts.HAMTThreshold, opts.HAMTFanout = 1, 8
	root, err := unixfs.AddNode(ctx, dag, files.NewMapDirectory(map[string]files.Node{
		"a": files.NewBytesFile([]byte("hello")),
		"b": files.NewLinkFile("a", nil),
		"c": files.NewMapDirectory(map[string]files.Node{"d": files.NewBytesFile(bytes.Repeat([]byte("x"), 500))}),
	}), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := unixfstest.Hostile{Name: "tree", Root: root}
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		b, err := bs.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		h.Blocks = append(h.Blocks, b)
	}
	hs, err := unixfstest.HostileDAGs("/tmp/weft-fuzz-outside")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, h := range append([]unixfstest.Hostile{h}, hs...) {
		v1, err := h.CAR()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v1)
		if h.Name == "tree" {
			var v2 bytes.Buffer
			if err := carv2.WrapV1(bytes.NewReader(v1), &v2); err != nil {
				t.Fatal(err)
			}
			out = append(out, v2.Bytes(), v1[:len(v1)/2])
		}
	}
	return append(out, nil, []byte{0x0a})
}

// FuzzCarImport feeds arbitrary bytes to the CAR decoder of car/import and
// reads what it accepted as UnixFS. Nothing may panic; every block handed
// on must match its CID; Ls of a root returns only valid names.
func FuzzCarImport(f *testing.F) {
	for _, s := range carSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		roots, count, err := readCAR(bytes.NewReader(data), func(batch []blocks.Block) error {
			for _, b := range batch {
				want, err := b.Cid().Prefix().Sum(b.RawData())
				if err != nil || !want.Equals(b.Cid()) {
					t.Fatalf("block %s accepted though its bytes hash to %s (%v)", b.Cid(), want, err)
				}
				if err := importable(b); err != nil {
					t.Fatalf("block accepted though not importable: %v", err)
				}
			}
			return bs.PutMany(ctx, batch)
		})
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.code != 400 && he.code != 422 {
				t.Fatalf("a bad CAR gave %v, want a 400 or, for a block weft refuses, a 422", err)
			}
			return
		}
		if count < 0 {
			t.Fatalf("count %d", count)
		}
		dag := merkledag.NewDAGService(blockservice.New(bs, nil))
		for _, root := range roots {
			_, _ = unixfs.Stat(ctx, dag, root)
			entries, err := unixfs.Ls(ctx, dag, root)
			if err != nil {
				continue
			}
			for _, e := range entries {
				if unixfs.ValidName(e.Name) != nil {
					t.Fatalf("ls returned bad name %q", e.Name)
				}
			}
		}
	})
}
