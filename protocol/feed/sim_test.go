package feed

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	ipns_pb "github.com/ipfs/boxo/ipns/pb"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsub_pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// simNet is an in-memory gossip network for Managers: each node forwards a
// message to its neighbours only when its validator accepts it, drops
// messages it has seen, and delivers after a random delay (so messages
// overtake one another). It stands in for gossipsub, the catch-up stream
// protocol and the DHT; the real ones are node/'s to test.
type simNet struct {
	t      *testing.T
	router *fakeRouter
	nodes  []*simNode
	wg     sync.WaitGroup // deliveries in flight

	mu       sync.Mutex
	forwards map[[32]byte]int // times each message was forwarded
}

type simNode struct {
	net    *simNet
	id     peer.ID
	m      *Manager
	pinner *fakePinner
	links  []*simNode

	mu     sync.Mutex
	online bool
	joined map[string]pubsub.ValidatorEx // topic validators
	seen   map[[32]byte]bool
}

func newSimNet(t *testing.T, n int, clock Clock) *simNet {
	net := &simNet{t: t, router: newRouter(), forwards: map[[32]byte]int{}}
	for i := range n {
		nd := &simNode{net: net, id: peer.ID(fmt.Sprintf("node-%02d", i)), online: true,
			joined: map[string]pubsub.ValidatorEx{}, seen: map[[32]byte]bool{}, pinner: newPinner()}
		nd.pinner.delay = func() time.Duration { return time.Duration(rand.IntN(500)) * time.Microsecond }
		net.nodes = append(net.nodes, nd)
	}
	// A ring with chords: every node has four neighbours.
	for i, nd := range net.nodes {
		for _, d := range []int{1, n - 1, 3, n - 3} {
			nd.links = append(nd.links, net.nodes[(i+d)%n])
		}
	}
	for _, nd := range net.nodes {
		m, err := New(t.Context(), Config{Self: nd.id, Topics: nd, Router: net.router, Pinner: nd.pinner,
			Exchange: nd, Clock: clock, Logger: quiet, CatchUpTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		nd.m = m
	}
	t.Cleanup(func() {
		net.wg.Wait()
		for _, nd := range net.nodes {
			nd.m.Close()
		}
	})
	return net
}

func (nd *simNode) setOnline(on bool) {
	nd.mu.Lock()
	nd.online = on
	nd.mu.Unlock()
}

func (nd *simNode) isOnline() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.online
}

// Topics.

func (nd *simNode) Join(topic string, validate pubsub.ValidatorEx) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.joined[topic] = validate
	return nil
}

func (nd *simNode) Leave(topic string) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	delete(nd.joined, topic)
	return nil
}

// Publish validates locally (as gossipsub does, with the node itself as
// sender) and floods to the neighbours. Validation goes through the
// validator the Manager registered with Join, as it would in gossipsub.
func (nd *simNode) Publish(_ context.Context, topic string, data []byte) error {
	h := sha256.Sum256(data)
	nd.mu.Lock()
	nd.seen[h] = true
	validate := nd.joined[topic]
	nd.mu.Unlock()
	if validate == nil {
		return fmt.Errorf("topic %s not joined", topic)
	}
	msg := &pubsub.Message{Message: &pubsub_pb.Message{Data: data, Topic: &topic}, ReceivedFrom: nd.id}
	if r := validate(context.Background(), nd.id, msg); r != pubsub.ValidationAccept {
		return fmt.Errorf("local validation: %v", r)
	}
	nd.forward(nd.id, topic, data)
	return nil
}

func (nd *simNode) forward(from peer.ID, topic string, data []byte) {
	net := nd.net
	for _, nb := range nd.links {
		if nb.id == from {
			continue
		}
		net.mu.Lock()
		net.forwards[sha256.Sum256(data)]++
		net.mu.Unlock()
		net.wg.Add(1)
		go func() {
			defer net.wg.Done()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			nb.receive(nd.id, topic, data)
		}()
	}
}

// receive is a message arriving from a neighbour (or injected by an
// attacker): seen-cache, validator, and forwarding only if accepted.
func (nd *simNode) receive(from peer.ID, topic string, data []byte) {
	h := sha256.Sum256(data)
	nd.mu.Lock()
	validate := nd.joined[topic]
	if !nd.online || validate == nil || nd.seen[h] {
		nd.mu.Unlock()
		return
	}
	nd.seen[h] = true
	nd.mu.Unlock()
	msg := &pubsub.Message{Message: &pubsub_pb.Message{Data: data, Topic: &topic}, ReceivedFrom: from}
	if validate(context.Background(), from, msg) == pubsub.ValidationAccept {
		nd.forward(from, topic, data)
	}
}

// Exchange: topic peers are the online neighbours on the topic.

func (nd *simNode) TopicPeers(topic string) []peer.ID {
	var ps []peer.ID
	for _, nb := range nd.links {
		nb.mu.Lock()
		if nb.online && nb.joined[topic] != nil {
			ps = append(ps, nb.id)
		}
		nb.mu.Unlock()
	}
	return ps
}

func (nd *simNode) Request(_ context.Context, p peer.ID, req []byte) ([]byte, error) {
	if !nd.isOnline() {
		return nil, errors.New("offline")
	}
	for _, nb := range nd.links {
		if nb.id == p && nb.isOnline() {
			return nb.m.HandleRequest(nd.id, req)
		}
	}
	return nil, errors.New("unreachable")
}

