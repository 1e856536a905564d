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
	type recv struct {
		sub int
		m   api.PubsubMessage
	}
	got := make(chan recv, 4096)
	for i, c := range subs {
		i, c := i, c
		go c.Subscribe(ctx, topic, func(m api.PubsubMessage) bool {
			got <- recv{i, m}
			return true
		})
	}
	pc := nodetest.Client(pub)
	// Warm up: probe until every subscriber has heard the publisher once.
	// The DHT rendezvous brings them together; the first messages may
	// precede the connections.
	warm := map[int]bool{}
	probe := time.NewTicker(100 * time.Millisecond)
	defer probe.Stop()
	for len(warm) < len(subs) {
		select {
		case r := <-got:
			if string(r.m.Data) == "probe" {
				warm[r.sub] = true
			}
		case <-probe.C:
			if err := pc.Publish(ctx, topic, []byte("probe")); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("subscribers never heard the publisher: %v", warm)
		}
	}
	sent := time.Now()
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
		case r := <-got:
			m := r.m
			if string(m.Data) == "probe" {
				continue
			}
			// The subscriber's own time of receipt, for the testnet's latency.
			if m.Received.Before(sent) || m.Received.After(time.Now()) {
				t.Errorf("message %q received at %v, want between its publishing (%v) and now", m.Data, m.Received, sent)
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
