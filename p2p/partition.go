package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gate is the host's connection gater: the static allowlist of
// Config.AllowPeers (when set), a deny set that Block and Unblock change
// at run time, and the timed bans of peers whose gossipsub score fell
// below the graylist threshold (score.go). Tests use the deny set to
// partition a swarm of real hosts: unlike closing connections, it also
// keeps the DHT, the bootstrap loop and gossipsub from dialling back
// across the cut.
type gate struct {
	allow *allowlistGater // nil: every peer may connect

	mu   sync.RWMutex
	deny map[peer.ID]struct{}
	bans map[peer.ID]time.Time // banned until
}

// maxBans bounds the ban list: peer IDs cost an attacker nothing. Past it
// a bad peer is still disconnected, only not refused afterwards.
const maxBans = 10000

func newGate(allow []peer.ID) *gate {
	g := &gate{deny: map[peer.ID]struct{}{}, bans: map[peer.ID]time.Time{}}
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
	until, banned := g.bans[p]
	g.mu.RUnlock()
	return !denied && !(banned && time.Now().Before(until))
}

// ban refuses p until the given time.
func (g *gate) ban(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.bans[p]; ok || len(g.bans) < maxBans {
		g.bans[p] = until
	}
}

func (g *gate) banned(p peer.ID, now time.Time) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	until, ok := g.bans[p]
	return ok && now.Before(until)
}

func (g *gate) bannedCount(now time.Time) int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n := 0
	for _, until := range g.bans {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// pruneBans forgets bans that have run out.
func (g *gate) pruneBans(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, until := range g.bans {
		if !now.Before(until) {
			delete(g.bans, p)
		}
	}
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
