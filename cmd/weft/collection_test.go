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

// TestCollectionCLINames: `collection items` lists a collection's items and
// `collection list` the collections; --replication is -R. The old
// spellings, `collection ls` and -r, keep working, -r with a deprecation
// notice.
func TestCollectionCLINames(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	repo := a.Repo().Path
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) (string, string) {
		t.Helper()
		code, out, stderr := weft(t, append(args, "--repo", repo)...)
		if code != 0 {
			t.Fatalf("weft %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out, stderr
	}
	replicationOf := func(name string) int {
		t.Helper()
		out, _ := run("collection", "list", "--json")
		var cols []api.CollectionSummary
		if err := json.Unmarshal([]byte(out), &cols); err != nil {
			t.Fatal(err)
		}
		for _, c := range cols {
			if c.Name == name {
				return c.Replication
			}
		}
		t.Fatalf("collection list has no %q: %s", name, out)
		return 0
	}
	for _, tc := range []struct {
		name       string
		flag       []string
		want       int
		deprecated bool
	}{
		{"long", []string{"--replication", "2"}, 2, false},
		{"short", []string{"-R", "4"}, 4, false},
		{"old-short", []string{"-r", "5"}, 5, true},
		{"default", nil, 3, false},
	} {
		out, stderr := run(append([]string{"collection", "create", tc.name}, tc.flag...)...)
		if id := strings.TrimSpace(out); !strings.HasPrefix(id, "bafkrei") || strings.Contains(id, "\n") {
			t.Errorf("create %s %v printed %q, want the ID alone", tc.name, tc.flag, out)
		}
		if got := replicationOf(tc.name); got != tc.want {
			t.Errorf("create %s %v: replication %d, want %d", tc.name, tc.flag, got, tc.want)
		}
		if strings.Contains(stderr, "deprecated") != tc.deprecated {
			t.Errorf("create %s %v: stderr %q", tc.name, tc.flag, stderr)
		}
	}

	item, err := nodetest.Client(a).Add(ctx, files.NewBytesFile([]byte("named item")), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	itemsOf := func(cmd string) []api.CollectionItem {
		t.Helper()
		out, _ := run("collection", cmd, "long", "--json")
		var items []api.CollectionItem
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			t.Fatalf("collection %s: %v: %s", cmd, err, out)
		}
		return items
	}
	for _, tc := range []struct {
		flag []string
		want int
	}{
		{[]string{"-R", "1"}, 1},
		{[]string{"-r", "2"}, 2},
		{[]string{"--replication", "3"}, 3},
	} {
		run(append([]string{"collection", "add", "long", item, "--name", "x.txt"}, tc.flag...)...)
		for _, cmd := range []string{"items", "ls"} {
			got := itemsOf(cmd)
			if len(got) != 1 || got[0].CID != item || got[0].Replication != tc.want || got[0].Label != "x.txt" {
				t.Errorf("after add %v, collection %s: %+v", tc.flag, cmd, got)
			}
		}
	}
	if out, _ := run("collection", "items", "long"); !strings.Contains(out, item) || !strings.Contains(out, "x.txt") {
		t.Errorf("collection items table: %q", out)
	}
	if out, _ := run("collection", "list"); !strings.Contains(out, "long") || !strings.Contains(out, "old-short") {
		t.Errorf("collection list table: %q", out)
	}
}
