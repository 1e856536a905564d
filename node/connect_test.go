package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/weft-p2p/weft/node/nodetest"
)

// TestConnectAfterDisconnect: `weft connect` right after `weft disconnect`
// succeeds, 20 times out of 20. It failed about half the time with "dial
// backoff": a redial that fails while the old connection goes away puts the
// peer in the swarm's dial backoff, and the user's explicit connect then
// failed without dialling. Every other round here puts b in a's backoff,
// as such a failed dial does; an explicit connect must dial regardless.
func TestConnectAfterDisconnect(t *testing.T) {
	// Both transports, as a daemon runs by default.
	a := nodetest.Start(t, nodetest.Options{QUIC: true})
	b := nodetest.Start(t, nodetest.Options{QUIC: true})
	ca := nodetest.Client(a)
	addr := nodetest.Addr(t, b)
	sw, ok := a.Network().Host.Network().(*swarm.Swarm)
	if !ok {
		t.Fatalf("a's network is a %T, not a swarm", a.Network().Host.Network())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := ca.Connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := ca.Disconnect(ctx, b.ID().String()); err != nil {
			t.Fatalf("round %d: disconnect: %v", i, err)
		}
		// Either side may redial at once (bootstrap, DHT); on odd rounds,
		// before it does, a dial that failed meanwhile is simulated.
		if i%2 == 1 {
			for _, ma := range b.Network().Host.Addrs() {
				sw.Backoff().AddBackoff(b.ID(), ma)
			}
		}
		if _, err := ca.Connect(ctx, addr); err != nil {
			t.Fatalf("round %d: connect right after disconnect: %v", i, err)
		}
		if !nodetest.Connected(a, b) {
			t.Fatalf("round %d: connect answered but a is not connected to b", i)
		}
	}
}
