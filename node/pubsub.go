package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sort"

	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/weft-p2p/weft/node/api"
)

// topic joins a topic (feeds, collections and user pubsub all come here)
// through the p2p layer, which scores every topic it joins.
func (n *Node) topic(name string) (*pubsub.Topic, error) { return n.net.Topic(name) }

// Publish sends data on a topic.
func (n *Node) Publish(ctx context.Context, topic string, data []byte) error {
	if int64(len(data)) > int64(n.cfg.Pubsub.MaxMessageSize) {
		return badRequest("message of %d bytes is over pubsub.max_message_size (%d)", len(data), n.cfg.Pubsub.MaxMessageSize)
	}
	t, err := n.topic(topic)
	if err != nil {
		return err
	}
	if err := t.Publish(ctx, data); err != nil {
		return fmt.Errorf("publish on %q: %w", topic, err)
	}
	return nil
}

// Subscribe returns a subscription to a topic; cancel it when done.
func (n *Node) Subscribe(topic string) (*pubsub.Subscription, error) {
	t, err := n.topic(topic)
	if err != nil {
		return nil, err
	}
	// A subscriber that reads slower than messages arrive loses messages
	// once this buffer is full (gossipsub never blocks the router on a
	// reader), so give API streams room for bursts.
	sub, err := t.Subscribe(pubsub.WithBufferSize(1024))
	if err != nil {
		return nil, fmt.Errorf("subscribe to %q: %w", topic, err)
	}
	return sub, nil
}

func (n *Node) pubsubRoutes(route func(string, handlerFunc), mux *http.ServeMux) {
	route("POST /api/v1/pubsub/pub", n.handlePubsubPub)
	mux.HandleFunc("GET /api/v1/pubsub/sub", n.handlePubsubSub)
	route("GET /api/v1/pubsub/ls", func(w http.ResponseWriter, r *http.Request) (any, error) {
		ts := n.net.PubSub.GetTopics()
		sort.Strings(ts)
		if ts == nil {
			ts = []string{}
		}
		return ts, nil
	})
	route("GET /api/v1/pubsub/peers", func(w http.ResponseWriter, r *http.Request) (any, error) {
		out := []string{}
		for _, p := range n.net.PubSub.ListPeers(r.URL.Query().Get("topic")) {
			out = append(out, p.String())
		}
		sort.Strings(out)
		return out, nil
	})
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
			From:  m.GetFrom().String(),
			Seqno: hex.EncodeToString(m.GetSeqno()),
			Topic: m.GetTopic(),
			Data:  m.GetData(),
		})
	}
}
