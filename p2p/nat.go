package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability verdicts, as reported by Network.NAT.
const (
	ReachUnknown = "unknown"
	ReachPublic  = "public"
	ReachPrivate = "private"
)

// autorelayTag is the connection-manager tag go-libp2p's autorelay puts on
// the connection to every relay it holds a reservation on
// (p2p/host/autorelay/relay_finder.go); it is how the reservations are read
// back without reaching into autorelay's internals.
const autorelayTag = "autorelay"

// NATConfig says how the host finds out whether it can be reached and what
// it does about it. The zero value turns everything off.
type NATConfig struct {
	// AutoNAT runs the AutoNAT v2 client, which asks peers to dial each
	// address back, and the v2 server, which answers others (go-libp2p
	// rate-limits it: 60 requests a minute, 12 per peer). The v1 client runs
	// in any case and gives the host-wide verdict.
	AutoNAT bool
	// AutoNATService answers AutoNAT v1 requests, ServiceGlobalLimit and
	// ServicePeerLimit requests a minute (defaults 30 and 3, as Kubo).
	AutoNATService                       bool
	ServiceGlobalLimit, ServicePeerLimit int
	// Reachability forces the verdict: "" (detect), "public" or "private".
	Reachability string
	// PortMap asks the router for a port mapping (UPnP IGD, NAT-PMP).
	PortMap bool
	// HolePunching upgrades relayed connections to direct ones (DCUtR).
	HolePunching bool
	// PortSweep finds the port an endpoint-dependent ("symmetric") NAT
	// gave a peer when DCUtR cannot (sweep.go): QUIC only, bounded.
	// PortSweepAfter is how long a relayed connection this node dialed
	// waits for DCUtR first (default 3 s); PortSweepRate the datagrams a
	// second while spraying (default 20,000).
	PortSweep      bool
	PortSweepAfter time.Duration
	PortSweepRate  int
	// RelayClient reserves slots on relays while the node is not publicly
	// reachable: StaticRelays first, then relays found among connected peers
	// and the DHT's routing table.
	RelayClient  bool
	StaticRelays []peer.AddrInfo
	// RelayService relays for others while the node is publicly reachable,
	// within RelayResources (zero fields take go-libp2p's defaults).
	RelayService   bool
	RelayResources relayv2.Resources
	// Announce, when not empty, replaces the direct addresses the host
	// announces; AppendAnnounce adds to them; NoAnnounce removes addresses
	// equal to one of its entries or inside one of its /ipcidr ranges.
	Announce, AppendAnnounce, NoAnnounce []ma.Multiaddr
}

// natOptions turns c into libp2p options. n is the Network under
// construction: the relay peer source reads its host and DHT once they exist.
func natOptions(c *NATConfig, n *Network) ([]libp2p.Option, error) {
	var opts []libp2p.Option
	factory, err := makeAddrsFactory(c.Announce, c.AppendAnnounce, c.NoAnnounce)
	if err != nil {
		return nil, err
	}
	// Addresses the reach witnesses found unreachable are not announced
	// (witness.go); n.witness is set once the host exists.
	opts = append(opts, libp2p.AddrsFactory(func(all []ma.Multiaddr) []ma.Multiaddr {
		if factory != nil {
			all = factory(all)
		}
		if w := n.witness.Load(); w != nil {
			all = slices.DeleteFunc(slices.Clone(all), w.unannounced)
		}
		return all
	}))
	if c.AutoNAT {
		opts = append(opts, libp2p.EnableAutoNATv2())
	}
	if c.AutoNATService {
		g, p := c.ServiceGlobalLimit, c.ServicePeerLimit
		if g <= 0 {
			g = 30
		}
		if p <= 0 {
			p = 3
		}
		opts = append(opts, libp2p.EnableNATService(), libp2p.AutoNATServiceRateLimit(g, p, time.Minute))
	}
	switch c.Reachability {
	case "":
	case ReachPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	default:
		return nil, fmt.Errorf("p2p: reachability %q is not empty, public or private", c.Reachability)
	}
	if c.PortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if c.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if c.RelayClient {
		// go-libp2p takes static relays or a peer source, not both: the
		// static relays come first out of the peer source.
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(n.relayCandidates,
			autorelay.WithMinInterval(30*time.Second),
			autorelay.WithBootDelay(0)))
	}
	if c.RelayService {
		opts = append(opts, libp2p.EnableRelayService(relayv2.WithResources(relayResources(c.RelayResources))))
	}
	return opts, nil
}

