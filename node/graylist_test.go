package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/adversary"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/protocol/feed"
)

// startGossiper starts an adversary that subscribes to topic and is seen
// on it by every node: it publishes whatever it is told to every peer on
// the topic, mesh or not, the attack of a peer that gossips garbage and
// ignores being pruned.
func startGossiper(t *testing.T, topic string, nodes ...*node.Node) *adversary.Peer {
	t.Helper()
	g, err := adversary.New(t.Context(), adversary.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Subscribe(topic); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := g.Connect(t.Context(), nodetest.AddrInfo(n)); err != nil {
			t.Fatal(err)
		}
	}
	nodetest.WaitFor(t, 20*time.Second, "gossiper and nodes see each other on the topic", func() bool {
		mine := map[peer.ID]bool{}
		for _, p := range g.TopicPeers(topic) {
			mine[p] = true
		}
		for _, n := range nodes {
			if !mine[n.ID()] || !contains(n.Network().PubSub.ListPeers(topic), g.ID()) {
				return false
			}
		}
		return true
	})
	return g
}

func contains(ps []peer.ID, p peer.ID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// TestGarbageGossiperGraylisted: a peer that sends 1,000 invalid records on
// a feed's topic is graylisted and then disconnected (and refused) by every
// honest node within 30 s, while 10 honest updates published during the
// attack each reach every follower in time. Both bounds are what issue 22's
// "Must show" asks for; they are generous against the sub-second figures
// measured, so that a loaded CI machine does not fail them.
func TestGarbageGossiperGraylisted(t *testing.T) {
	const (
		garbage       = 1000
		updates       = 10
		followers     = 3
		cutOffBound   = 30 * time.Second // graylisted and disconnected by every node
		deliveryBound = 10 * time.Second // each honest update at every follower
	)
	pub := nodetest.Start(t, nodetest.Options{})
	boot := []string{nodetest.Addr(t, pub)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keys, err := pub.Keys()
	if err != nil {
		t.Fatal(err)
	}
	name := keys[0].Feed
	fn, err := feed.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	var fs []*node.Node
	for range followers {
		f := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
		if err := f.FollowFeed(ctx, name, feed.FollowOptions{}, true); err != nil {
			t.Fatalf("follow: %v", err)
		}
		fs = append(fs, f)
	}
	honest := append([]*node.Node{pub}, fs...)
	content := addBytes(t, pub, []byte("feed content"))

	// The honest nodes are meshed: a warm-up record reaches every follower.
	// Publish returns before the record has spread, so each warm-up record
	// gets 250 ms to arrive before the next one replaces it.
	var warm uint64
	var warmAt time.Time
	nodetest.WaitFor(t, 30*time.Second, "followers meshed on the feed topic", func() bool {
		if time.Since(warmAt) >= 250*time.Millisecond {
			rec, err := pub.PublishFeed(ctx, "", content)
			if err != nil {
				t.Fatal(err)
			}
			warm, warmAt = rec.Seq, time.Now()
		}
		for _, f := range fs {
			if fi, _ := feedOf(f, name); fi.Held.Seq < warm {
				return false
			}
		}
		return true
	})

	topic := feed.Topic(fn)
	g := startGossiper(t, topic, honest...)
	junk, err := adversary.InvalidFeedRecords(name, content, garbage)
	if err != nil {
		t.Fatal(err)
	}

	// The flood goes out in chunks, an honest update right after each, so
	// that every update travels behind garbage; a watcher notes when each
	// follower first holds each sequence number.
	arrived := watchArrivals(t, fs, name)
	type update struct {
		seq  uint64
		sent time.Time
	}
	var sent []update
	start := time.Now()
	for i := range updates {
		chunk := garbage / updates
		if err := g.Flood(ctx, topic, chunk, 0, func(k int) []byte { return junk[i*chunk+k] }); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		rec, err := pub.PublishFeed(ctx, "", content)
		if err != nil {
			t.Fatalf("publish update %d: %v", i, err)
		}
		sent = append(sent, update{rec.Seq, at})
	}
	var worst time.Duration
	for i, u := range sent {
		for j := range fs {
			nodetest.WaitFor(t, time.Until(u.sent.Add(deliveryBound)), fmt.Sprintf("update %d (seq %d) at follower %d", i, u.seq, j), func() bool {
				_, ok := arrived(j, u.seq)
				return ok
			})
			at, _ := arrived(j, u.seq)
			worst = max(worst, at.Sub(u.sent))
		}
	}

	// Every honest node graylists the gossiper, disconnects it and
	// refuses it.
	for i, n := range honest {
		deadline := start.Add(cutOffBound)
		for {
			score, ok := n.Network().PeerScore(g.ID())
			connected := n.Network().Host.Network().Connectedness(g.ID()) == network.Connected
			banned := n.Network().Banned(g.ID())
			if ok && score < p2p.GraylistThreshold && !connected && banned {
				break
			}
			if time.Now().After(deadline) {
				c := n.FeedCounters()
				t.Fatalf("honest node %d not done with the gossiper %v after the flood began: score %.0f (known %v), connected %v, banned %v; gossiper to it: %s; feed counters %+v; topic stats %+v",
					i, cutOffBound, score, ok, connected, banned, sentTo(g, n.ID()), c, n.Network().PubsubStats()[feed.Topic(fn)])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cutOff := time.Since(start)
	for _, n := range honest {
		// A dial back may complete its handshake on the gossiper's side
		// before the node's gater refuses it; it must not last.
		_ = g.Host().Connect(ctx, nodetest.AddrInfo(n))
		nodetest.WaitFor(t, 10*time.Second, "node "+n.ID().String()+" refuses the banned gossiper", func() bool {
			return n.Network().Host.Network().Connectedness(g.ID()) != network.Connected &&
				g.Host().Network().Connectedness(n.ID()) != network.Connected
		})
		st := n.Network().ScoreStats()
		if st.Banned != 1 || st.Disconnected != 1 {
			t.Fatalf("node %s: score stats %+v; want only the gossiper banned", n.ID(), st)
		}
		for _, o := range honest {
			if o != n && n.Network().Banned(o.ID()) {
				t.Fatalf("node %s banned honest node %s", n.ID(), o.ID())
			}
		}
		c := n.FeedCounters()
		t.Logf("node %s: rejected %d (bad signature %d, malformed %d), signature checks %d, gossiper score %.0f",
			n.ID(), c.Rejected(), c.BadSignature, c.Malformed, c.SignatureChecks, scoreOf(n, g.ID()))
	}
	t.Logf("gossiper cut off by all %d nodes %v after the flood began; slowest honest update %v", len(honest), cutOff, worst)
}

// watchArrivals polls the followers' held sequence numbers until the test
// ends; the function it returns tells when follower j first held seq or a
// later one.
func watchArrivals(t *testing.T, fs []*node.Node, name string) func(j int, seq uint64) (time.Time, bool) {
	t.Helper()
	var mu sync.Mutex
	first := make([]map[uint64]time.Time, len(fs))
	last := make([]uint64, len(fs))
	for j, f := range fs {
		first[j] = map[uint64]time.Time{}
		fi, _ := feedOf(f, name)
		last[j] = fi.Held.Seq
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			for j, f := range fs {
				fi, _ := feedOf(f, name)
				now := time.Now()
				mu.Lock()
				for s := last[j] + 1; s <= fi.Held.Seq; s++ {
					first[j][s] = now
				}
				last[j] = max(last[j], fi.Held.Seq)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func(j int, seq uint64) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := first[j][seq]
		return at, ok
	}
}

func scoreOf(n *node.Node, p peer.ID) float64 {
	s, _ := n.Network().PeerScore(p)
	return s
}

func sentTo(g *adversary.Peer, p peer.ID) string {
	sent, dropped := g.SentTo(p)
	return fmt.Sprintf("sent %d, dropped %d", sent, dropped)
}
