package node_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/protocol/feed"
)

// gossiper is a libp2p host with a gossipsub router of its own (no peer
// scoring, message signing on) that joins a topic and publishes whatever
// it is told to every peer on the topic, mesh or not: the attack of a peer
// that gossips garbage and ignores being pruned.
type gossiper struct {
	h     host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	out   *sendCounter
}

// sendCounter is a gossipsub tracer counting, per peer, the published
// messages sent and the RPCs dropped (for the failure message).
type sendCounter struct {
	mu      sync.Mutex
	sent    map[peer.ID]int
	dropped map[peer.ID]int
}

func (c *sendCounter) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	c.mu.Lock()
	c.sent[p] += len(rpc.GetPublish())
	c.mu.Unlock()
}

func (c *sendCounter) DropRPC(rpc *pubsub.RPC, p peer.ID) {
	c.mu.Lock()
	c.dropped[p] += len(rpc.GetPublish())
	c.mu.Unlock()
}

func (c *sendCounter) String(p peer.ID) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("sent %d, dropped %d", c.sent[p], c.dropped[p])
}

func (c *sendCounter) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (c *sendCounter) OnClosedOutboundStream(peer.ID)                       {}
func (c *sendCounter) Join(string)                                          {}
func (c *sendCounter) Leave(string)                                         {}
func (c *sendCounter) Graft(peer.ID, string)                                {}
func (c *sendCounter) Prune(peer.ID, string)                                {}
func (c *sendCounter) ValidateMessage(*pubsub.Message)                      {}
func (c *sendCounter) DeliverMessage(*pubsub.Message)                       {}
func (c *sendCounter) RejectMessage(*pubsub.Message, string)                {}
func (c *sendCounter) DuplicateMessage(*pubsub.Message)                     {}
func (c *sendCounter) ThrottlePeer(peer.ID)                                 {}
func (c *sendCounter) RecvRPC(*pubsub.RPC)                                  {}
func (c *sendCounter) UndeliverableMessage(*pubsub.Message)                 {}
func (c *sendCounter) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

func startGossiper(t *testing.T, topic string) *gossiper {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatalf("gossiper host: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gossiper{h: h, out: &sendCounter{sent: map[peer.ID]int{}, dropped: map[peer.ID]int{}}}
	t.Cleanup(func() {
		if g.sub != nil {
			g.sub.Cancel()
		}
		cancel()
		h.Close()
	})
	// Flood publishing sends every message to every peer on the topic,
	// in the mesh or not: the gossiper ignores the PRUNE a victim sends
	// once its score goes negative, as an attacker would. The queue holds
	// the whole flood: with gossipsub's default of 32 a slow victim would
	// see most of it dropped on the gossiper's side.
	if g.ps, err = pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(4096), pubsub.WithRawTracer(g.out)); err != nil {
		t.Fatalf("gossiper gossipsub: %v", err)
	}
	if g.topic, err = g.ps.Join(topic); err != nil {
		t.Fatalf("gossiper join: %v", err)
	}
	// Subscribed, so that its victims take it into their mesh.
	if g.sub, err = g.topic.Subscribe(); err != nil {
		t.Fatalf("gossiper subscribe: %v", err)
	}
	return g
}

// connect dials every node and waits until each side sees the other on the
// topic.
func (g *gossiper) connect(t *testing.T, nodes ...*node.Node) {
	t.Helper()
	for _, n := range nodes {
		if err := g.h.Connect(t.Context(), nodetest.AddrInfo(n)); err != nil {
			t.Fatalf("gossiper connect to %s: %v", n.ID(), err)
		}
	}
	topic := g.topic.String()
	nodetest.WaitFor(t, 20*time.Second, "gossiper and nodes see each other on the topic", func() bool {
		mine := map[peer.ID]bool{}
		for _, p := range g.ps.ListPeers(topic) {
			mine[p] = true
		}
		for _, n := range nodes {
			if !mine[n.ID()] || !contains(n.Network().PubSub.ListPeers(topic), g.h.ID()) {
				return false
			}
		}
		return true
	})
}

// flood publishes count messages made by msg, as fast as gossipsub takes
// them, and stops early when ctx ends.
func (g *gossiper) flood(ctx context.Context, count int, msg func(i int) []byte) error {
	for i := range count {
		if err := g.topic.Publish(ctx, msg(i)); err != nil {
			return fmt.Errorf("gossiper publish %d: %w", i, err)
		}
	}
	return nil
}

func contains(ps []peer.ID, p peer.ID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// invalidRecords returns count feed records for name that every honest
// node rejects: half are random bytes, half are well-formed records with
// ever higher sequence numbers, pointing at value, signed by a key that is
// not the feed's (each costs its victims a signature check).
func invalidRecords(t *testing.T, name string, value cid.Cid, count int) [][]byte {
	t.Helper()
	forger, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := feed.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, count)
	for i := range out {
		if i%2 == 0 {
			out[i] = make([]byte, 64+i%200)
			_, _ = rand.Read(out[i])
			continue
		}
		rec, err := feed.NewRecord(forger, path.FromCid(value), uint64(1_000_000+i), time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := feed.Validate(fn, rec, time.Now()); err == nil {
			t.Fatal("a forged record validates")
		}
		out[i] = rec
	}
	return out
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
		if err := f.FollowFeed(ctx, name, feed.FollowOptions{}); err != nil {
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

	g := startGossiper(t, feed.Topic(fn))
	g.connect(t, honest...)
	junk := invalidRecords(t, name, content, garbage)

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
		if err := g.flood(ctx, chunk, func(k int) []byte { return junk[i*chunk+k] }); err != nil {
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
			score, ok := n.Network().PeerScore(g.h.ID())
			connected := n.Network().Host.Network().Connectedness(g.h.ID()) == network.Connected
			banned := n.Network().Banned(g.h.ID())
			if ok && score < p2p.GraylistThreshold && !connected && banned {
				break
			}
			if time.Now().After(deadline) {
				c := n.FeedCounters()
				t.Fatalf("honest node %d not done with the gossiper %v after the flood began: score %.0f (known %v), connected %v, banned %v; gossiper to it: %s; feed counters %+v; topic stats %+v",
					i, cutOffBound, score, ok, connected, banned, g.out.String(n.ID()), c, n.Network().PubsubStats()[feed.Topic(fn)])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cutOff := time.Since(start)
	for _, n := range honest {
		// A dial back may complete its handshake on the gossiper's side
		// before the node's gater refuses it; it must not last.
		_ = g.h.Connect(ctx, nodetest.AddrInfo(n))
		nodetest.WaitFor(t, 10*time.Second, "node "+n.ID().String()+" refuses the banned gossiper", func() bool {
			return n.Network().Host.Network().Connectedness(g.h.ID()) != network.Connected &&
				g.h.Network().Connectedness(n.ID()) != network.Connected
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
			n.ID(), c.Rejected(), c.BadSignature, c.Malformed, c.SignatureChecks, scoreOf(n, g.h.ID()))
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
