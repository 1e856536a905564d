package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

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
		if err := f.FollowFeed(ctx, name, feed.FollowOptions{Pin: true}, true); err != nil {
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
	// Publish returns at once (the DHT put runs in the background), so a
	// warm-up record gets 250ms to spread before the next one replaces it.
	warmCID := addBytes(t, pub, []byte("warm-up"))
	var warm uint64
	var warmAt time.Time
	nodetest.WaitFor(t, 30*time.Second, "followers meshed on the feed topic", func() bool {
		if warm != 0 {
			all := true
			for _, f := range fs {
				if fi, _ := feedOf(f, name); fi.Held.Seq < warm {
					all = false
				}
			}
			if all {
				return true
			}
		}
		if time.Since(warmAt) >= 250*time.Millisecond {
			rec, err := pub.PublishFeed(ctx, "", warmCID)
			if err != nil {
				t.Fatal(err)
			}
			warm, warmAt = rec.Seq, time.Now()
		}
		return false
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
		// Stale counts the node's network traffic too: a peer's catch-up
		// may bring an older record meanwhile, so the replay is at least one.
		if after.BadSignature+after.WrongName-before.BadSignature-before.WrongName != 1 ||
			after.Stale-before.Stale < 1 || after.Expired-before.Expired != 1 {
			t.Fatalf("node %s counters: before %+v after %+v", n.ID(), before, after)
		}
		if fi, _ := feedOf(n, name); fi.Held.Seq != final {
			t.Fatalf("node %s moved to seq %d after bad records", n.ID(), fi.Held.Seq)
		}
	}
}

// TestFeedPublishDuringPartition: with the publisher cut off from every
// other node, 20 publishes in a row each return in under a second (the DHT
// put goes on in the background), feed ls shows the failed DHT put, and
// after the partition heals the DHT takes the newest record and feed ls
// shows that too.
func TestFeedPublishDuringPartition(t *testing.T) {
	seed := nodetest.Start(t, nodetest.Options{})
	boot := []string{nodetest.Addr(t, seed)}
	others := []*node.Node{seed, nodetest.Start(t, nodetest.Options{Bootstrap: boot}), nodetest.Start(t, nodetest.Options{Bootstrap: boot})}
	pub := nodetest.Start(t, nodetest.Options{Bootstrap: boot, Tune: func(c *node.Config) {
		c.Feed.TickInterval = node.Duration(100 * time.Millisecond)
		c.Feed.RetryMin = node.Duration(200 * time.Millisecond)
	}})
	client := nodetest.Client(pub)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	keys, err := pub.Keys()
	if err != nil {
		t.Fatal(err)
	}
	name := keys[0].Feed
	content := addBytes(t, pub, []byte("feed content"))
	dhtOf := func() *api.FeedDHT {
		fs, err := client.FeedLs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if f.Name == name {
				return f.DHT
			}
		}
		return nil
	}

	nodetest.WaitFor(t, 30*time.Second, "the publisher's DHT routing table to hold the others", func() bool {
		return pub.Network().DHT.RoutingTable().Size() >= len(others)
	})
	asked := time.Now()
	rec, err := client.FeedPublish(ctx, "", content.String())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Published.Before(asked) || rec.Published.After(time.Now()) {
		t.Errorf("record published at %v, want between the request (%v) and its answer", rec.Published, asked)
	}
	nodetest.WaitFor(t, 30*time.Second, "the DHT to take the first record", func() bool {
		d := dhtOf()
		return d != nil && d.Seq == rec.Seq && d.LastError == ""
	})

	// Partition: the publisher and the rest refuse each other.
	var ids []peer.ID
	for _, o := range others {
		ids = append(ids, o.ID())
		o.Network().Block(pub.ID())
	}
	pub.Network().Block(ids...)

	// Issue 15 asks explicitly that each publish during a partition return
	// in under a second, 20 times out of 20 (it took 8s while the DHT put
	// ran inline).
	var slowest time.Duration
	for i := range 20 {
		start := time.Now()
		r, err := client.FeedPublish(ctx, "", content.String())
		took := time.Since(start)
		slowest = max(slowest, took)
		if err != nil {
			t.Fatalf("publish %d during the partition: %v", i, err)
		}
		if took > time.Second {
			t.Errorf("publish %d during the partition took %v, want under 1s", i, took)
		}
		rec = r
	}
	t.Logf("20 publishes during the partition, the slowest in %v", slowest)
	nodetest.WaitFor(t, 90*time.Second, "feed ls to show the failed DHT put", func() bool {
		d := dhtOf()
		return d != nil && d.LastError != "" && d.Seq < rec.Seq && d.Pending
	})
	t.Logf("during the partition: %+v", dhtOf())

	// Heal: the retried put lands the newest record.
	for _, o := range others {
		o.Network().Unblock(pub.ID())
	}
	pub.Network().Unblock(ids...)
	if _, err := client.Connect(ctx, nodetest.Addr(t, seed)); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 60*time.Second, "the DHT to take the newest record after the heal", func() bool {
		d := dhtOf()
		return d != nil && d.Seq == rec.Seq && d.LastError == "" && !d.Pending
	})
	if c := pub.FeedCounters(); c.DHTPutsFailed == 0 || c.DHTPuts < 2 {
		t.Fatalf("counters: %d DHT puts ok, %d failed", c.DHTPuts, c.DHTPutsFailed)
	}
}

// TestFeedFollowNoWait: a follow with NoWait answers before any record
// exists anywhere (the catch-up then runs in the background), a bad wait
// value is refused, and an update published afterwards arrives.
func TestFeedFollowNoWait(t *testing.T) {
	pub := nodetest.Start(t, nodetest.Options{})
	fol := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, pub)}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := pub.Keys()
	if err != nil {
		t.Fatal(err)
	}
	name := keys[0].Feed
	c := nodetest.Client(fol)

	err = c.Do(ctx, http.MethodPost, "/api/v1/feed/follow", url.Values{"name": {name}, "wait": {"soon"}}, nil, nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("follow with wait=soon: %v, want 400", err)
	}
	f, err := c.FeedFollow(ctx, name, api.FollowRequest{NoWait: true})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Following || f.Held.Seq != 0 {
		t.Fatalf("follow answered %+v", f)
	}
	if got, ok := feedOf(fol, name); !ok || !got.Following {
		t.Fatalf("feed ls after follow: %+v, %v", got, ok)
	}
	root := addBytes(t, pub, []byte("version 1"))
	if _, err := pub.PublishFeed(ctx, "self", root); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, "the follower holds seq 1", func() bool {
		got, _ := feedOf(fol, name)
		return got.Held.Seq == 1
	})
}
