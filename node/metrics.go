package node

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/protocol/feed"
)

// metrics is the node's Prometheus registry. Gauges read the live state at
// scrape time; counters come from the subsystems' own counts, so nothing is
// counted twice.
type metrics struct {
	reg      *prometheus.Registry
	dhtCount *prometheus.CounterVec
	dhtTime  *prometheus.HistogramVec
}

// observeDHT records one DHT operation (find-peer, find-providers, provide).
func (m *metrics) observeDHT(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.dhtCount.WithLabelValues(op, result).Inc()
	m.dhtTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
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
	counter("weft_memory_trims_total", "Times the daemon, gone quiet, collected its garbage and gave the memory back to the OS (runtime.memory_trim_interval).", func() float64 {
		return float64(n.memTrims.Load())
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
	gauge("weft_content_ops_in_flight", "Content operations running (adds, fetches, pins, reads, exports).", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.content.ops.Load())
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
	dup := func(pick func(blocks, data uint64) uint64) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			st, err := n.content.x.Stat()
			if err != nil {
				return 0
			}
			return float64(pick(st.DupBlksReceived, st.DupDataReceived))
		}
	}
	counter("weft_bitswap_duplicate_blocks_received_total", "Blocks received over Bitswap that were already held (wasted transfer).", dup(func(b, _ uint64) uint64 { return b }))
	counter("weft_bitswap_duplicate_received_bytes_total", "Bytes of duplicate blocks received over Bitswap.", dup(func(_, d uint64) uint64 { return d }))
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
	nat := func(pick func(NativeStats) int64) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			return float64(pick(n.NativeStats()))
		}
	}
	counter("weft_exchange_native_blocks_received_total", "Blocks fetched through weft's native exchange (verified and stored).", nat(func(s NativeStats) int64 { return s.Blocks }))
	counter("weft_exchange_native_received_bytes_total", "Block bytes fetched through weft's native exchange.", nat(func(s NativeStats) int64 { return s.Bytes }))
	counter("weft_exchange_native_blocks_sent_total", "Blocks served through weft's native exchange.", nat(func(s NativeStats) int64 { return s.Served.Blocks }))
	counter("weft_exchange_native_sent_bytes_total", "Block bytes served through weft's native exchange.", nat(func(s NativeStats) int64 { return s.Served.Bytes }))
	counter("weft_exchange_native_rejected_blocks_total", "Blocks refused by the native exchange because they did not match their CID.", nat(func(s NativeStats) int64 { return s.BadBlocks }))
	counter("weft_exchange_native_busy_total", "Native exchange streams refused as busy (native_max_streams, or native_streams_per_peer for their peer).", nat(func(s NativeStats) int64 { return s.Served.Busy }))
	counter("weft_exchange_native_slow_total", "Native exchange streams cut off for reading slower than native_write_timeout allows.", nat(func(s NativeStats) int64 { return s.Served.Slow }))
	gauge("weft_exchange_native_held_bytes", "Memory the native exchange server holds for the streams it serves (buffers and blocks read ahead).", nat(func(s NativeStats) int64 { return s.Served.Held }))
	dhtLim := func(pick func(p2p.DHTLimitStats) int64) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			return float64(pick(n.net.DHTLimitStats()))
		}
	}
	counter("weft_dht_requests_delayed_total", "DHT requests that waited for their peer's rate (dht.requests_per_peer).", dhtLim(func(s p2p.DHTLimitStats) int64 { return s.Delayed }))
	counter("weft_dht_requests_dropped_total", "DHT requests dropped: their peer was too far over dht.requests_per_peer.", dhtLim(func(s p2p.DHTLimitStats) int64 { return s.Dropped }))
	counter("weft_dht_provider_records_refused_total", "ADD_PROVIDER requests refused: their peer had used dht.provider_records_per_peer.", dhtLim(func(s p2p.DHTLimitStats) int64 { return s.ProvidersRefused }))
	transfer := func(received bool) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			nat := n.NativeStats()
			st, err := n.content.x.Stat()
			if err != nil {
				return 0
			}
			if received {
				return float64(st.DataReceived) + float64(nat.Bytes)
			}
			return float64(st.DataSent) + float64(nat.Served.Bytes)
		}
	}
	counter("weft_transfer_received_bytes_total", "Block bytes received over either exchange (native and Bitswap).", transfer(true))
	counter("weft_transfer_sent_bytes_total", "Block bytes sent over either exchange (native and Bitswap).", transfer(false))
	counter("weft_exchange_rejected_blocks_total", "Blocks from peers that matched no wanted CID (never stored).", func() float64 {
		if !ready() {
			return 0
		}
		return float64(n.content.x.BadBlocks())
	})
	score := func(pick func(p2p.ScoreStats) float64) func() float64 {
		return func() float64 {
			if !ready() {
				return 0
			}
			return pick(n.net.ScoreStats())
		}
	}
	gauge("weft_pubsub_peers_graylisted", "Peers whose gossipsub score is below the graylist threshold (their RPCs are ignored).", score(func(s p2p.ScoreStats) float64 { return float64(s.Graylisted) }))
	gauge("weft_pubsub_peers_banned", "Peers refused for a while after their gossipsub score fell below the graylist threshold.", score(func(s p2p.ScoreStats) float64 { return float64(s.Banned) }))
	counter("weft_pubsub_graylist_disconnects_total", "Peers disconnected and banned because their gossipsub score fell below the graylist threshold.", score(func(s p2p.ScoreStats) float64 { return float64(s.Disconnected) }))
	feedCount := func(pick func(feed.Counters) uint64) func() float64 {
		return func() float64 {
			if !ready() || n.feeds == nil {
				return 0
			}
			return float64(pick(n.feeds.m.Counters()))
		}
	}
	counter("weft_feed_signature_checks_total", "Feed records from gossip and catch-ups whose signature was verified.", feedCount(func(c feed.Counters) uint64 { return c.SignatureChecks }))
	counter("weft_feed_stale_unverified_total", "Stale feed records dropped on their sequence number before any signature check (also counted as result=\"stale\").", feedCount(func(c feed.Counters) uint64 { return c.StaleUnverified }))
	reg.MustRegister(newDynamicCollector(n))
	reg.MustRegister(newNATCollector(n))
	m := &metrics{
		reg: reg,
		dhtCount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_dht_queries_total", Help: "DHT operations started by this node, by operation and result.",
		}, []string{"op", "result"}),
		dhtTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_dht_query_duration_seconds", Help: "Duration of DHT operations started by this node.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"op"}),
	}
	reg.MustRegister(m.dhtCount, m.dhtTime)
	return m
}