// relayResources fills the zero fields of r with go-libp2p's defaults.
func relayResources(r relayv2.Resources) relayv2.Resources {
	d := relayv2.DefaultResources()
	if r.Limit == nil {
		r.Limit = d.Limit
	} else {
		l := *r.Limit
		if l.Duration <= 0 {
			l.Duration = d.Limit.Duration
		}
		if l.Data <= 0 {
			l.Data = d.Limit.Data
		}
		r.Limit = &l
	}
	if r.ReservationTTL <= 0 {
		r.ReservationTTL = d.ReservationTTL
	}
	if r.MaxReservations <= 0 {
		r.MaxReservations = d.MaxReservations
	}
	if r.MaxCircuits <= 0 {
		r.MaxCircuits = d.MaxCircuits
	}
	if r.BufferSize <= 0 {
		r.BufferSize = d.BufferSize
	}
	if r.MaxReservationsPerPeer <= 0 { //nolint:staticcheck // still read by the relay
		r.MaxReservationsPerPeer = d.MaxReservationsPerPeer //nolint:staticcheck
	}
	if r.MaxReservationsPerIP <= 0 {
		r.MaxReservationsPerIP = d.MaxReservationsPerIP
	}
	if r.MaxReservationsPerASN <= 0 {
		r.MaxReservationsPerASN = d.MaxReservationsPerASN
	}
	return r
}

// makeAddrsFactory builds the host's address filter from Kubo's three
// settings; nil when none is set. Relay (/p2p-circuit) addresses from libp2p
// are kept even when announce replaces the direct ones, so a private node
// stays reachable through its relays.
func makeAddrsFactory(announce, appendAnnounce, noAnnounce []ma.Multiaddr) (func([]ma.Multiaddr) []ma.Multiaddr, error) {
	if len(announce) == 0 && len(appendAnnounce) == 0 && len(noAnnounce) == 0 {
		return nil, nil
	}
	filters := ma.NewFilters()
	var exact []ma.Multiaddr
	for _, a := range noAnnounce {
		if ipnet, err := cidrOf(a); err == nil {
			filters.AddFilter(*ipnet, ma.ActionDeny)
			continue
		}
		exact = append(exact, a)
	}
	return func(all []ma.Multiaddr) []ma.Multiaddr {
		var in []ma.Multiaddr
		if len(announce) > 0 {
			in = append(in, announce...)
			for _, a := range all {
				if isCircuit(a) {
					in = append(in, a)
				}
			}
		} else {
			in = append(in, all...)
		}
		in = append(in, appendAnnounce...)
		out := make([]ma.Multiaddr, 0, len(in))
		for _, a := range in {
			if filters.AddrBlocked(a) || slices.ContainsFunc(exact, a.Equal) || slices.ContainsFunc(out, a.Equal) {
				continue
			}
			out = append(out, a)
		}
		return out
	}, nil
}

