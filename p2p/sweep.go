package p2p

// Sweep punching: the pairs DCUtR cannot punch.
//
// DCUtR sends each side to the address its peer's NAT showed the
// observers. That works when both NATs map endpoint-independently (one
// outside port for every destination), and when the side behind an
// endpoint-dependent ("symmetric") NAT meets a router that filters by
// address at most. Against a port-restricted router it fails: the
// symmetric side's packets leave from a fresh port nobody has seen, which
// the other router drops, and the other side's packets go to a port that
// means nothing to the symmetric router.
//
// The sweep finds that fresh port. Over the relayed connection the two
// sides say how their UDP mappings behave (from what identify's observers
// saw of their QUIC socket). The side behind the endpoint-dependent NAT
// (the prober) sends a small probe from its QUIC socket to the other
// side's mapped address every probeEvery; its router opens one mapping
// for that destination, and the other router drops the probes. The side
// with the endpoint-independent mapping (the sprayer) sends one small
// datagram from its QUIC socket to every port of the prober's router,
// the ports the observers saw first (routers that allocate in sequence
// are found in a few packets), at a bounded rate; each opens its own
// router's filter for that one port. When the spray reaches the
// prober's mapping, the next probe gets through: the sprayer learns the
// port and dials QUIC to it, and the prober's router takes the dial for
// the reply it is. The relayed connection is then retired as after DCUtR.
//
// Spraying costs up to 64,512 datagrams of 30 bytes, so it is bounded:
// one sweep at a time per node, a peer swept at most once per
// sweepPeerBackoff, at most sweepsPerHour sprays an hour, and only toward
// a public IPv4 address. QUIC only: it needs a UDP socket that both the
// spray and the QUIC connection leave from (private swarms, which are
// TCP only, do not sweep).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// SweepProtocol is the stream protocol, over a relayed connection, on
// which two nodes agree on a sweep.
const SweepProtocol = protocol.ID("/weft/sweep-punch/1.0.0")

// Mapping behaviours of a node's UDP socket as its observers saw it.
const (
	MappingUnknown     = "unknown"
	MappingIndependent = "independent" // one outside ip:port for every destination
	MappingDependent   = "dependent"   // another outside port per destination
)

// Sweep bounds and pacing.
const (
	defaultSweepRate  = 20000 // datagrams a second while spraying
	defaultSweepAfter = 3 * time.Second
	sweepPeerBackoff  = 10 * time.Minute
	sweepsPerHour     = 10
	sweepTimeout      = 30 * time.Second // a whole session, hellos to dial
	probeEvery        = 20 * time.Millisecond
	sweepFirstPort    = 1024 // routers allocate from here up (Linux: 1024-65535)
	maxSweepHints     = 8
	maxSweepLine      = 1024
	maxObservers      = 16
)

// Datagram prefixes. The first byte has QUIC's fixed bit clear, so quic-go
// hands the datagram to ReadNonQUICPacket instead of parsing it.
var (
	sprayPrefix = []byte("\x00weft-spray")
	probePrefix = []byte("\x00weft-probe")
)

// reasonBusy is the stop reason of a node already in a sweep; the
// initiator tries again a little later.
const reasonBusy = "busy"

var errSweepBusy = errors.New("peer is busy with another sweep")

// sweepMsg is one line on the sweep stream: a hello (each side's mapping
// and a nonce for its datagrams), "found" (the sprayer heard a probe from
// Port) or "stop" (with a reason).
type sweepMsg struct {
	Kind    string `json:"kind"` // hello, found, stop
	Mapping string `json:"mapping,omitempty"`
	IP      string `json:"ip,omitempty"`    // outside IPv4 address of the QUIC socket
	Port    int    `json:"port,omitempty"`  // hello: outside port (independent mapping); found: the prober's port
	Ports   []int  `json:"ports,omitempty"` // hello: ports observers saw (dependent mapping), as hints
	Nonce   string `json:"nonce,omitempty"` // hello: 16 random bytes, hex
	Reason  string `json:"reason,omitempty"`
}

