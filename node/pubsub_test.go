package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestPubsubThroughAPI: two subscribers that were never connected to the
// publisher or to each other find the topic's peers through the DHT
// rendezvous and receive every message, signed by the publisher.
func TestPubsubThroughAPI(t *testing.T) {
	seed := nodetest.Start(t, nodetest.Options{})
	boot := []string{nodetest.Addr(t, seed)}
	pub := nodetest.Start(t, nodetest.Options{Bootstrap: boot})
	subs := []*api.Client{
		nodetest.Client(nodetest.Start(t, nodetest.Options{Bootstrap: boot})),
		nodetest.Client(nodetest.Start(t, nodetest.Options{Bootstrap: boot})),
	}
	const topic, count = "weft-test-topic", 20
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan api.PubsubMessage, 2*count)
	for _, c := range subs {
		c := c
		go c.Subscribe(ctx, topic, func(m api.PubsubMessage) bool {
			got <- m
			return true
		})
	}
	pc := nodetest.Client(pub)
	// Publish a probe until both subscribers are meshed with the publisher.
	nodetest.WaitFor(t, 30*time.Second, "publisher sees both subscribers on the topic", func() bool {
		ps, _ := pc.PubsubPeers(ctx, topic)
		if len(ps) < 2 {
			_ = pc.Publish(ctx, topic, []byte("probe"))
		}
		return len(ps) >= 2
	})
	for i := 0; i < count; i++ {
		if err := pc.Publish(ctx, topic, []byte(fmt.Sprintf("msg-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for len(seen) < count || func() bool {
		for _, v := range seen {
			if v < 2 {
				return true
			}
		}
		return false
	}() {
		select {
		case m := <-got:
			if string(m.Data) == "probe" {
				continue
			}
			if m.From != pub.ID().String() || m.Topic != topic || m.Seqno == "" {
				t.Fatalf("bad message %+v", m)
			}
			seen[string(m.Data)]++
		case <-ctx.Done():
			t.Fatalf("only %d distinct messages arrived: %v", len(seen), seen)
		}
	}
}
