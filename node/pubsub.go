package node

import (
	"context"
	"fmt"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
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
