package node

import (
	"net/http"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node/api"
)

// partitionRoutes lets a testnet cut a node off from given peers without
// network namespaces (on loopback): the peers' connections are closed and
// refused both ways until unblocked. Nothing is persisted; a restart
// forgets the set. Like every endpoint it needs the API token off
// loopback.
func (n *Node) partitionRoutes(route func(string, handlerFunc)) {
	parse := func(r *http.Request) ([]peer.ID, error) {
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
	route("POST /api/v1/swarm/block", func(w http.ResponseWriter, r *http.Request) (any, error) {
		ids, err := parse(r)
		if err != nil {
			return nil, err
		}
		n.net.Block(ids...)
		return map[string]int{"blocked": len(ids)}, nil
	})
	route("POST /api/v1/swarm/unblock", func(w http.ResponseWriter, r *http.Request) (any, error) {
		ids, err := parse(r)
		if err != nil {
			return nil, err
		}
		n.net.Unblock(ids...)
		return map[string]int{"unblocked": len(ids)}, nil
	})
}