// decodeSweepMsg parses and checks one line from a peer.
func decodeSweepMsg(line []byte) (sweepMsg, error) {
	var m sweepMsg
	if len(line) > maxSweepLine {
		return m, fmt.Errorf("sweep message of %d bytes, over %d", len(line), maxSweepLine)
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return sweepMsg{}, fmt.Errorf("sweep message: %w", err)
	}
	validPort := func(p int) bool { return p > 0 && p <= 65535 }
	switch m.Kind {
	case "hello":
		switch m.Mapping {
		case MappingUnknown:
		case MappingIndependent, MappingDependent:
			ip, err := netip.ParseAddr(m.IP)
			if err != nil || !ip.Is4() {
				return sweepMsg{}, fmt.Errorf("sweep hello: ip %q is not an IPv4 address", m.IP)
			}
		default:
			return sweepMsg{}, fmt.Errorf("sweep hello: unknown mapping %q", m.Mapping)
		}
		if m.Mapping == MappingIndependent && !validPort(m.Port) {
			return sweepMsg{}, fmt.Errorf("sweep hello: port %d", m.Port)
		}
		if len(m.Ports) > maxSweepHints {
			return sweepMsg{}, fmt.Errorf("sweep hello: %d port hints, over %d", len(m.Ports), maxSweepHints)
		}
		for _, p := range m.Ports {
			if !validPort(p) {
				return sweepMsg{}, fmt.Errorf("sweep hello: port hint %d", p)
			}
		}
		if b, err := hex.DecodeString(m.Nonce); err != nil || len(b) != 16 {
			return sweepMsg{}, fmt.Errorf("sweep hello: nonce %q is not 16 bytes of hex", m.Nonce)
		}
	case "found":
		if !validPort(m.Port) {
			return sweepMsg{}, fmt.Errorf("sweep found: port %d", m.Port)
		}
	case "stop":
	default:
		return sweepMsg{}, fmt.Errorf("sweep message kind %q", m.Kind)
	}
	return m, nil
}

// sweepRole says what this side does, given both hellos: "spray", "probe"
// or "" (the sweep does not apply: DCUtR covers two independent mappings,
// and two dependent ones need the relay).
func sweepRole(mine, theirs sweepMsg) string {
	switch {
	case mine.Mapping == MappingIndependent && theirs.Mapping == MappingDependent:
		return "spray"
	case mine.Mapping == MappingDependent && theirs.Mapping == MappingIndependent:
		return "probe"
	}
	return ""
}

// sweepOrder lists the ports to spray: around each hint first (nearest
// first, the hints in the order given), then the rest of
// sweepFirstPort..65535 upwards, each port once.
func sweepOrder(hints []int) []uint16 {
	const near = 64
	seen := make([]bool, 65536)
	out := make([]uint16, 0, 65536-sweepFirstPort)
	add := func(p int) {
		if p >= sweepFirstPort && p <= 65535 && !seen[p] {
			seen[p] = true
			out = append(out, uint16(p))
		}
	}
	for d := 0; d <= near; d++ {
		for _, h := range hints {
			add(h + d)
			add(h - d)
		}
	}
	for p := sweepFirstPort; p <= 65535; p++ {
		add(p)
	}
	return out
}

// observedMapping keeps, per observer IP, where that observer last saw
// one of this node's sockets, to judge how the NAT maps it.
type observedMapping struct {
	mu    sync.Mutex
	seen  map[string]netip.AddrPort // observer IP -> observed address
	order []string                  // observers, oldest first (at most maxObservers)
}