// cidrOf parses /ip4/A/ipcidr/N or /ip6/A/ipcidr/N.
func cidrOf(a ma.Multiaddr) (*net.IPNet, error) {
	if len(a) != 2 || a[1].Protocol().Code != ma.P_IPCIDR {
		return nil, errors.New("not an ipcidr filter")
	}
	return manet.MultiaddrToIPNet(a)
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// relayCandidates feeds autorelay: the static relays, then connected peers
// that speak the relay hop protocol, then the peers of the DHT's routing
// table (autorelay connects to each and keeps those that relay).
func (n *Network) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, max(num, 0))
	defer close(out)
	select {
	case <-n.natReady:
	case <-ctx.Done():
		return out
	}
	h := n.Host
	if num <= 0 {
		return out
	}
	seen := map[peer.ID]bool{h.ID(): true}
	send := func(ai peer.AddrInfo) bool {
		if !seen[ai.ID] && len(ai.Addrs) > 0 {
			seen[ai.ID] = true
			out <- ai
		}
		return len(out) < num
	}
	add := func(p peer.ID) bool {
		return send(peer.AddrInfo{ID: p, Addrs: h.Peerstore().Addrs(p)})
	}
	for _, ai := range n.cfg.NAT.StaticRelays {
		if !send(ai) {
			return out
		}
	}
	for _, p := range h.Network().Peers() {
		if ps, err := h.Peerstore().SupportsProtocols(p, proto.ProtoIDv2Hop); err == nil && len(ps) > 0 {
			if !add(p) {
				return out
			}
		}
	}
	if d := n.DHT; d != nil {
		for _, p := range d.RoutingTable().ListPeers() {
			if !add(p) {
				return out
			}
		}
	}
	return out
}

// How relayed connections are retired once a direct one to the same peer
// exists (go-libp2p's hole punching does not close them; the relay would
// only reset them at its time or data limit): as soon as they carry no
// stream, and at the latest after relayedGrace, which gives a transfer
// running over the relay time to move to the direct connection.
const (
	relayedGrace = 10 * time.Second
	relayedPoll  = 250 * time.Millisecond
)

// retireRelayed closes p's relayed connections while p has a direct one. It
// returns at once; the work runs in a goroutine per peer, owned by the watch
// loop of watchNAT, which waits for them when it ends.
func (n *Network) retireRelayed(ctx context.Context, p peer.ID) {
	w := n.natw
	w.mu.Lock()
	if w.retiring == nil {
		w.retiring = map[peer.ID]bool{}
	}
	if w.retiring[p] || w.closed {
		w.mu.Unlock()
		return
	}
	w.retiring[p] = true
	w.retireWG.Add(1) // under w.mu: never after the watch loop's final Wait
	w.mu.Unlock()
	go func() {
		defer w.retireWG.Done()
		defer func() {
			w.mu.Lock()
			delete(w.retiring, p)
			w.mu.Unlock()
		}()
		deadline := time.Now().Add(relayedGrace)
		t := time.NewTicker(relayedPoll)
		defer t.Stop()
		for {
			var relayed []network.Conn
			direct := false
			for _, c := range n.Host.Network().ConnsToPeer(p) {
				if isCircuit(c.RemoteMultiaddr()) {
					relayed = append(relayed, c)
				} else {
					direct = true
				}
			}
			if !direct || len(relayed) == 0 {
				return
			}
			late := time.Now().After(deadline)
			for _, c := range relayed {
				if late || len(c.GetStreams()) == 0 {
					n.cfg.Logger.Debug("closing relayed connection: a direct one exists", "peer", p, "addr", c.RemoteMultiaddr(), "streams", len(c.GetStreams()))
					c.Close()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// natWatch keeps the latest reachability events of the host.
type natWatch struct {
	mu        sync.Mutex       // guards the fields below
	retiring  map[peer.ID]bool // peers whose relayed connections are being closed
	retireWG  sync.WaitGroup
	closed    bool // set when the watch loop ends: no more retiring
	verdict   network.Reachability
	reachable []ma.Multiaddr
	unreach   []ma.Multiaddr
	unknown   []ma.Multiaddr
	relayAddr []ma.Multiaddr
}

// watchNAT follows the host's reachability events until ctx ends. It runs
// once the host and the DHT exist, and lets relayCandidates read them.
func (n *Network) watchNAT(ctx context.Context) error {
	sub, err := n.Host.EventBus().Subscribe([]any{
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtHostReachableAddrsChanged),
		new(event.EvtAutoRelayAddrsUpdated),
	})
	if err != nil {
		return fmt.Errorf("p2p: subscribe to reachability events: %w", err)
	}
	w := &natWatch{}
	n.natw = w
	close(n.natReady)
	wit, err := newWitnesses(n)
	if err != nil {
		sub.Close()
		return err
	}
	n.witness.Store(wit)
	if n.cfg.NAT.AutoNAT && n.cfg.NAT.Reachability == "" {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			wit.run(ctx, func() network.Reachability {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.verdict
			})
		}()
	}
	var sw *sweeper
	if n.cfg.NAT.PortSweep && len(n.quicCMs) > 0 {
		sw = newSweeper(n, n.quicCMs)
		if err := sw.start(ctx); err != nil {
			sub.Close()
			return err
		}
	}
	n.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if !isCircuit(c.RemoteMultiaddr()) {
			n.retireRelayed(ctx, c.RemotePeer())
		}
	}})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer sub.Close()
		defer func() {
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			w.retireWG.Wait()
			if sw != nil {
				sw.close()
			}
			wit.emit.Close()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				w.mu.Lock()
				switch ev := e.(type) {
				case event.EvtLocalReachabilityChanged:
					w.verdict = ev.Reachability
					n.cfg.Logger.Info("reachability changed", "verdict", reachName(ev.Reachability))
					if n.cfg.NAT.AutoNAT && n.cfg.NAT.Reachability == "" {
						wit.onVerdict(ev.Reachability)
					}
				case event.EvtHostReachableAddrsChanged:
					w.reachable, w.unreach, w.unknown = ev.Reachable, ev.Unreachable, ev.Unknown
					n.cfg.Logger.Debug("address reachability changed", "reachable", ev.Reachable, "unreachable", ev.Unreachable, "unknown", ev.Unknown)
				case event.EvtAutoRelayAddrsUpdated:
					w.relayAddr = ev.RelayAddrs
				}
				w.mu.Unlock()
			}
		}
	}()
	return nil
}

