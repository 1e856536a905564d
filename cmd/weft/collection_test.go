package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestCollectionCLI drives `weft collection` against two daemons: create
// prints the ID, join takes it (and a local name), the other commands take
// either, and a node that may not write is told how to get a grant.
func TestCollectionCLI(t *testing.T) {
	tune := func(c *node.Config) {
		c.Collection.TickInterval = node.Duration(100 * time.Millisecond)
		c.Collection.HeartbeatInterval = node.Duration(200 * time.Millisecond)
		c.Collection.SuspectAfter = node.Duration(3 * time.Second) // no repair here: let a loaded machine be late
		c.Collection.GracePeriod = node.Duration(10 * time.Second)
	}
	a := nodetest.Start(t, nodetest.Options{Tune: tune})
	b := nodetest.Start(t, nodetest.Options{Tune: tune})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
		t.Fatal(err)
	}
	ra, rb := a.Repo().Path, b.Repo().Path
	ok := func(args ...string) string {
		t.Helper()
		code, out, stderr := weft(t, args...)
		if code != 0 {
			t.Fatalf("weft %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out
	}
	id := strings.TrimSpace(ok("collection", "create", "--repo", ra, "photos", "--replication", "2"))
	if !strings.HasPrefix(id, "bafkrei") {
		t.Fatalf("create printed %q, want the collection ID", id)
	}
	if out := ok("collection", "join", "--repo", rb, id, "pics"); !strings.Contains(out, `as "pics"`) {
		t.Fatalf("join: %q", out)
	}
	item, err := nodetest.Client(a).Add(ctx, files.NewBytesFile([]byte("hello collection")), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	code, _, stderr := weft(t, "collection", "add", "--repo", rb, "pics", item)
	if code == 0 || !strings.Contains(stderr, "may not write") || !strings.Contains(stderr, "weft collection grant") {
		t.Fatalf("add by a non-writer: exit %d, %q", code, stderr)
	}
	ok("collection", "grant", "--repo", ra, "photos", b.ID().String())
	nodetest.WaitFor(t, 10*time.Second, "b may write", func() bool {
		st, err := b.CollectionStatus("pics")
		return err == nil && st.CanWrite
	})
	ok("collection", "add", "--repo", rb, "pics", item, "--name", "hello.txt")
	nodetest.WaitFor(t, 10*time.Second, "the item on a", func() bool {
		return strings.Contains(ok("collection", "ls", "--repo", ra, id), "hello.txt")
	})
	nodetest.WaitFor(t, 20*time.Second, "the item ok on both, as both see it", func() bool {
		for _, args := range [][]string{{ra, "photos"}, {rb, id}} {
			var st api.CollectionStatus
			if err := json.Unmarshal([]byte(ok("collection", "status", "--repo", args[0], args[1], "--json")), &st); err != nil {
				t.Fatal(err)
			}
			if st.OK != 1 || len(st.ItemList) != 1 || len(st.ItemList[0].Pinned) != 2 {
				return false
			}
		}
		return true
	})
	out := ok("collection", "status", "--repo", rb, "pics")
	for _, want := range []string{id, "writer", "hello.txt", " ok ", "alive", "heads"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out = ok("collection", "list", "--repo", ra)
	if !strings.Contains(out, "photos") || !strings.Contains(out, "1 ok") {
		t.Errorf("list:\n%s", out)
	}
	ok("collection", "rm", "--repo", ra, "photos", item)
	nodetest.WaitFor(t, 10*time.Second, "the item gone from b", func() bool {
		return !strings.Contains(ok("collection", "ls", "--repo", rb, "pics"), item)
	})
	if code, _, stderr := weft(t, "collection", "status", "--repo", ra, "nosuch"); code == 0 || !strings.Contains(stderr, "weft collection list") {
		t.Errorf("unknown collection: exit %d, %q", code, stderr)
	}
	ok("collection", "leave", "--repo", rb, "pics", "--force")
	if out := ok("collection", "list", "--repo", rb); !strings.Contains(out, "no collections") {
		t.Errorf("list after leave: %q", out)
	}
}
