package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/p2p"
)

// TestDHTDiscovery starts a seed and 8 nodes that know only the seed. Each
// node drops every connection but the seed's, then finds every other node
// through a DHT lookup (the API's find-peer) and connects to the addresses
// the lookup returned.
func TestDHTDiscovery(t *testing.T) {
	// No bootstrap rounds during the test: a round would redial the peers
	// the test disconnects while its lookups run.
	quiet := func(c *node.Config) {
		c.DHT.BootstrapInterval = node.Duration(time.Hour)
		c.DHT.LowPeers = 1
	}
	seed := nodetest.Start(t, nodetest.Options{Tune: quiet})
	seedAddr := nodetest.Addr(t, seed)
	const n = 8
	nodes := make([]*node.Node, n)
	for i := range nodes {
		nodes[i] = nodetest.Start(t, nodetest.Options{Bootstrap: []string{seedAddr}, Tune: quiet})
	}
	all := append([]*node.Node{seed}, nodes...)
	// Let the start-up routing table refreshes finish: they dial peers.
	for _, nd := range all {
		nodetest.WaitFor(t, 30*time.Second, "routing tables filled by DHT walks", func() bool {
			return nd.Network().DHT.RoutingTable().Size() == n
		})
	}
	for _, a := range nodes {
		// Forget everyone but the seed, so that the lookups below cannot
		// be answered from a live connection.
		for _, p := range a.Network().Host.Network().Peers() {
			if p != seed.ID() {
				a.Network().Host.Network().ClosePeer(p)
			}
		}

		c := nodetest.Client(a)
		for _, b := range all {
			if b == a || b == seed {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			pi, err := c.FindPeer(ctx, b.ID().String())
			cancel()
			if err != nil {
				t.Logf("a RT size %d, has b: %v, conn to b: %v, a peers %d", a.Network().DHT.RoutingTable().Size(), a.Network().DHT.RoutingTable().Find(b.ID()) != "", a.Network().Host.Network().Connectedness(b.ID()), len(a.Network().Host.Network().Peers()))
				t.Logf("seed RT has b: %v; b RT size %d; b protocols %v", seed.Network().DHT.RoutingTable().Find(b.ID()) != "", b.Network().DHT.RoutingTable().Size(), b.Network().DHT.Mode())
				t.Fatalf("%s find-peer %s: %v", a.ID(), b.ID(), err)
			}
			if pi.ID != b.ID().String() || len(pi.Addrs) == 0 {
				t.Fatalf("find-peer %s returned %+v", b.ID(), pi)
			}
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			_, err = c.Connect(ctx, pi.Addrs[0]+"/p2p/"+pi.ID)
			cancel()
			if err != nil {
				t.Fatalf("%s connect to %s at %s: %v", a.ID(), b.ID(), pi.Addrs[0], err)
			}
			if !nodetest.Connected(a, b) {
				t.Fatalf("%s not connected to %s after connect", a.ID(), b.ID())
			}
		}
	}
}

// TestPrivateSwarms runs two private swarms with different keys and one
// local-profile node: each swarm works inside, and no connection succeeds
// across them.
func TestPrivateSwarms(t *testing.T) {
	keyA, err := p2p.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := p2p.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	swarm := func(key []byte) []*node.Node {
		seed := nodetest.Start(t, nodetest.Options{SwarmKey: key, QUIC: true})
		out := []*node.Node{seed}
		for i := 0; i < 2; i++ {
			out = append(out, nodetest.Start(t, nodetest.Options{SwarmKey: key, Bootstrap: []string{nodetest.Addr(t, seed)}}))
		}
		return out
	}
	a, b := swarm(keyA), swarm(keyB)
	public := nodetest.Start(t, nodetest.Options{})

	// Inside each swarm the members find each other through the DHT, once
	// their routing tables hold their swarm (peers enter a table only after
	// identify, a little after the bootstrap connection is up).
	for _, s := range [][]*node.Node{a, b} {
		for _, x := range s {
			nodetest.WaitFor(t, 20*time.Second, "routing tables hold the swarm", func() bool {
				return x.Network().DHT.RoutingTable().Size() == len(s)-1
			})
		}
	}
	for _, s := range [][]*node.Node{a, b} {
		for _, x := range s[1:] {
			for _, y := range s[1:] {
				if x == y {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				ai, err := x.Network().DHT.FindPeer(ctx, y.ID())
				cancel()
				if err != nil {
					t.Fatalf("inside private swarm: find %s: %v", y.ID(), err)
				}
				ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
				err = x.Network().Host.Connect(ctx, ai)
				cancel()
				if err != nil {
					t.Fatalf("inside private swarm: connect: %v", err)
				}
			}
		}
		st, err := nodetest.Client(s[0]).Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.DHT.Mode != "server" {
			t.Fatalf("local-profile node reports DHT mode %q, want server", st.DHT.Mode)
		}
		if !st.Private || len(st.Transports) != 1 || st.Transports[0] != "tcp" || st.TransportNote == "" {
			t.Fatalf("private node status: private=%v transports=%v note=%q", st.Private, st.Transports, st.TransportNote)
		}
	}
	if a[0].Network().DHTProtocol() == b[0].Network().DHTProtocol() || a[0].Network().DHTProtocol() == public.Network().DHTProtocol() {
		t.Fatalf("private swarms share a DHT protocol: %s %s %s", a[0].Network().DHTProtocol(), b[0].Network().DHTProtocol(), public.Network().DHTProtocol())
	}

	// Across swarms every dial fails, in both directions. The dials run
	// at once: each waits for a handshake that can never complete.
	groups := [][]*node.Node{a, b, {public}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var leaks []string
	for gi, g := range groups {
		for gj, h := range groups {
			if gi == gj {
				continue
			}
			for _, x := range g {
				for _, y := range h {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						err := x.Network().Host.Connect(ctx, nodetest.AddrInfo(y))
						cancel()
						if err == nil || nodetest.Connected(x, y) {
							mu.Lock()
							leaks = append(leaks, fmt.Sprintf("group %d -> group %d", gi, gj))
							mu.Unlock()
						}
					}()
				}
			}
		}
	}
	wg.Wait()
	if len(leaks) > 0 {
		t.Fatalf("connections across swarms succeeded: %v", leaks)
	}
}

// TestRestartReconnects restarts a node with no bootstrap list: it keeps its
// peer ID and reconnects to the peers it had before.
func TestRestartReconnects(t *testing.T) {
	seed := nodetest.Start(t, nodetest.Options{})
	other := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, seed)}})
	dir := nodetest.Init(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, seed)}})

	first := nodetest.StartRepo(t, dir, nil)
	id := first.ID()
	nodetest.WaitFor(t, 20*time.Second, "connected to seed and other", func() bool {
		return nodetest.Connected(first, seed) && nodetest.Connected(first, other)
	})
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	nodetest.WaitFor(t, 10*time.Second, "peers notice the close", func() bool {
		return !nodetest.Connected(seed, first) && !nodetest.Connected(other, first)
	})

	cfg, err := node.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bootstrap = nil
	if err := node.SaveConfigFile(dir, cfg); err != nil {
		t.Fatal(err)
	}
	second := nodetest.StartRepo(t, dir, nil)
	if second.ID() != id {
		t.Fatalf("peer ID changed across restart: %s -> %s", id, second.ID())
	}
	nodetest.WaitFor(t, 20*time.Second, "reconnected to former peers without bootstrap", func() bool {
		return nodetest.Connected(second, seed) && nodetest.Connected(second, other)
	})
}