func reachName(r network.Reachability) string {
	switch r {
	case network.ReachabilityPublic:
		return ReachPublic
	case network.ReachabilityPrivate:
		return ReachPrivate
	}
	return ReachUnknown
}

// NATStatus is what the node knows about its own reachability.
type NATStatus struct {
	// Reachability is the host-wide verdict: public, private or unknown.
	Reachability string
	// Transports holds a verdict per transport (tcp, quic-v1, ...) from
	// AutoNAT v2's per-address checks; a transport absent from it has had no
	// public address checked.
	Transports map[string]string
	// Reachable, Unreachable and Unknown are the public addresses as AutoNAT
	// v2 judged them.
	Reachable, Unreachable, Unknown []ma.Multiaddr
	// Observed are addresses peers saw this node at that are not on one of
	// its interfaces (its address on the far side of a NAT).
	Observed []ma.Multiaddr
	// Relays are the relays this node holds a reservation on, RelayAddrs the
	// /p2p-circuit addresses they give it.
	Relays     []peer.ID
	RelayAddrs []ma.Multiaddr
	// RelayService says whether this node relays for others (on only while
	// it is publicly reachable).
	RelayService bool
}

// NAT reports the node's reachability, observed addresses and relays.
func (n *Network) NAT() NATStatus {
	st := NATStatus{Reachability: ReachUnknown, Transports: map[string]string{}}
	if w := n.natw; w != nil {
		w.mu.Lock()
		st.Reachability = reachName(w.verdict)
		st.Reachable = slices.Clone(w.reachable)
		st.Unreachable = slices.Clone(w.unreach)
		st.Unknown = slices.Clone(w.unknown)
		st.RelayAddrs = slices.Clone(w.relayAddr)
		w.mu.Unlock()
	}
	if r, ok := n.Host.(interface{ Reachability() network.Reachability }); ok && st.Reachability == ReachUnknown {
		st.Reachability = reachName(r.Reachability())
	}
	// An address AutoNAT judged reachable that witnesses could not reach
	// (witness.go) counts as unreachable.
	var witnessed ma.Multiaddr
	if w := n.witness.Load(); w != nil {
		witnessed = w.privateAddr()
	}
	if witnessed != nil {
		st.Reachability = ReachPrivate
		st.Reachable = slices.DeleteFunc(st.Reachable, witnessed.Equal)
		st.Unreachable = append(st.Unreachable, witnessed)
	}
	for _, a := range st.Unreachable {
		st.Transports[TransportOf(a)] = ReachPrivate
	}
	for _, a := range st.Reachable {
		st.Transports[TransportOf(a)] = ReachPublic
	}
	for _, a := range st.Unknown {
		if _, ok := st.Transports[TransportOf(a)]; !ok {
			st.Transports[TransportOf(a)] = ReachUnknown
		}
	}
	// With no v1 verdict (yet), AutoNAT v2's per-address results decide.
	if st.Reachability == ReachUnknown {
		switch {
		case len(st.Reachable) > 0:
			st.Reachability = ReachPublic
		case len(st.Unreachable) > 0:
			st.Reachability = ReachPrivate
		}
	}
	st.Observed = n.observedAddrs()
	cm := n.Host.ConnManager()
	for _, p := range n.Host.Network().Peers() {
		if cm.IsProtected(p, autorelayTag) {
			st.Relays = append(st.Relays, p)
		}
	}
	sort.Slice(st.Relays, func(i, j int) bool { return st.Relays[i] < st.Relays[j] })
	st.RelayService = n.cfg.NAT.RelayService && slices.Contains(n.Host.Mux().Protocols(), proto.ProtoIDv2Hop)
	return st
}

