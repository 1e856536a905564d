package node_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// doubleLinkDAG builds a UnixFS tree depth directories deep in which every
// directory links twice, as "a" and "b", to the same directory one level
// down; the deepest holds one small file. A few KB of blocks describe
// 2^depth paths: any walk that does not remember what it visited takes
// exponential time. It returns the root and every block, each once.
func doubleLinkDAG(t *testing.T, depth int) (cid.Cid, []ipld.Node) {
	t.Helper()
	leaf := merkledag.NewRawNode([]byte("the bottom of the tree"))
	nodes := []ipld.Node{leaf}
	below := ft.EmptyDirNode()
	if err := below.AddNodeLink("leaf", leaf); err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, below)
	for range depth {
		dir := ft.EmptyDirNode()
		for _, name := range []string{"a", "b"} {
			if err := dir.AddNodeLink(name, below); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, dir)
		below = dir
	}
	return below.Cid(), nodes
}

// wideDAG builds a directory of dirs directories of files distinct files
// of size bytes each: many blocks, every one different.
func wideDAG(t *testing.T, dirs, files, size int) (cid.Cid, []ipld.Node) {
	t.Helper()
	root := ft.EmptyDirNode()
	var nodes []ipld.Node
	buf := make([]byte, size)
	for d := range dirs {
		dir := ft.EmptyDirNode()
		for f := range files {
			copy(buf, fmt.Sprintf("file %d of dir %d ", f, d))
			leaf := merkledag.NewRawNode(bytes.Clone(buf))
			if err := dir.AddNodeLink(fmt.Sprintf("f%05d", f), leaf); err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, leaf)
		}
		if err := root.AddNodeLink(fmt.Sprintf("d%03d", d), dir); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, dir)
	}
	return root.Cid(), append(nodes, root)
}

