package node

import (
	"encoding/hex"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/weft-p2p/weft/node/api"
)

func (n *Node) handlePubsubLs(w http.ResponseWriter, r *http.Request) (any, error) {
	ts := n.net.PubSub.GetTopics()
	sort.Strings(ts)
	if ts == nil {
		ts = []string{}
	}
	return ts, nil
}

func (n *Node) handlePubsubPeers(w http.ResponseWriter, r *http.Request) (any, error) {
	out := []string{}
	for _, p := range n.net.PubSub.ListPeers(r.URL.Query().Get("topic")) {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out, nil
}

func (n *Node) handlePubsubPub(w http.ResponseWriter, r *http.Request) (any, error) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		return nil, badRequest("missing topic")
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, int64(n.cfg.Pubsub.MaxMessageSize)+1))
	if err != nil {
		return nil, badRequest("read message: %v", err)
	}
	if err := n.Publish(r.Context(), topic, data); err != nil {
		return nil, err
	}
	return map[string]any{"topic": topic, "bytes": len(data)}, nil
}

// handlePubsubSub streams one api.PubsubMessage per line (NDJSON) until the
// client goes away.
func (n *Node) handlePubsubSub(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		writeError(w, badRequest("missing topic"))
		return
	}
	sub, err := n.Subscribe(topic)
	if err != nil {
		writeError(w, err)
		return
	}
	defer sub.Cancel()
	out := newNDJSON(w)
	for {
		m, err := sub.Next(r.Context())
		if err != nil {
			return // the client left, or the node is closing
		}
		out.send(api.PubsubMessage{
			From:     m.GetFrom().String(),
			Seqno:    hex.EncodeToString(m.GetSeqno()),
			Topic:    m.GetTopic(),
			Data:     m.GetData(),
			Received: time.Now(),
		})
	}
}
