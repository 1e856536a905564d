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
	"github.com/weft-p2p/weft/node/nodetest"
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
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}})
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
	// 1 MiB raw leaves: 4 leaves and the root node.
	const blocks = 5
	dataBytes := float64(len(data)) + float64(st.BlockSize)
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"fetcher weft_bitswap_blocks_received_total", afterB["weft_bitswap_blocks_received_total"] - beforeB["weft_bitswap_blocks_received_total"], blocks},
		{"fetcher weft_bitswap_received_bytes_total", afterB["weft_bitswap_received_bytes_total"] - beforeB["weft_bitswap_received_bytes_total"], dataBytes},
		{"provider weft_bitswap_blocks_sent_total", afterA["weft_bitswap_blocks_sent_total"] - beforeA["weft_bitswap_blocks_sent_total"], blocks},
		{"provider weft_bitswap_sent_bytes_total", afterA["weft_bitswap_sent_bytes_total"] - beforeA["weft_bitswap_sent_bytes_total"], dataBytes},
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
