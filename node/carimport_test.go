package node_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// rawCAR writes a CARv1 with roots and the given (CID, bytes) sections,
// whether or not the bytes match the CID.
func rawCAR(t *testing.T, roots []cid.Cid, sections ...carSection) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := carstorage.NewWritable(&buf, roots, carv2.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sections {
		if err := w.Put(context.Background(), s.c.KeyString(), s.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type carSection struct {
	c    cid.Cid
	data []byte
}

func sectionsOf(nodes ...ipld.Node) []carSection {
	out := make([]carSection, len(nodes))
	for i, nd := range nodes {
		out[i] = carSection{nd.Cid(), nd.RawData()}
	}
	return out
}

// TestCarImportRefusesBadBlocks: a CAR whose DAG lacks a block, holds a
// block under a hash weft does not accept (md5) or a block larger than any
// peer sends, or whose bytes do not match a CID, is refused with a 4xx that
// names the problem; nothing is pinned, the bad block is not stored, and
// what the node held before is untouched.
func TestCarImportRefusesBadBlocks(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	c := nodetest.Client(n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// What the node holds before: a pinned DAG.
	keptRoot, keptNodes := doubleLinkDAG(t, 3)
	importCAR(t, n, carOf(t, keptRoot, keptNodes))

	leaf := merkledag.NewRawNode([]byte("a leaf the CAR leaves out"))
	dir := ft.EmptyDirNode()
	if err := dir.AddNodeLink("leaf", leaf); err != nil {
		t.Fatal(err)
	}
	md5CID, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.MD5, MhLength: -1}.Sum([]byte("hashed with md5"))
	if err != nil {
		t.Fatal(err)
	}
	big := merkledag.NewRawNode(bytes.Repeat([]byte{7}, 2<<20+1))
	other := merkledag.NewRawNode([]byte("another root"))

	for _, tc := range []struct {
		name   string
		car    []byte
		code   int
		says   string
		absent []cid.Cid // blocks that must not be stored
		roots  []cid.Cid // must not be pinned
	}{
		{"missing child", rawCAR(t, []cid.Cid{dir.Cid()}, sectionsOf(dir)...),
			http.StatusUnprocessableEntity, leaf.Cid().String(), nil, []cid.Cid{dir.Cid()}},
		{"md5 block", rawCAR(t, []cid.Cid{md5CID}, carSection{md5CID, []byte("hashed with md5")}),
			http.StatusUnprocessableEntity, "md5", []cid.Cid{md5CID}, []cid.Cid{md5CID}},
		{"oversize block", rawCAR(t, []cid.Cid{big.Cid()}, sectionsOf(big)...),
			http.StatusUnprocessableEntity, "bytes", []cid.Cid{big.Cid()}, []cid.Cid{big.Cid()}},
		{"bytes not matching the CID", rawCAR(t, []cid.Cid{leaf.Cid()}, carSection{leaf.Cid(), []byte("other bytes")}),
			http.StatusBadRequest, "mismatch", []cid.Cid{leaf.Cid()}, []cid.Cid{leaf.Cid()}},
		{"second root incomplete", rawCAR(t, []cid.Cid{other.Cid(), dir.Cid()}, sectionsOf(other, dir)...),
			http.StatusUnprocessableEntity, leaf.Cid().String(), nil, []cid.Cid{other.Cid(), dir.Cid()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CarImport(ctx, bytes.NewReader(tc.car), true)
			var se *api.StatusError
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Fatalf("import: %v, want status %d", err, tc.code)
			}
			if !strings.Contains(se.Message, tc.says) {
				t.Errorf("error %q does not say %q", se.Message, tc.says)
			}
			for _, b := range tc.absent {
				if has, _ := n.Store().Blockstore().Has(ctx, b); has {
					t.Errorf("refused block %s was stored", b)
				}
			}
			for _, r := range tc.roots {
				if pinned, _ := n.Store().Pins().IsPinned(ctx, r); pinned {
					t.Errorf("root %s pinned by a refused import", r)
				}
			}
		})
	}

	// What was there before is still there, whole.
	r, err := c.CarExport(ctx, keptRoot.String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := carBlocks(t, r); len(got) != len(keptNodes) {
		t.Fatalf("the DAG held before exports %d blocks, want %d", len(got), len(keptNodes))
	}
	if pinned, _ := n.Store().Pins().IsPinned(ctx, keptRoot); !pinned {
		t.Fatal("the DAG held before lost its pin")
	}
}