// observedAddrs are the host's addresses that are not on any local interface
// and not relayed: what identify learnt from peers, or a port mapping.
func (n *Network) observedAddrs() []ma.Multiaddr {
	all := n.Host.Addrs()
	if a, ok := n.Host.(interface{ AllAddrs() []ma.Multiaddr }); ok {
		all = a.AllAddrs()
	}
	ifaces, _ := manet.InterfaceMultiaddrs()
	local := map[string]bool{}
	for _, a := range ifaces {
		if ip, err := manet.ToIP(a); err == nil {
			local[ip.String()] = true
		}
	}
	var out []ma.Multiaddr
	for _, a := range all {
		if isCircuit(a) {
			continue
		}
		ip, err := manet.ToIP(a)
		if err != nil || local[ip.String()] || ip.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	return out
}

// TransportOf names a multiaddr's transport: quic-v1, webtransport,
// webrtc-direct, tcp, or the last protocol's name.
func TransportOf(a ma.Multiaddr) string {
	for _, code := range []int{ma.P_WEBTRANSPORT, ma.P_WEBRTC_DIRECT, ma.P_QUIC_V1, ma.P_TCP} {
		if _, err := a.ValueForProtocol(code); err == nil {
			return ma.ProtocolWithCode(code).Name
		}
	}
	if len(a) == 0 {
		return ""
	}
	return a[len(a)-1].Protocol().Name
}

// ConnInfo describes one connection: over which transport, and whether it
// goes through a relay (and so is limited in time and data).
type ConnInfo struct {
	Transport string
	Relayed   bool
	Limited   bool
}

// DescribeConn says how c is carried. A relayed connection's multiaddr is
// RELAY-ADDR/p2p-circuit; its transport is the one to the relay.
func DescribeConn(c network.Conn) ConnInfo {
	a := c.RemoteMultiaddr()
	ci := ConnInfo{Limited: c.Stat().Limited, Relayed: isCircuit(a)}
	if ci.Relayed {
		relay, _ := ma.SplitFunc(a, func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT })
		a = relay
	}
	ci.Transport = TransportOf(a)
	return ci
}