func (u *observedMapping) add(observer string, at netip.AddrPort) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen = map[string]netip.AddrPort{}
	}
	if _, ok := u.seen[observer]; ok {
		u.order = slices.DeleteFunc(u.order, func(o string) bool { return o == observer })
	} else if len(u.order) >= maxObservers {
		delete(u.seen, u.order[0])
		u.order = u.order[1:]
	}
	u.seen[observer] = at
	u.order = append(u.order, observer)
}

// hello describes the mapping: independent when one address was seen by
// two or more observers and by more than half of them (a router that keeps
// the port may still show an odd one, for a connection that could not
// reuse the listening port), dependent when every observer saw the same IP
// at a port of its own, unknown otherwise (too few observers, several
// outside IPs, or no clear picture).
func (u *observedMapping) hello() sweepMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := sweepMsg{Kind: "hello", Mapping: MappingUnknown}
	if len(u.order) < 2 {
		return m
	}
	count := map[netip.AddrPort]int{}
	var top netip.AddrPort
	sameIP := true
	var ports []int
	for i := len(u.order) - 1; i >= 0; i-- { // newest first: the best hints
		a := u.seen[u.order[i]]
		count[a]++
		if count[a] > count[top] {
			top = a
		}
		sameIP = sameIP && a.Addr() == u.seen[u.order[0]].Addr()
		if len(ports) < maxSweepHints && !slices.Contains(ports, int(a.Port())) {
			ports = append(ports, int(a.Port()))
		}
	}
	switch n := count[top]; {
	case n >= 2 && 2*n > len(u.order):
		m.Mapping, m.IP, m.Port = MappingIndependent, top.Addr().String(), int(top.Port())
	case n == 1 && sameIP:
		m.Mapping, m.IP, m.Ports = MappingDependent, top.Addr().String(), ports
	}
	return m
}

// sweeper holds the sweep state of one Network.
type sweeper struct {
	n        *Network
	cms      []*quicreuse.ConnManager // QUIC socket managers; the host's is the one with listeners
	rate     int
	after    time.Duration
	udp, tcp observedMapping // where observers saw the QUIC and the TCP socket
	slot     chan struct{}   // one sweep at a time
	mu       sync.Mutex      // guards the fields below
	closed   bool
	wg       sync.WaitGroup
	lastPeer map[peer.ID]time.Time // peers sprayed within sweepPeerBackoff
	sprays   []time.Time           // starts of the sprays of the last hour
}

func newSweeper(n *Network, cms []*quicreuse.ConnManager) *sweeper {
	s := &sweeper{n: n, cms: cms, rate: n.cfg.NAT.PortSweepRate, after: n.cfg.NAT.PortSweepAfter,
		slot: make(chan struct{}, 1), lastPeer: map[peer.ID]time.Time{}}
	if s.rate <= 0 {
		s.rate = defaultSweepRate
	}
	if s.after <= 0 {
		s.after = defaultSweepAfter
	}
	return s
}

// start wires the sweeper into the host: the stream handler, the
// observations from identify, and a look at every relayed connection this
// node dials. Its goroutines end with ctx; close waits for them.
func (s *sweeper) start(ctx context.Context) error {
	h := s.n.Host
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("p2p: subscribe to identify events: %w", err)
	}
	h.SetStreamHandler(SweepProtocol, func(st network.Stream) { s.serve(ctx, st) })
	s.goOwned(func() {
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				s.observe(e.(event.EvtPeerIdentificationCompleted))
			}
		}
	})
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if isCircuit(c.RemoteMultiaddr()) && c.Stat().Direction == network.DirOutbound {
			p := c.RemotePeer()
			s.goOwned(func() { s.afterRelayed(ctx, p) })
		}
	}})
	return nil
}

