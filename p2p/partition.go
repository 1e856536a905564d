package p2p

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gate is the host's connection gater: the static allowlist of
// Config.AllowPeers (when set) and a deny set that Block and Unblock change
// at run time. Tests use the deny set to partition a swarm of real hosts:
// unlike closing connections, it also keeps the DHT, the bootstrap loop and
// gossipsub from dialling back across the cut.
type gate struct {
	allow *allowlistGater // nil: every peer may connect

	mu   sync.RWMutex
	deny map[peer.ID]struct{}
}

func newGate(allow []peer.ID) *gate {
	g := &gate{deny: map[peer.ID]struct{}{}}
	if len(allow) > 0 {
		g.allow = newAllowlistGater(allow)
	}
	return g
}

func (g *gate) ok(p peer.ID) bool {
	if g.allow != nil && !g.allow.ok(p) {
		return false
	}
	g.mu.RLock()
	_, denied := g.deny[p]
	g.mu.RUnlock()
	return !denied
}

func (g *gate) InterceptPeerDial(p peer.ID) bool                 { return g.ok(p) }
func (g *gate) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.ok(p) }
func (g *gate) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *gate) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// InterceptSecured is the check that counts for inbound connections: it
// runs once the remote has proven its identity.
func (g *gate) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.ok(p)
}

// Block closes every connection to the given peers and refuses new ones,
// in both directions, until Unblock. It is meant for tests that partition
// a swarm; it does not persist.
func (n *Network) Block(peers ...peer.ID) {
	n.gate.mu.Lock()
	for _, p := range peers {
		n.gate.deny[p] = struct{}{}
	}
	n.gate.mu.Unlock()
	for _, p := range peers {
		_ = n.Host.Network().ClosePeer(p)
	}
}

// Unblock lets the given peers connect again. It dials nobody: the
// bootstrap loop, discovery or the caller reconnect.
func (n *Network) Unblock(peers ...peer.ID) {
	n.gate.mu.Lock()
	for _, p := range peers {
		delete(n.gate.deny, p)
	}
	n.gate.mu.Unlock()
}
