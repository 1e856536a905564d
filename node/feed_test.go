package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/feed"
	"github.com/weft-p2p/weft/store"
)

// feedOf returns n's view of the named feed.
func feedOf(n *node.Node, name string) (api.Feed, bool) {
	for _, f := range n.Feeds() {
		if f.Name == name {
			return f, true
		}
	}
	return api.Feed{}, false
}

func pinnedAs(t *testing.T, n *node.Node, c cid.Cid) bool {
	t.Helper()
	p, err := n.Store().Pins().Get(context.Background(), c)
	return err == nil && p.Mode == store.Recursive
}

// TestFeedTenNodes: one node publishes 100 updates; 9 followers end at
// sequence 100 with that version pinned and the one before unpinned, and no
// follower's held sequence ever goes back. One follower is offline for 20
// of the updates and catches up after it rejoins.
func TestFeedTenNodes(t *testing.T) {
	seed := nodetest.Start(t, nodetest.Options{})
	boot := []string{nodetest.Addr(t, seed)}
	pub := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keys, err := pub.Keys()
	if err != nil {
		t.Fatal(err)
	}
	name := keys[0].Feed

	const followers, updates, offlineFrom, offlineTo = 9, 100, 40, 60
	var fs []*node.Node
	for i := 0; i < followers; i++ {
		f := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
		if err := f.FollowFeed(ctx, name, feed.FollowOptions{Pin: true}); err != nil {
			t.Fatalf("follow: %v", err)
		}
		fs = append(fs, f)
	}
	offlineDir := fs[0].Repo().Path

	// Watch every follower's held sequence: it must never go back.
	var mu sync.Mutex
	var regress []string
	last := map[int]uint64{}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var live sync.Map // index -> *node.Node
	for i, f := range fs {
		live.Store(i, f)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for watchCtx.Err() == nil {
			live.Range(func(k, v any) bool {
				f, ok := feedOf(v.(*node.Node), name)
				if ok {
					mu.Lock()
					if f.Held.Seq < last[k.(int)] {
						regress = append(regress, fmt.Sprintf("follower %d went from %d to %d", k, last[k.(int)], f.Held.Seq))
					}
					last[k.(int)] = f.Held.Seq
					mu.Unlock()
				}
				return true
			})
			<-tick.C
		}
	}()

	// Wait until the followers are on the feed's topic with the publisher.
	nodetest.WaitFor(t, 30*time.Second, "followers meshed on the feed topic", func() bool {
		rec, err := pub.PublishFeed(ctx, "", addBytes(t, pub, []byte("warm-up")))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if fi, _ := feedOf(f, name); fi.Held.Seq != rec.Seq {
				return false
			}
		}
		return true
	})
	base, _ := feedOf(pub, name)
	start := base.Held.Seq

	versions := make([]cid.Cid, updates+1)
	for i := 1; i <= updates; i++ {
		if i == offlineFrom {
			live.Delete(0)
			if err := fs[0].Close(); err != nil {
				t.Fatal(err)
			}
		}
		if i == offlineTo {
			fs[0] = nodetest.StartRepo(t, offlineDir, nil)
			live.Store(0, fs[0])
		}
		versions[i] = addBytes(t, pub, []byte(fmt.Sprintf("version %d of the feed", i)))
		if _, err := pub.PublishFeed(ctx, "", versions[i]); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	final := start + updates
	for i, f := range fs {
		nodetest.WaitFor(t, 60*time.Second, fmt.Sprintf("follower %d at seq %d with it pinned", i, final), func() bool {
			fi, _ := feedOf(f, name)
			return fi.Held.Seq == final && fi.Pinned.Seq == final
		})
		if !pinnedAs(t, f, versions[updates]) {
			t.Fatalf("follower %d: latest version not pinned", i)
		}
		nodetest.WaitFor(t, 10*time.Second, "previous version unpinned", func() bool {
			return !pinnedAs(t, f, versions[updates-1])
		})
	}
	stopWatch()
	wg.Wait()
	if len(regress) > 0 {
		t.Fatalf("a follower applied an older record after a newer one: %v", regress)
	}

	// Forged, replayed and expired records are rejected on every node.
	if _, err := pub.GenKey("forger"); err != nil {
		t.Fatal(err)
	}
	forgerKey, err := pub.Key("forger")
	if err != nil {
		t.Fatal(err)
	}
	ownKey, err := pub.Key("")
	if err != nil {
		t.Fatal(err)
	}
	feedName, err := feed.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	v := path.FromCid(versions[1])
	forged, err := feed.NewRecord(forgerKey, v, final+1, time.Hour, time.Now()) // signed by the wrong key
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := feed.NewRecord(ownKey, v, final-50, time.Hour, time.Now()) // an old sequence number
	if err != nil {
		t.Fatal(err)
	}
	expired, err := feed.NewRecord(ownKey, v, final+2, time.Minute, time.Now().Add(-time.Hour)) // validity over
	if err != nil {
		t.Fatal(err)
	}
	all := append([]*node.Node{pub}, fs...)
	for _, n := range all {
		before := n.FeedCounters()
		for _, rec := range [][]byte{forged, replayed, expired} {
			d := n.HandleFeedRecord(feedName, rec)
			if d.Verdict == feed.Accept {
				t.Fatalf("node %s accepted a bad record: %+v", n.ID(), d)
			}
		}
		after := n.FeedCounters()
		if after.BadSignature+after.WrongName-before.BadSignature-before.WrongName != 1 ||
			after.Stale-before.Stale != 1 || after.Expired-before.Expired != 1 {
			t.Fatalf("node %s counters: before %+v after %+v", n.ID(), before, after)
		}
		if fi, _ := feedOf(n, name); fi.Held.Seq != final {
			t.Fatalf("node %s moved to seq %d after bad records", n.ID(), fi.Held.Seq)
		}
	}
}