// goOwned runs f on a goroutine close waits for, unless close has begun.
func (s *sweeper) goOwned(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// close waits for the sweeper's goroutines (their context has ended).
func (s *sweeper) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// observe records where a peer over a direct QUIC or TCP connection saw us.
func (s *sweeper) observe(e event.EvtPeerIdentificationCompleted) {
	if e.Conn == nil || e.ObservedAddr == nil || isCircuit(e.Conn.RemoteMultiaddr()) {
		return
	}
	m := map[string]*observedMapping{"quic-v1": &s.udp, "tcp": &s.tcp}[TransportOf(e.Conn.LocalMultiaddr())]
	if m == nil || TransportOf(e.ObservedAddr) != TransportOf(e.Conn.LocalMultiaddr()) {
		return
	}
	observer, err := manet.ToIP(e.Conn.RemoteMultiaddr())
	if err != nil {
		return
	}
	at, err := addrPort(e.ObservedAddr)
	if err != nil || !at.Addr().Is4() {
		return
	}
	m.add(observer.String(), at)
}

// hello says how this node's QUIC socket is mapped. With too few QUIC
// observers it goes by the TCP socket (routers treat both alike, and
// connections to the first peers are often TCP): a router that kept the
// TCP listening port is taken to keep the QUIC one too. If it does not,
// the probes go to the wrong port and the sweep fails, costing nothing
// but the probes.
func (s *sweeper) hello() sweepMsg {
	if m := s.udp.hello(); m.Mapping != MappingUnknown {
		return m
	}
	m := s.tcp.hello()
	switch m.Mapping {
	case MappingIndependent:
		tcpPort, udpPort := s.listenPort("tcp"), s.listenPort("quic-v1")
		if tcpPort == 0 || udpPort == 0 || m.Port != tcpPort {
			return sweepMsg{Kind: "hello", Mapping: MappingUnknown}
		}
		m.Port = udpPort
	case MappingDependent:
		m.Ports = nil // TCP ports say nothing of the UDP ones
	}
	return m
}

// listenPort is the port of the first IPv4 listen address over transport.
func (s *sweeper) listenPort(transport string) int {
	for _, a := range s.n.Host.Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(ma.P_IP4); err != nil || TransportOf(a) != transport {
			continue
		}
		if ap, err := addrPort(a); err == nil {
			return int(ap.Port())
		}
	}
	return 0
}