// carOf writes nodes as a CARv1 with root.
func carOf(t *testing.T, root cid.Cid, nodes []ipld.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := carstorage.NewWritable(&buf, []cid.Cid{root}, carv2.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		if err := w.Put(context.Background(), nd.Cid().KeyString(), nd.RawData()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// importCAR imports car into n through the API and pins its root.
func importCAR(t *testing.T, n *node.Node, car []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := nodetest.Client(n).CarImport(ctx, bytes.NewReader(car), true); err != nil {
		t.Fatalf("car import: %v", err)
	}
}

// carBlocks reads a CAR and counts how often each CID appears.
func carBlocks(t *testing.T, r io.Reader) map[cid.Cid]int {
	t.Helper()
	br, err := carv2.NewBlockReader(r)
	if err != nil {
		t.Fatalf("read CAR: %v", err)
	}
	out := map[cid.Cid]int{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read CAR: %v", err)
		}
		out[b.Cid()]++
	}
}

// TestWalksVisitEachBlockOnce runs every walk of a DAG over the depth-26
// double-link DAG (28 blocks, 2^26 paths): CAR export, get, ls, stat, pin,
// GC and a fetch from another node. Each must visit each block once, so
// each finishes in moments; one that followed every path would run for
// hours. Each walk gets a generous deadline so a regression fails instead
// of hanging the suite.
func TestWalksVisitEachBlockOnce(t *testing.T) {
	const depth = 26
	root, nodes := doubleLinkDAG(t, depth)
	car := carOf(t, root, nodes)
	t.Logf("DAG of depth %d: %d blocks, CAR of %d bytes", depth, len(nodes), len(car))

	a := nodetest.Start(t, nodetest.Options{})
	importCAR(t, a, car)
	ca := nodetest.Client(a)
	walkCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("car export", func(t *testing.T) {
		start := time.Now()
		r, err := ca.CarExport(walkCtx(t), root.String())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got := carBlocks(t, r)
		took := time.Since(start)
		if len(got) != len(nodes) {
			t.Errorf("exported %d distinct blocks, want %d", len(got), len(nodes))
		}
		for c, k := range got {
			if k != 1 {
				t.Errorf("block %s exported %d times", c, k)
			}
		}
		// Issue 15 asks explicitly that this DAG exports in under a second;
		// it takes milliseconds when each block is visited once, and the
		// old walk did not finish in 6 minutes.
		if took > time.Second {
			t.Errorf("export took %v, want under 1s", took)
		}
		t.Logf("export: %d blocks in %v", len(got), took)
	})

	t.Run("get", func(t *testing.T) {
		// 2^27 entries is far past content.max_get_entries: refused at
		// once, with a 4xx naming the limit, before anything is written.
		_, err := ca.Get(walkCtx(t), root.String(), "out")
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
			t.Fatalf("get: %v, want 422", err)
		}
		if !bytes.Contains([]byte(se.Message), []byte("content.max_get_entries")) {
			t.Errorf("get error %q does not name content.max_get_entries", se.Message)
		}
	})

	t.Run("ls", func(t *testing.T) {
		entries, err := ca.Ls(walkCtx(t), root.String())
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 || entries[0].CID != entries[1].CID || entries[0].Type != "directory" {
			t.Fatalf("ls: %+v, want a and b, the same directory", entries)
		}
	})

	t.Run("stat", func(t *testing.T) {
		st, err := ca.Stat(walkCtx(t), root.String())
		if err != nil {
			t.Fatal(err)
		}
		if st.Type != "directory" || !st.Local || !st.Pinned {
			t.Fatalf("stat: %+v", st)
		}
	})

	t.Run("pin", func(t *testing.T) {
		ctx := walkCtx(t)
		if err := ca.PinRm(ctx, root.String()); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.PinAdd(ctx, root.String(), true, "again"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("gc", func(t *testing.T) {
		res, err := ca.GC(walkCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if res.LiveBlocks < int64(len(nodes)) {
			t.Fatalf("GC kept %d live blocks, the pinned DAG has %d", res.LiveBlocks, len(nodes))
		}
	})

	t.Run("fetch", func(t *testing.T) {
		b := nodetest.Start(t, nodetest.Options{})
		cb := nodetest.Client(b)
		ctx := walkCtx(t)
		if _, err := cb.Connect(ctx, nodetest.Addr(t, a)); err != nil {
			t.Fatal(err)
		}
		if _, err := cb.PinAdd(ctx, root.String(), true, ""); err != nil {
			t.Fatalf("fetch and pin on a second node: %v", err)
		}
		r, err := cb.CarExport(ctx, root.String())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if got := carBlocks(t, r); len(got) != len(nodes) {
			t.Fatalf("second node exports %d blocks, want %d", len(got), len(nodes))
		}
	})
}

// TestGetWritesRepeatedDirectories checks that a get still writes a
// directory once per place that links it when the tree is within
// content.max_get_entries, and is refused just past it.
func TestGetWritesRepeatedDirectories(t *testing.T) {
	const depth = 4 // 2^5-1 directories and 2^4 files on the paths
	root, nodes := doubleLinkDAG(t, depth)
	entries := (1<<(depth+1) - 1) + 1<<depth
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.Content.MaxGetEntries = int64(entries) }})
	importCAR(t, n, carOf(t, root, nodes))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := nodetest.Client(n).Get(ctx, root.String(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	var got, files int
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
		if h.Typeflag == tar.TypeReg {
			files++
		}
	}
	if got != entries || files != 1<<depth {
		t.Fatalf("tar has %d entries, %d files; want %d, %d", got, files, entries, 1<<depth)
	}

	// One more level doubles it: past the limit.
	root2, nodes2 := doubleLinkDAG(t, depth+1)
	importCAR(t, n, carOf(t, root2, nodes2))
	_, err = nodetest.Client(n).Get(ctx, root2.String(), "out")
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity {
		t.Fatalf("get past the limit: %v, want 422", err)
	}
}

// TestCarExportStopsWhenClientLeaves starts exporting a DAG of many
// distinct blocks (far more than the connection's buffers hold), reads a
// little, and leaves. The export must end within a second, and the node
// must then close without its API shutdown timing out.
func TestCarExportStopsWhenClientLeaves(t *testing.T) {
	root, nodes := wideDAG(t, 16, 1000, 1024) // 16k blocks, 16 MB
	n := nodetest.Start(t, nodetest.Options{})
	importCAR(t, n, carOf(t, root, nodes))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := nodetest.Client(n).CarExport(ctx, root.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if k := n.ContentOpsInFlight(); k != 1 {
		t.Fatalf("%d content operations in flight mid-export, want 1 (the export)", k)
	}
	cancel()
	r.Close()
	// Issue 15 asks that a departed client frees the daemon within a
	// second: the export's operation ends when its handler returns.
	left := time.Now()
	nodetest.WaitFor(t, time.Second, "the export to end after its client left", func() bool {
		return n.ContentOpsInFlight() == 0
	})
	t.Logf("export ended %v after the client left", time.Since(left))

	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatalf("close after a departed export: %v", err)
	}
	t.Logf("node closed in %v", time.Since(start))
}
