package p2p

import (
	lp2pconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

// kbucketTag is the tag kad-dht gives the connection manager for its
// routing table's peers: it protects those of the two buckets farthest
// from the node (common prefix 0 and 1) from trimming, and tags the rest
// with kbucketValue.
const (
	kbucketTag   = "kbucket"
	kbucketValue = 5
)

// dhtUnprotected is the connection manager of a node with
// Config.DHTUnprotected: the DHT's protection of its two farthest buckets
// becomes a tag of the same value as the other buckets', so those
// connections are trimmed like any other. Every other protection (a
// topic's mesh, the NAT layer's relays) stays. It embeds the concrete
// manager, so gossipsub still finds its Decayer.
type dhtUnprotected struct {
	*connmgr.BasicConnMgr
}

// Protect protects p under tag, except kad-dht's routing-table tag, which
// it turns into a tag.
func (c dhtUnprotected) Protect(p peer.ID, tag string) {
	if tag == kbucketTag {
		c.TagPeer(p, tag, kbucketValue)
		return
	}
	c.BasicConnMgr.Protect(p, tag)
}

// Unprotect removes tag's protection and says whether p stays protected
// under another; kad-dht's routing-table tag never protected (kad-dht
// removes its tag itself).
func (c dhtUnprotected) Unprotect(p peer.ID, tag string) bool {
	if tag == kbucketTag {
		return c.IsProtected(p, "")
	}
	return c.BasicConnMgr.Unprotect(p, tag)
}

// hostConnManager is the connection manager the host is given.
func hostConnManager(cm *connmgr.BasicConnMgr, dhtUnprotect bool) lp2pconnmgr.ConnManager {
	if dhtUnprotect {
		return dhtUnprotected{cm}
	}
	return cm
}
