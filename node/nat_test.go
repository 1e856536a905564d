package node_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestRelayedConnectionAndFetch runs three real nodes on 127.0.0.1: a relay
// (relay service on, reachability forced public, as a publicly reachable
// node would be), a private node B that reserves a slot on it through
// relay.static, and a node A that knows B only by its /p2p-circuit address.
// A connects through the relay, sees the connection as relayed and limited
// in `peers`, and fetches a file from B over it (the native exchange opens
// its streams on limited connections). B's status names the relay it holds
// a reservation on, the relay's says it relays, and /metrics counts it.
// B announces none of its own addresses, so A never learns a direct one.
// Hole punching cannot turn this connection direct: no address here is
// public, so DCUtR has nothing to punch (the NAT scenario covers that).
func TestRelayedConnectionAndFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	relay := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Relay.Service = true
		c.Relay.Client = false
		c.NAT.Reachability = "public"
	}})
	relayAddr := nodetest.Addr(t, relay)
	// B hides its loopback addresses (addresses.no_announce), as a NAT
	// would: otherwise A learns them through identify over the relayed
	// connection and dials B directly, which on one machine just works.
	b := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.NAT.Reachability = "private"
		c.Relay.Static = []string{relayAddr}
		c.Addresses.NoAnnounce = []string{"/ip4/127.0.0.0/ipcidr/8"}
	}})
	a := nodetest.Start(t, nodetest.Options{})

	nodetest.WaitFor(t, 30*time.Second, "relay runs its relay service", func() bool {
		st, err := nodetest.Client(relay).Status(ctx)
		return err == nil && st.NAT.RelayService && st.NAT.Reachability == "public"
	})
	nodetest.WaitFor(t, 30*time.Second, "B holds a reservation on the relay", func() bool {
		st, err := nodetest.Client(b).Status(ctx)
		return err == nil && slices.Contains(st.NAT.Relays, relay.ID().String())
	})
	bst, err := nodetest.Client(b).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bst.NAT.Reachability != "private" {
		t.Errorf("B's reachability = %q, want private (forced)", bst.NAT.Reachability)
	}

	circuit := relayAddr + "/p2p-circuit/p2p/" + b.ID().String()
	if _, err := nodetest.Client(a).Connect(ctx, circuit); err != nil {
		t.Fatalf("connect A to B through the relay (%s): %v", circuit, err)
	}
	peers, err := nodetest.Client(a).Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(peers, func(p api.Peer) bool { return p.ID == b.ID().String() })
	if i < 0 {
		t.Fatalf("A's peers %+v lack B", peers)
	}
	if p := peers[i]; !p.Relayed || !p.Limited || p.Direct || p.Transport != "tcp" || !strings.Contains(p.Addr, "/p2p-circuit") {
		t.Errorf("A's connection to B = %+v, want relayed, limited, not direct, over tcp, with a /p2p-circuit address", p)
	}

	// Well under the relay's default data limit (128 KiB each way).
	data := randomBytes(16, 40_000)
	root := addBytes(t, b, data)
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := a.Fetch(fctx, root); err != nil {
		t.Fatalf("A fetches from B over the relayed connection: %v", err)
	}
	var got bytes.Buffer
	if err := a.Cat(ctx, root, 0, -1, &got, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("fetched %d bytes that differ from the %d added", got.Len(), len(data))
	}

	if p := peerOf(t, ctx, a, b); !p.Relayed || p.Direct {
		t.Fatalf("after the fetch A's connection to B is %+v, want still relayed only", p)
	}
	checkMetrics(t, "A", scrape(t, a), map[string]float64{
		`weft_connections{kind="relayed"}`:                       1,
		`weft_nat_reachability{state="unknown",transport="all"}`: 1,
		`weft_relay_reservations`:                                0,
	})
	checkMetrics(t, "B", scrape(t, b), map[string]float64{
		`weft_relay_reservations`:                                1,
		`weft_nat_reachability{state="private",transport="all"}`: 1,
	})
	checkMetrics(t, "the relay", scrape(t, relay), map[string]float64{
		`weft_relay_service_active`:                             1,
		`weft_nat_reachability{state="public",transport="all"}`: 1,
	})

	// Once a direct connection exists (here dialled by hand; behind NATs,
	// hole punching makes it), the relayed one is closed: go-libp2p leaves
	// it open until the relay's limits reset it, weft retires it.
	// B dials: A's own addresses reached B through identify (B hid its).
	if _, err := nodetest.Client(b).Connect(ctx, nodetest.Addr(t, a)); err != nil {
		t.Fatalf("connect B to A directly: %v", err)
	}
	nodetest.WaitFor(t, 30*time.Second, "the relayed connection between A and B is closed, the direct one stays", func() bool {
		p := peerOf(t, ctx, a, b)
		return p.Direct && !p.Relayed && relayedConns(a, b) == 0 && relayedConns(b, a) == 0
	})
}

func relayedConns(a, b *node.Node) int {
	n := 0
	for _, c := range a.Network().Host.Network().ConnsToPeer(b.ID()) {
		if c.Stat().Limited {
			n++
		}
	}
	return n
}

func peerOf(t *testing.T, ctx context.Context, a, b *node.Node) api.Peer {
	t.Helper()
	peers, err := nodetest.Client(a).Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(peers, func(p api.Peer) bool { return p.ID == b.ID().String() })
	if i < 0 {
		t.Fatalf("%s's peers lack %s", a.ID(), b.ID())
	}
	return peers[i]
}

func checkMetrics(t *testing.T, who string, got, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s's /metrics: %s = %v (present %v), want %v", who, k, g, ok, v)
		}
	}
}
