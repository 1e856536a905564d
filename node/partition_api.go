package node

import (
	"net/http"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node/api"
)

// The swarm/block routes let a testnet cut a node off from given peers
// without network namespaces (on loopback): the peers' connections are
// closed and refused both ways until unblocked. Nothing is persisted; a
// restart forgets the set. Like every endpoint they need the API token.

// blockRequestPeers reads the peers of a swarm/block or swarm/unblock body.
func blockRequestPeers(r *http.Request) ([]peer.ID, error) {
	var req api.BlockRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	out := make([]peer.ID, 0, len(req.Peers))
	for _, s := range req.Peers {
		id, err := parsePeer(s)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

func (n *Node) handleSwarmBlock(w http.ResponseWriter, r *http.Request) (any, error) {
	ids, err := blockRequestPeers(r)
	if err != nil {
		return nil, err
	}
	n.net.Block(ids...)
	return map[string]int{"blocked": len(ids)}, nil
}

func (n *Node) handleSwarmUnblock(w http.ResponseWriter, r *http.Request) (any, error) {
	ids, err := blockRequestPeers(r)
	if err != nil {
		return nil, err
	}
	n.net.Unblock(ids...)
	return map[string]int{"unblocked": len(ids)}, nil
}
