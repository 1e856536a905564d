package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the node's Prometheus registry. Gauges read the live state at
// scrape time; counters come from the subsystems' own counts, so nothing is
// counted twice.
type metrics struct {
	reg *prometheus.Registry
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	gauge := func(name, help string, fn func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
	}
	counter := func(name, help string, fn func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
	}
	ready := func() bool { return n.ready.Load() }
	gauge("weft_peers_connected", "Peers with at least one open connection.", func() float64 {
		if !ready() {
			return 0
		}
		return float64(len(n.net.Host.Network().Peers()))
	})
	gauge("weft_dht_routing_table_peers", "Peers in the DHT routing table.", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.net.DHT.RoutingTable().Size())
	})
	gauge("weft_store_blocks", "Blocks in the store.", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.store.Stat().Blocks)
	})
	gauge("weft_store_size_bytes", "Logical size of the stored blocks.", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.store.Stat().BlockBytes)
	})
	gauge("weft_store_limit_bytes", "Configured storage limit (0: unlimited).", func() float64 {
		return float64(n.cfg.Store.MaxBytes)
	})
	gauge("weft_pins", "Pins in the pin set.", func() float64 {
		if !ready() {
			return 0
		}
		pins, err := n.store.Pins().List(n.content.ctx)
		if err != nil {
			return 0
		}
		return float64(len(pins))
	})
	bitswap := func(pick func(blocksRecv, dataRecv, blocksSent, dataSent uint64) uint64) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			st, err := n.content.x.Stat()
			if err != nil {
				return 0
			}
			return float64(pick(st.BlocksReceived, st.DataReceived, st.BlocksSent, st.DataSent))
		}
	}
	counter("weft_bitswap_blocks_received_total", "Blocks received over Bitswap.", bitswap(func(a, _, _, _ uint64) uint64 { return a }))
	counter("weft_bitswap_received_bytes_total", "Block bytes received over Bitswap.", bitswap(func(_, b, _, _ uint64) uint64 { return b }))
	counter("weft_bitswap_blocks_sent_total", "Blocks sent over Bitswap.", bitswap(func(_, _, c, _ uint64) uint64 { return c }))
	counter("weft_bitswap_sent_bytes_total", "Block bytes sent over Bitswap.", bitswap(func(_, _, _, d uint64) uint64 { return d }))
	counter("weft_exchange_rejected_blocks_total", "Blocks from peers that matched no wanted CID (never stored).", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.content.x.BadBlocks())
	})
	return &metrics{reg: reg}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
