package p2p

import (
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// allowlistGater admits only the listed peers, in both directions. The check
// that counts is InterceptSecured: it runs once the remote has proven its
// identity, so a peer cannot get past it by lying about its ID.
type allowlistGater struct {
	allowed map[peer.ID]struct{}
}

func newAllowlistGater(peers []peer.ID) *allowlistGater {
	g := &allowlistGater{allowed: make(map[peer.ID]struct{}, len(peers))}
	for _, p := range peers {
		g.allowed[p] = struct{}{}
	}
	return g
}

func (g *allowlistGater) ok(p peer.ID) bool {
	_, ok := g.allowed[p]
	return ok
}

func (g *allowlistGater) InterceptPeerDial(p peer.ID) bool                 { return g.ok(p) }
func (g *allowlistGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.ok(p) }
func (g *allowlistGater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *allowlistGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
func (g *allowlistGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.ok(p)
}