// TestTenNodes is the scenario in memory: one node publishes 100
// updates to nine followers, one of which is offline for 20 of them; every
// follower ends at sequence 100 with that version pinned and every earlier
// one unpinned, no position ever goes back, and forged, replayed and
// expired records are rejected on every node, never forwarded, and counted.
func TestTenNodes(t *testing.T) {
	const (
		nodes   = 10
		updates = 100
		offFrom = 80 // the late node misses updates offFrom+1..offFrom+20
	)
	clock := newClock()
	net := newSimNet(t, nodes, clock)
	sk := testKey(t, 7)
	name := testName(t, sk)
	pub, late := net.nodes[0], net.nodes[5]
	followers := net.nodes[1:]
	for _, nd := range followers {
		follow(t, nd.m, name, FollowOptions{Pin: true})
	}

	// Watch every follower: held and pinned positions never go back.
	stop := make(chan struct{})
	var watch sync.WaitGroup
	for _, nd := range followers {
		watch.Go(func() {
			var held, pinned uint64
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Microsecond):
				}
				fi, _ := nd.m.Feed(name)
				if fi.Held.Seq < held || fi.Pinned.Seq < pinned {
					t.Errorf("%s went back: held %d->%d, pinned %d->%d", nd.id, held, fi.Held.Seq, pinned, fi.Pinned.Seq)
				}
				held, pinned = fi.Held.Seq, fi.Pinned.Seq
			}
		})
	}

	for i := uint64(1); i <= updates; i++ {
		if i == offFrom+1 {
			net.wg.Wait()
			late.setOnline(false)
		}
		rec, err := pub.m.Publish(t.Context(), sk, path.FromCid(contentCID(i)))
		if err != nil || rec.Seq != i {
			t.Fatalf("publish %d: seq %d, %v", i, rec.Seq, err)
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Microsecond)
	}
	net.wg.Wait()
	if fi, _ := late.m.Feed(name); fi.Held.Seq != offFrom {
		t.Fatalf("offline node holds seq %d, want %d", fi.Held.Seq, offFrom)
	}

	// The late node rejoins; node/ catches up on reconnect.
	late.setOnline(true)
	dhtBefore := late.m.Counters().CatchUpsDHT
	rejoined := time.Now()
	if err := late.m.CatchUpAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, nd := range followers {
		eventually(t, 10*time.Second, fmt.Sprintf("%s at seq %d pinned", nd.id, updates), func() bool {
			fi, _ := nd.m.Feed(name)
			return fi.Held.Seq == updates && fi.Pinned.Seq == updates && !fi.Fetching
		})
	}
	t.Logf("late node at seq %d %v after rejoining", updates, time.Since(rejoined))
	if d := time.Since(rejoined); d > 5*time.Second {
		t.Fatalf("late node took %v to catch up", d)
	}
	if c := late.m.Counters(); c.CatchUpsDHT != dhtBefore {
		t.Fatalf("late node fell back to the DHT though peers were up: %+v", c)
	}

	for _, nd := range followers {
		nd.pinner.waitPinnedOnly(t, name, contentCID(updates))
		// Pins happen in increasing order, and each unpin is of a version
		// older than the newest pinned by then.
		var last uint64
		for _, e := range nd.pinner.events() {
			s := seqOfContent(e.cid, updates)
			switch {
			case e.op == "pin" && s <= last:
				t.Errorf("%s pinned seq %d after %d", nd.id, s, last)
			case e.op == "unpin" && s >= last:
				t.Errorf("%s unpinned seq %d while %d was newest", nd.id, s, last)
			}
			if e.op == "pin" {
				last = s
			}
		}
	}

	// An attacker sends a forged, a replayed and an expired record to every
	// node, the publisher included.
	topic := Topic(name)
	forged := mutate(t, mustRecord(t, sk, updates+1, time.Hour, clock.Now()), func(pb *ipns_pb.IpnsRecord) { pb.SignatureV2[5] ^= 1 })
	var replayed []byte
	if r, err := pub.m.Resolve(t.Context(), name); err != nil {
		t.Fatal(err)
	} else {
		replayed = mustRecord(t, sk, r.Seq-50, time.Hour, clock.Now()) // a genuine but old record
	}
	expired := mustRecord(t, sk, updates+2, time.Hour, clock.Now().Add(-2*time.Hour))
	before := make([]Counters, nodes)
	for i, nd := range net.nodes {
		before[i] = nd.m.Counters()
	}
	for _, nd := range net.nodes {
		for _, data := range [][]byte{forged, replayed, expired} {
			nd.receive("attacker", topic, data)
		}
	}
	net.wg.Wait()
	for i, nd := range net.nodes {
		c := nd.m.Counters()
		if c.BadSignature-before[i].BadSignature != 1 || c.Stale-before[i].Stale != 1 ||
			c.Expired-before[i].Expired != 1 || c.Accepted != before[i].Accepted {
			t.Errorf("%s counters %+v, before %+v", nd.id, c, before[i])
		}
		if fi, _ := nd.m.Feed(name); fi.Held.Seq != updates {
			t.Errorf("%s holds seq %d after the attack", nd.id, fi.Held.Seq)
		}
	}
	net.mu.Lock()
	for _, data := range [][]byte{forged, replayed, expired} {
		if n := net.forwards[sha256.Sum256(data)]; n != 0 {
			t.Errorf("a rejected record was forwarded %d times", n)
		}
	}
	net.mu.Unlock()
	close(stop)
	watch.Wait()
}

func seqOfContent(c cid.Cid, max uint64) uint64 {
	for i := uint64(1); i <= max; i++ {
		if contentCID(i).Equals(c) {
			return i
		}
	}
	return 0
}
