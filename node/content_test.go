package node_test

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func addBytes(t *testing.T, n *node.Node, data []byte) cid.Cid {
	t.Helper()
	c, err := n.Add(context.Background(), files.NewBytesFile(data), unixfs.DefaultOptions(), true, "", nil)
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	return c
}

func catBytes(t *testing.T, n *node.Node, c cid.Cid) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if err := n.Cat(ctx, c, 0, -1, &buf, nil); err != nil {
		t.Fatalf("cat %s on %s: %v", c, n.ID(), err)
	}
	return buf.Bytes()
}

// TestContentAcrossSwarm: A adds a 20 MiB file and a directory tree; E,
// which has never been given A's address, finds A through the DHT and
// fetches byte-identical data. E pins it; A stops; a new node F fetches it
// from E.
func TestContentAcrossSwarm(t *testing.T) {
	b := nodetest.Start(t, nodetest.Options{})
	boot := []string{nodetest.Addr(t, b)}
	a := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	c := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	d := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	e := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, d)}})
	_ = c

	big := randomBytes(1, 20<<20)
	fileCID := addBytes(t, a, big)
	tree := files.NewMapDirectory(map[string]files.Node{
		"readme.txt": files.NewBytesFile([]byte("hello weft\n")),
		"data.bin":   files.NewBytesFile(randomBytes(2, 300_000)),
		"sub": files.NewMapDirectory(map[string]files.Node{
			"deep.txt": files.NewBytesFile([]byte("deep")),
			"empty":    files.NewMapDirectory(nil),
		}),
	})
	treeCID, err := a.Add(context.Background(), tree, unixfs.DefaultOptions(), true, "tree", nil)
	if err != nil {
		t.Fatal(err)
	}

	// E learns of A only from the DHT's provider records.
	nodetest.WaitFor(t, 30*time.Second, "E finds A as provider through the DHT", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		provs, _ := e.Providers(ctx, fileCID, 5)
		for _, p := range provs {
			if p.ID == a.ID() && len(p.Addrs) > 0 {
				return true
			}
		}
		return false
	})
	e.Network().Host.Network().ClosePeer(a.ID())

	if got := catBytes(t, e, fileCID); !bytes.Equal(got, big) {
		t.Fatalf("E fetched %d bytes that differ from the %d added", len(got), len(big))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, root := range []cid.Cid{fileCID, treeCID} {
		if err := e.Pin(ctx, root, true, ""); err != nil {
			t.Fatalf("E pin %s: %v", root, err)
		}
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	f := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	if got := catBytes(t, f, fileCID); !bytes.Equal(got, big) {
		t.Fatal("F fetched data that differs from what A added")
	}
	want := map[string][]byte{"readme.txt": []byte("hello weft\n"), "data.bin": randomBytes(2, 300_000)}
	entries, err := f.Ls(ctx, treeCID)
	if err != nil {
		t.Fatalf("F ls tree: %v", err)
	}
	seen := 0
	for _, en := range entries {
		if w, ok := want[en.Name]; ok {
			seen++
			if got := catBytes(t, f, en.CID); !bytes.Equal(got, w) {
				t.Fatalf("F fetched %s differently", en.Name)
			}
		}
	}
	if seen != len(want) || len(entries) != 3 {
		t.Fatalf("tree entries: %+v", entries)
	}
}