// dynamicCollector emits the labelled series whose label sets change at
// run time: per-topic pubsub counters and per-feed sequences. Its
// descriptors are built by newDynamicCollector rather than at package init,
// which every CLI command would pay for.
type dynamicCollector struct {
	n *Node

	psDelivered, psSent, psRejected           *prometheus.Desc
	feedRecords, feedSeq, feedPinned, feedLag *prometheus.Desc
	feedDHTPuts                               *prometheus.Desc
	collItems, collState, collMembers         *prometheus.Desc
	collRefused, collAnswers                  *prometheus.Desc
}

func newDynamicCollector(n *Node) *dynamicCollector {
	return &dynamicCollector{
		n:           n,
		psDelivered: prometheus.NewDesc("weft_pubsub_messages_delivered_total", "Pubsub messages that passed validation and were delivered locally, per topic.", []string{"topic"}, nil),
		psSent:      prometheus.NewDesc("weft_pubsub_messages_sent_total", "Pubsub message copies sent to peers, per topic.", []string{"topic"}, nil),
		psRejected:  prometheus.NewDesc("weft_pubsub_messages_rejected_total", "Pubsub messages dropped by validation, per topic and reason.", []string{"topic", "reason"}, nil),
		feedRecords: prometheus.NewDesc("weft_feed_records_total", "Feed records handled, by result.", []string{"result"}, nil),
		feedSeq:     prometheus.NewDesc("weft_feed_sequence", "Sequence number of the newest valid record held, per feed.", []string{"feed"}, nil),
		feedPinned:  prometheus.NewDesc("weft_feed_pinned_sequence", "Sequence number of the newest pinned version, per followed feed.", []string{"feed"}, nil),
		feedDHTPuts: prometheus.NewDesc("weft_feed_dht_puts_total", "Background DHT puts of published feed records, by result (ok, error).", []string{"result"}, nil),
		feedLag:     prometheus.NewDesc("weft_feed_lag", "Versions held but not yet pinned, per feed followed with pinning.", []string{"feed"}, nil),
		collItems:   prometheus.NewDesc("weft_collection_items", "Items in a collection this node is a member of.", []string{"collection"}, nil),
		collState:   prometheus.NewDesc("weft_collection_items_by_state", "A collection's items by replication state (ok, repairing, under_replicated).", []string{"collection", "state"}, nil),
		collMembers: prometheus.NewDesc("weft_collection_members_alive", "Members of a collection heard recently, this node included.", []string{"collection"}, nil),
		collRefused: prometheus.NewDesc("weft_collection_refused_total", "Collection topic messages and claims refused, by reason (not_member, over_budget, rate_limited, false_claim, wanted_full).", []string{"reason"}, nil),
		collAnswers: prometheus.NewDesc("weft_collection_answers_total", "Answers to collection heads requests published.", nil, nil),
	}
}

