package node

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/p2p"
)

// natConfig turns the nat, relay and addresses.*announce settings into the
// p2p layer's NAT configuration.
func natConfig(cfg Config) (p2p.NATConfig, error) {
	nc := p2p.NATConfig{
		AutoNAT:            cfg.NAT.AutoNAT,
		AutoNATService:     cfg.NAT.AutoNATService,
		ServiceGlobalLimit: cfg.NAT.ServiceGlobalLimit,
		ServicePeerLimit:   cfg.NAT.ServicePeerLimit,
		Reachability:       cfg.NAT.Reachability,
		PortMap:            cfg.NAT.PortMap,
		HolePunching:       cfg.NAT.HolePunching,
		PortSweep:          cfg.NAT.PortSweep && cfg.NAT.HolePunching,
		PortSweepAfter:     cfg.NAT.PortSweepAfter.D(),
		PortSweepRate:      cfg.NAT.PortSweepRate,
		RelayClient:        cfg.Relay.Client,
		RelayService:       cfg.Relay.Service,
		RelayResources: relayv2.Resources{
			Limit: &relayv2.RelayLimit{
				Duration: cfg.Relay.ConnectionDuration.D(),
				Data:     int64(cfg.Relay.ConnectionData),
			},
			ReservationTTL:        cfg.Relay.ReservationTTL.D(),
			MaxReservations:       cfg.Relay.MaxReservations,
			MaxCircuits:           cfg.Relay.MaxCircuits,
			BufferSize:            int(cfg.Relay.BufferSize),
			MaxReservationsPerIP:  cfg.Relay.MaxReservationsPerIP,
			MaxReservationsPerASN: cfg.Relay.MaxReservationsPerASN,
		},
	}
	for _, s := range cfg.Relay.Static {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return p2p.NATConfig{}, fmt.Errorf("relay.static %q: %w", s, err)
		}
		nc.StaticRelays = append(nc.StaticRelays, *ai)
	}
	var err error
	for _, l := range []struct {
		key string
		in  []string
		out *[]ma.Multiaddr
	}{
		{"addresses.announce", cfg.Addresses.Announce, &nc.Announce},
		{"addresses.append_announce", cfg.Addresses.AppendAnnounce, &nc.AppendAnnounce},
		{"addresses.no_announce", cfg.Addresses.NoAnnounce, &nc.NoAnnounce},
	} {
		if *l.out, err = parseAddrs(l.in); err != nil {
			return p2p.NATConfig{}, fmt.Errorf("%s: %w", l.key, err)
		}
	}
	return nc, nil
}

// natStatus renders the p2p layer's reachability report for the API.
func (n *Node) natStatus() api.NATStatus {
	st := n.net.NAT()
	strs := func(as []ma.Multiaddr) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.String())
		}
		return out
	}
	out := api.NATStatus{
		Reachability: st.Reachability,
		Transports:   st.Transports,
		Reachable:    strs(st.Reachable),
		Unreachable:  strs(st.Unreachable),
		Observed:     strs(st.Observed),
		RelayAddrs:   strs(st.RelayAddrs),
		RelayService: st.RelayService,
	}
	for _, p := range st.Relays {
		out.Relays = append(out.Relays, p.String())
	}
	return out
}

// natCollector exports the reachability verdicts, the relay reservations
// and the split of connections into direct and relayed, read at scrape time.
type natCollector struct {
	n                         *Node
	reach, relays, svc, conns *prometheus.Desc
}

func newNATCollector(n *Node) *natCollector {
	return &natCollector{
		n: n,
		reach: prometheus.NewDesc("weft_nat_reachability",
			"1 for the current AutoNAT verdict (state: public, private, unknown), overall (transport=\"all\") and per transport; 0 for the others.",
			[]string{"transport", "state"}, nil),
		relays: prometheus.NewDesc("weft_relay_reservations", "Relays this node holds a reservation on.", nil, nil),
		svc:    prometheus.NewDesc("weft_relay_service_active", "1 while this node relays for others.", nil, nil),
		conns:  prometheus.NewDesc("weft_connections", "Open connections by kind: direct or relayed.", []string{"kind"}, nil),
	}
}

func (c *natCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reach
	ch <- c.relays
	ch <- c.svc
	ch <- c.conns
}

func (c *natCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.n.ready.Load() {
		return
	}
	st := c.n.net.NAT()
	verdicts := map[string]string{"all": st.Reachability}
	for _, t := range []string{"tcp", "quic-v1"} {
		verdicts[t] = p2p.ReachUnknown
	}
	for t, v := range st.Transports {
		verdicts[t] = v
	}
	for t, v := range verdicts {
		for _, s := range []string{p2p.ReachPublic, p2p.ReachPrivate, p2p.ReachUnknown} {
			val := 0.0
			if v == s {
				val = 1
			}
			ch <- prometheus.MustNewConstMetric(c.reach, prometheus.GaugeValue, val, t, s)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.relays, prometheus.GaugeValue, float64(len(st.Relays)))
	svc := 0.0
	if st.RelayService {
		svc = 1
	}
	ch <- prometheus.MustNewConstMetric(c.svc, prometheus.GaugeValue, svc)
	direct, relayed := 0, 0
	for _, conn := range c.n.net.Host.Network().Conns() {
		if p2p.DescribeConn(conn).Relayed {
			relayed++
		} else {
			direct++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(direct), "direct")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(relayed), "relayed")
}