// addrPort is the IP and TCP or UDP port a multiaddr starts with
// (/ip4/A/udp/P/quic-v1 gives A:P).
func addrPort(a ma.Multiaddr) (netip.AddrPort, error) {
	if len(a) > 2 {
		a = a[:2]
	}
	na, err := manet.ToNetAddr(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	switch u := na.(type) {
	case *net.UDPAddr:
		ap = u.AddrPort()
	case *net.TCPAddr:
		ap = u.AddrPort()
	default:
		return netip.AddrPort{}, fmt.Errorf("%s is not a TCP or UDP address", a)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (s *sweeper) direct(p peer.ID) bool {
	return slices.ContainsFunc(s.n.Host.Network().ConnsToPeer(p), func(c network.Conn) bool {
		return !isCircuit(c.RemoteMultiaddr())
	})
}

// afterRelayed gives DCUtR its time after this node dialed p through a
// relay; if the pair is still relayed then, it opens a sweep session.
func (s *sweeper) afterRelayed(ctx context.Context, p peer.ID) {
	t := time.NewTimer(s.after)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	if s.direct(p) || s.n.Host.Network().Connectedness(p) != network.Limited {
		return
	}
	if ps, err := s.n.Host.Peerstore().SupportsProtocols(p, SweepProtocol); err != nil || len(ps) == 0 {
		return
	}
	for try := 0; try < 5; try++ {
		if !s.sweepOnce(ctx, p) {
			return
		}
		// The peer was busy with another sweep: try again in 1-4 s.
		d := time.Second + time.Duration(mrand.Int64N(int64(3*time.Second)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// sweepOnce runs one session with p as its initiator; it reports whether
// p was busy (and the sweep is worth trying again).
func (s *sweeper) sweepOnce(ctx context.Context, p peer.ID) (busy bool) {
	mine := s.hello()
	if mine.Mapping == MappingUnknown || s.direct(p) || !s.claim(ctx, sweepTimeout) {
		return false
	}
	defer s.release()
	sctx, cancel := context.WithTimeout(ctx, sweepTimeout)
	defer cancel()
	st, err := s.n.Host.NewStream(network.WithAllowLimitedConn(sctx, "sweep-punch"), p, SweepProtocol)
	if err != nil {
		s.n.cfg.Logger.Debug("sweep: open stream", "peer", p, "err", err)
		return false
	}
	defer st.Close()
	err = s.session(sctx, st, mine)
	if errors.Is(err, errSweepBusy) {
		return true
	}
	if err != nil {
		s.n.cfg.Logger.Info("sweep punch failed", "peer", p, "err", err)
	}
	return false
}

// serve answers a sweep session a peer opened over a relayed connection.
func (s *sweeper) serve(ctx context.Context, st network.Stream) {
	defer st.Close()
	p := st.Conn().RemotePeer()
	if !isCircuit(st.Conn().RemoteMultiaddr()) {
		st.Reset()
		return
	}
	if !s.claim(ctx, 5*time.Second) {
		writeSweepMsg(st, sweepMsg{Kind: "stop", Reason: reasonBusy})
		return
	}
	defer s.release()
	sctx, cancel := context.WithTimeout(ctx, sweepTimeout)
	defer cancel()
	if err := s.session(sctx, st, s.hello()); err != nil {
		s.n.cfg.Logger.Info("sweep punch failed", "peer", p, "err", err)
	}
}

// claim takes the node's sweep slot, waiting up to wait (or until ctx
// ends: Close does not wait for a sweep that has not started).
func (s *sweeper) claim(ctx context.Context, wait time.Duration) bool {
	select {
	case s.slot <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.slot <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (s *sweeper) release() { <-s.slot }

// spendSpray takes one spray toward p from the budget: none if p was
// sprayed within sweepPeerBackoff or sweepsPerHour sprays were made in the
// last hour.
func (s *sweeper) spendSpray(p peer.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for q, at := range s.lastPeer {
		if now.Sub(at) >= sweepPeerBackoff {
			delete(s.lastPeer, q)
		}
	}
	if _, ok := s.lastPeer[p]; ok {
		return fmt.Errorf("peer sprayed within %v", sweepPeerBackoff)
	}
	s.sprays = slices.DeleteFunc(s.sprays, func(t time.Time) bool { return now.Sub(t) > time.Hour })
	if len(s.sprays) >= sweepsPerHour {
		return fmt.Errorf("%d sprays in the last hour: budget spent", sweepsPerHour)
	}
	s.sprays = append(s.sprays, now)
	s.lastPeer[p] = now
	return nil
}

func writeSweepMsg(st network.Stream, m sweepMsg) error { return writeJSONLine(st, m) }

// readSweepMsgs reads lines from st onto the returned channel until the
// stream ends, a line is bad (the error goes on errc) or ctx ends.
func readSweepMsgs(ctx context.Context, st network.Stream) (<-chan sweepMsg, <-chan error) {
	msgs, errc := make(chan sweepMsg, 4), make(chan error, 1)
	go func() { // ends with the stream, which the session resets when it returns
		defer close(msgs)
		r := newLineReader(st, maxSweepLine)
		for {
			line, err := readLine(r, maxSweepLine)
			if err != nil {
				errc <- fmt.Errorf("read sweep message: %w", err)
				return
			}
			m, err := decodeSweepMsg(line)
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs, errc
}

// session exchanges hellos on st and runs this side's part.
func (s *sweeper) session(ctx context.Context, st network.Stream, mine sweepMsg) error {
	defer st.Reset() // ends the reading goroutine; a finished session has nothing more to say
	p := st.Conn().RemotePeer()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	mine.Nonce = hex.EncodeToString(nonce)
	if err := writeSweepMsg(st, mine); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	msgs, errc := readSweepMsgs(ctx, st)
	var theirs sweepMsg
	select {
	case <-ctx.Done():
		return fmt.Errorf("wait for hello: %w", ctx.Err())
	case err := <-errc:
		return fmt.Errorf("read hello: %w", err)
	case theirs = <-msgs:
	}
	if theirs.Kind == "stop" && theirs.Reason == reasonBusy {
		return errSweepBusy
	}
	if theirs.Kind != "hello" {
		return fmt.Errorf("peer said %s (%s) instead of hello", theirs.Kind, theirs.Reason)
	}
	role := sweepRole(mine, theirs)
	s.n.cfg.Logger.Debug("sweep hellos", "peer", p, "mine", mine.Mapping, "theirs", theirs.Mapping, "role", role)
	switch role {
	case "spray":
		return s.spray(ctx, st, p, msgs, errc, theirs)
	case "probe":
		return s.probe(ctx, p, msgs, errc, mine, theirs)
	}
	return nil
}

// packetConn opens the non-QUIC side of the QUIC socket (IPv4).
func (s *sweeper) packetConn() (net.PacketConn, error) {
	for _, a := range s.n.Host.Network().ListenAddresses() {
		if TransportOf(a) != "quic-v1" {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_IP4); err != nil {
			continue
		}
		u, err := addrPort(a)
		if err != nil {
			continue
		}
		var errs []error
		for _, cm := range s.cms {
			pc, err := cm.SharedNonQUICPacketConn("udp4", net.UDPAddrFromAddrPort(u))
			if err == nil {
				return pc, nil
			}
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("share the QUIC socket %s: %w", u, errors.Join(errs...))
	}
	return nil, errors.New("no IPv4 QUIC listener")
}

// spray sends a datagram to every port of the prober's IP until a probe
// comes back, then dials QUIC to the port it came from.
func (s *sweeper) spray(ctx context.Context, st network.Stream, p peer.ID, msgs <-chan sweepMsg, errc <-chan error, theirs sweepMsg) error {
	target, _ := netip.ParseAddr(theirs.IP) // checked by decodeSweepMsg
	if !manet.IsPublicAddr(ma.StringCast("/ip4/" + target.String())) {
		writeSweepMsg(st, sweepMsg{Kind: "stop", Reason: "not a public address"})
		return fmt.Errorf("prober's address %s is not public", target)
	}
	if err := s.spendSpray(p); err != nil {
		writeSweepMsg(st, sweepMsg{Kind: "stop", Reason: err.Error()})
		return err
	}
	pc, err := s.packetConn()
	if err != nil {
		writeSweepMsg(st, sweepMsg{Kind: "stop", Reason: "no socket"})
		return err
	}
	defer pc.Close()
	nonce, _ := hex.DecodeString(theirs.Nonce)
	want := append(slices.Clone(probePrefix), nonce...)
	found := make(chan int, 1)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() { // ends at its read deadline or when pc closes
		defer rwg.Done()
		buf := make([]byte, 64)
		pc.SetReadDeadline(time.Now().Add(sweepTimeout))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u, ok := from.(*net.UDPAddr)
			if ok && u.AddrPort().Addr().Unmap() == target && string(buf[:n]) == string(want) {
				found <- u.Port
				return
			}
		}
	}()
	defer rwg.Wait()
	defer pc.SetReadDeadline(time.Now()) // stops the reader
	start := time.Now()
	port, sent, err := s.sprayPorts(ctx, pc, target, sweepOrder(theirs.Ports), found, msgs, errc)
	if err != nil {
		return err
	}
	s.n.cfg.Logger.Info("sweep: probe came through", "peer", p, "port", port, "datagrams", sent, "after", time.Since(start).Round(time.Millisecond))
	if err := writeSweepMsg(st, sweepMsg{Kind: "found", Port: port}); err != nil {
		return fmt.Errorf("send found: %w", err)
	}
	addr := ma.StringCast(fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", target, port))
	dctx := network.WithForceDirectDial(ctx, "sweep-punch")
	if err := s.n.Host.Connect(dctx, peer.AddrInfo{ID: p, Addrs: []ma.Multiaddr{addr}}); err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	if !s.direct(p) {
		return fmt.Errorf("dial %s returned without a direct connection", addr)
	}
	s.n.cfg.Logger.Info("sweep punch: direct connection", "peer", p, "addr", addr, "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// sprayPorts sends one datagram to each port in order at s.rate a second
// until found yields the port a probe came from. After the last port it
// waits a little for a probe still under way.
func (s *sweeper) sprayPorts(ctx context.Context, pc net.PacketConn, target netip.Addr, order []uint16, found <-chan int, msgs <-chan sweepMsg, errc <-chan error) (port, sent int, err error) {
	const tick = 5 * time.Millisecond
	per := max(1, s.rate*int(tick)/int(time.Second))
	payload := append(slices.Clone(sprayPrefix), make([]byte, 16)...)
	rand.Read(payload[len(sprayPrefix):])
	t := time.NewTicker(tick)
	defer t.Stop()
	var tail <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return 0, sent, fmt.Errorf("sprayed %d ports: %w", sent, ctx.Err())
		case port := <-found:
			return port, sent, nil
		case m, ok := <-msgs:
			if ok && m.Kind == "stop" {
				return 0, sent, fmt.Errorf("prober stopped: %s", m.Reason)
			}
			if !ok {
				msgs = nil // the error follows on errc
			}
		case err := <-errc:
			return 0, sent, fmt.Errorf("sweep stream: %w", err)
		case <-tail:
			return 0, sent, fmt.Errorf("sprayed all %d ports, no probe came through", sent)
		case <-t.C:
			for i := 0; i < per && sent < len(order); i++ {
				to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(target, order[sent]))
				if _, err := pc.WriteTo(payload, to); err != nil {
					return 0, sent, fmt.Errorf("spray to %s: %w", to, err)
				}
				sent++
			}
			if sent == len(order) && tail == nil {
				tail = time.After(10*probeEvery + time.Second)
			}
		}
	}
}

// probe sends probes to the sprayer's mapped address until a direct
// connection to p exists, the sprayer stops, or ctx ends.
func (s *sweeper) probe(ctx context.Context, p peer.ID, msgs <-chan sweepMsg, errc <-chan error, mine, theirs sweepMsg) error {
	pc, err := s.packetConn()
	if err != nil {
		return err
	}
	defer pc.Close()
	ip, _ := netip.ParseAddr(theirs.IP)
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(theirs.Port)))
	nonce, _ := hex.DecodeString(mine.Nonce)
	payload := append(slices.Clone(probePrefix), nonce...)
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	foundAt := 0
	for {
		if s.direct(p) {
			return nil
		}
		if _, err := pc.WriteTo(payload, to); err != nil {
			return fmt.Errorf("probe %s: %w", to, err)
		}
		select {
		case <-ctx.Done():
			if foundAt != 0 {
				return fmt.Errorf("sprayer found port %d, no direct connection came: %w", foundAt, ctx.Err())
			}
			return fmt.Errorf("probing %s: %w", to, ctx.Err())
		case m, ok := <-msgs:
			switch {
			case !ok:
				msgs = nil
			case m.Kind == "stop":
				return fmt.Errorf("sprayer stopped: %s", m.Reason)
			case m.Kind == "found":
				foundAt = m.Port
			}
		case err := <-errc:
			if foundAt != 0 {
				// The sprayer has dialed and closed the session; wait for
				// its connection until ctx ends.
				errc = nil
				continue
			}
			return fmt.Errorf("sweep stream: %w", err)
		case <-t.C:
		}
	}
}