func (d *dynamicCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{d.psDelivered, d.psSent, d.psRejected, d.feedRecords, d.feedSeq, d.feedPinned, d.feedLag, d.feedDHTPuts, d.collItems, d.collState, d.collMembers, d.collRefused, d.collAnswers} {
		ch <- desc
	}
}

func (d *dynamicCollector) Collect(ch chan<- prometheus.Metric) {
	n := d.n
	if !n.ready.Load() {
		return
	}
	for topic, ts := range n.net.PubsubStats() {
		ch <- prometheus.MustNewConstMetric(d.psDelivered, prometheus.CounterValue, float64(ts.Delivered), topic)
		ch <- prometheus.MustNewConstMetric(d.psSent, prometheus.CounterValue, float64(ts.Sent), topic)
		for reason, v := range ts.Rejected {
			ch <- prometheus.MustNewConstMetric(d.psRejected, prometheus.CounterValue, float64(v), topic, reason)
		}
	}
	as := n.CollectionAuthStats()
	for reason, v := range as.Refused {
		ch <- prometheus.MustNewConstMetric(d.collRefused, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(d.collAnswers, prometheus.CounterValue, float64(as.Answers))
	for _, c := range n.CollectionList() {
		ch <- prometheus.MustNewConstMetric(d.collItems, prometheus.GaugeValue, float64(c.Items), c.ID)
		ch <- prometheus.MustNewConstMetric(d.collMembers, prometheus.GaugeValue, float64(c.MembersAlive), c.ID)
		for state, v := range map[string]int{"ok": c.OK, "repairing": c.Repairing, "under_replicated": c.UnderReplicated} {
			ch <- prometheus.MustNewConstMetric(d.collState, prometheus.GaugeValue, float64(v), c.ID, state)
		}
	}
	if n.feeds == nil {
		return
	}
	c := n.feeds.m.Counters()
	for result, v := range map[string]uint64{
		"accepted": c.Accepted, "duplicate": c.Duplicate, "unknown_feed": c.Unknown,
		"bad_signature": c.BadSignature, "expired": c.Expired, "stale": c.Stale,
		"too_large": c.TooLarge, "wrong_name": c.WrongName, "malformed": c.Malformed,
	} {
		ch <- prometheus.MustNewConstMetric(d.feedRecords, prometheus.CounterValue, float64(v), result)
	}
	for result, v := range map[string]uint64{"ok": c.DHTPuts, "error": c.DHTPutsFailed} {
		ch <- prometheus.MustNewConstMetric(d.feedDHTPuts, prometheus.CounterValue, float64(v), result)
	}
	for _, f := range n.Feeds() {
		ch <- prometheus.MustNewConstMetric(d.feedSeq, prometheus.GaugeValue, float64(f.Held.Seq), f.Name)
		if f.Pin {
			ch <- prometheus.MustNewConstMetric(d.feedPinned, prometheus.GaugeValue, float64(f.Pinned.Seq), f.Name)
			ch <- prometheus.MustNewConstMetric(d.feedLag, prometheus.GaugeValue, float64(f.Held.Seq-f.Pinned.Seq), f.Name)
		}
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
