package node_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/feed"
)

// scrape reads /metrics and returns the unlabelled samples.
func scrape(t *testing.T, n *node.Node) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// TestMetricsAfterFetch: a fetch moves the fetcher's received counters and
// the provider's sent counters by exactly the DAG's blocks and bytes.
func TestMetricsAfterFetch(t *testing.T) {
	bitswapOnly := func(c *node.Config) { c.Content.Native = false }
	a := nodetest.Start(t, nodetest.Options{Tune: bitswapOnly})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}, Tune: bitswapOnly})
	data := randomBytes(7, 3<<20+5)
	root := addBytes(t, a, data)

	st, err := nodetest.Client(a).Stat(context.Background(), root.String())
	if err != nil {
		t.Fatal(err)
	}
	beforeA, beforeB := scrape(t, a), scrape(t, b)
	if got := catBytes(t, b, root); len(got) != len(data) {
		t.Fatalf("fetched %d bytes", len(got))
	}
	nodetest.WaitFor(t, 10*time.Second, "metrics settle", func() bool {
		return scrape(t, a)["weft_bitswap_sent_bytes_total"]-beforeA["weft_bitswap_sent_bytes_total"] >= float64(st.CumulativeSize)-float64(st.BlockSize)
	})
	afterA, afterB := scrape(t, a), scrape(t, b)
	// 1 MiB raw leaves: 4 leaves and the root node. Bitswap may send a
	// block twice (a want re-sent while the block was in flight); the
	// duplicate counters say how many, so received minus duplicates is
	// exact, and the provider sent at least the DAG and exactly what the
	// fetcher received.
	const blocks = 5
	dataBytes := float64(len(data)) + float64(st.BlockSize)
	delta := func(m, before map[string]float64, k string) float64 { return m[k] - before[k] }
	recvBlocks := delta(afterB, beforeB, "weft_bitswap_blocks_received_total")
	recvBytes := delta(afterB, beforeB, "weft_bitswap_received_bytes_total")
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"fetcher blocks received - duplicates", recvBlocks - delta(afterB, beforeB, "weft_bitswap_duplicate_blocks_received_total"), blocks},
		{"fetcher bytes received - duplicates", recvBytes - delta(afterB, beforeB, "weft_bitswap_duplicate_received_bytes_total"), dataBytes},
		{"provider weft_bitswap_blocks_sent_total", delta(afterA, beforeA, "weft_bitswap_blocks_sent_total"), recvBlocks},
		{"provider weft_bitswap_sent_bytes_total", delta(afterA, beforeA, "weft_bitswap_sent_bytes_total"), recvBytes},
		{"fetcher weft_store_blocks", afterB["weft_store_blocks"] - beforeB["weft_store_blocks"], blocks},
		{"fetcher weft_exchange_rejected_blocks_total", afterB["weft_exchange_rejected_blocks_total"], 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, c.got, c.want)
		}
	}
	if afterB["weft_peers_connected"] < 1 || afterA["weft_pins"] != 1 {
		t.Errorf("peers %v pins %v", afterB["weft_peers_connected"], afterA["weft_pins"])
	}
}

// TestMetricsAfterNativeFetch: between weft nodes a fetch goes over the
// native exchange; its counters move by exactly the DAG, Bitswap's not at
// all.
func TestMetricsAfterNativeFetch(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}})
	data := randomBytes(8, 3<<20+5)
	root := addBytes(t, a, data)
	st, err := nodetest.Client(a).Stat(context.Background(), root.String())
	if err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 10*time.Second, "b knows a speaks the native exchange", func() bool {
		ps, _ := b.Network().Host.Peerstore().SupportsProtocols(a.ID(), "/weft/exchange/1.0.0")
		return len(ps) > 0
	})
	beforeA, beforeB := scrape(t, a), scrape(t, b)
	if got := catBytes(t, b, root); len(got) != len(data) {
		t.Fatalf("fetched %d bytes", len(got))
	}
	afterA, afterB := scrape(t, a), scrape(t, b)
	delta := func(m, before map[string]float64, k string) float64 { return m[k] - before[k] }
	dataBytes := float64(len(data)) + float64(st.BlockSize)
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"native blocks received", delta(afterB, beforeB, "weft_exchange_native_blocks_received_total"), 5},
		{"native bytes received", delta(afterB, beforeB, "weft_exchange_native_received_bytes_total"), dataBytes},
		{"native blocks sent", delta(afterA, beforeA, "weft_exchange_native_blocks_sent_total"), 5},
		{"native bytes sent", delta(afterA, beforeA, "weft_exchange_native_sent_bytes_total"), dataBytes},
		{"bitswap bytes received", delta(afterB, beforeB, "weft_bitswap_received_bytes_total"), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s moved by %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestMetricsAfterPublish: pubsub and feed counters move by exactly what
// was published.
func TestMetricsAfterPublish(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic, count = "metrics-topic", 7
	sub, err := b.Subscribe(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	// Warm up until b hears a; then count.
	nodetest.WaitFor(t, 30*time.Second, "b hears a on the topic", func() bool {
		if err := a.Publish(ctx, topic, []byte("warm")); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer wcancel()
		_, err := sub.Next(wctx)
		return err == nil
	})
	// Drain stragglers of the warm-up.
	for {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := sub.Next(dctx)
		dcancel()
		if err != nil {
			break
		}
	}
	key := `weft_pubsub_messages_delivered_total{topic="` + topic + `"}`
	before := scrape(t, b)[key]
	for i := 0; i < count; i++ {
		if err := a.Publish(ctx, topic, []byte("counted")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := scrape(t, b)[key] - before; got != count {
		t.Fatalf("%s moved by %v, want %d", key, got, count)
	}

	// A feed: b follows a's feed; one publish moves b's accepted count by
	// one and its sequence gauge to the record's sequence.
	keys, err := a.Keys()
	if err != nil {
		t.Fatal(err)
	}
	name := keys[0].Feed
	if err := b.FollowFeed(ctx, name, feed.FollowOptions{Pin: true}, true); err != nil {
		t.Fatal(err)
	}
	acc := `weft_feed_records_total{result="accepted"}`
	var rec api.FeedRecord
	nodetest.WaitFor(t, 30*time.Second, "b receives a's feed record", func() bool {
		before := scrape(t, b)[acc]
		rec, err = a.PublishFeed(ctx, "", addBytes(t, a, []byte(time.Now().String())))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			m := scrape(t, b)
			if m[acc]-before == 1 && m[`weft_feed_sequence{feed="`+name+`"}`] == float64(rec.Seq) {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	})
	nodetest.WaitFor(t, 30*time.Second, "pinned sequence and zero lag", func() bool {
		m := scrape(t, b)
		return m[`weft_feed_pinned_sequence{feed="`+name+`"}`] == float64(rec.Seq) && m[`weft_feed_lag{feed="`+name+`"}`] == 0
	})
}
