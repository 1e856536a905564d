package p2p

// Reach witnesses: telling an address-restricted NAT from a public address.
//
// AutoNAT's servers dial a node back from the IP address the node has just
// sent its request to. A router that filters by address only
// (address-restricted; RFC 4787's address-dependent filtering) lets that
// dial in, so AutoNAT judges the node public while every peer it has not
// contacted is dropped. So when AutoNAT says public and the node's public
// address is not on one of its own interfaces (a NAT sits in between), the
// node asks a peer it is connected to (the helper) to have a third peer
// (the witness), at an IP the node has never connected to, dial that
// address. A witness that gets through confirms the verdict; two
// witnesses at different IPs that do not make the node private: weft
// emits the reachability event itself, so autorelay reserves slots and
// the DHT turns client, as with nat.reachability = "private".
//
// Abuse: the helper only asks for a dial to the IP its own connection to
// the asker comes from, so nobody can aim witnesses at a third party;
// helpers and witnesses answer a bounded number of requests a minute.

import (
	"context"
	"encoding/json"
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
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// WitnessProtocol carries reach-witness requests: asker to helper ("ask"),
// helper to witness ("dial"), and the answers ("result", "none").
const WitnessProtocol = protocol.ID("/weft/reach-witness/1.0.0")

const (
	maxWitnessLine     = 8 << 10
	maxWitnessAvoid    = 256              // contacted IPs an asker sends
	witnessDialTimeout = 5 * time.Second  // a witness's TCP dial
	witnessAskTimeout  = 20 * time.Second // an ask, helper and witness included
	witnessRecheck     = 10 * time.Minute // a verdict is checked again after this
	witnessHelpers     = 4                // helpers asked per check
	witnessTries       = 3                // witnesses a helper tries per ask
	helperPerMinute    = 30               // asks a helper answers a minute (all askers)
	witnessPerMinute   = 30               // dials a witness makes a minute
)

// witnessMsg is one JSON line on a witness stream.
type witnessMsg struct {
	Kind    string   `json:"kind"`              // ask, dial, result, none
	Peer    string   `json:"peer,omitempty"`    // dial: whom to dial
	Addr    string   `json:"addr,omitempty"`    // ask, dial: the address to dial
	Avoid   []string `json:"avoid,omitempty"`   // ask: IPs the asker has been connected to
	Reached bool     `json:"reached,omitempty"` // result: the witness's dial got through
	Witness string   `json:"witness,omitempty"` // result: the witness's IP
	Reason  string   `json:"reason,omitempty"`  // none: why there is no result
}

// decodeWitnessMsg parses and checks one line from a peer.
func decodeWitnessMsg(line []byte) (witnessMsg, error) {
	var m witnessMsg
	if len(line) > maxWitnessLine {
		return m, fmt.Errorf("witness message of %d bytes, over %d", len(line), maxWitnessLine)
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return witnessMsg{}, fmt.Errorf("witness message: %w", err)
	}
	checkAddr := func() error {
		a, err := ma.NewMultiaddr(m.Addr)
		if err != nil {
			return fmt.Errorf("witness %s: address %q: %w", m.Kind, m.Addr, err)
		}
		if _, err := addrPort(a); err != nil || isCircuit(a) || !manet.IsThinWaist(a) {
			return fmt.Errorf("witness %s: %s is not a direct IP address with a TCP or UDP port", m.Kind, a)
		}
		return nil
	}
	switch m.Kind {
	case "ask":
		if err := checkAddr(); err != nil {
			return witnessMsg{}, err
		}
		if len(m.Avoid) > maxWitnessAvoid {
			return witnessMsg{}, fmt.Errorf("witness ask: %d addresses to avoid, over %d", len(m.Avoid), maxWitnessAvoid)
		}
		for _, ip := range m.Avoid {
			if _, err := netip.ParseAddr(ip); err != nil {
				return witnessMsg{}, fmt.Errorf("witness ask: avoid %q: %w", ip, err)
			}
		}
	case "dial":
		if err := checkAddr(); err != nil {
			return witnessMsg{}, err
		}
		if _, err := peer.Decode(m.Peer); err != nil {
			return witnessMsg{}, fmt.Errorf("witness dial: peer %q: %w", m.Peer, err)
		}
	case "result":
		if m.Witness != "" {
			if _, err := netip.ParseAddr(m.Witness); err != nil {
				return witnessMsg{}, fmt.Errorf("witness result: witness %q: %w", m.Witness, err)
			}
		}
	case "none":
	default:
		return witnessMsg{}, fmt.Errorf("witness message kind %q", m.Kind)
	}
	return m, nil
}

// roundTrip writes m on a new stream to p and reads one answer.
func roundTrip(ctx context.Context, n *Network, p peer.ID, m witnessMsg) (witnessMsg, error) {
	st, err := n.Host.NewStream(ctx, p, WitnessProtocol)
	if err != nil {
		return witnessMsg{}, fmt.Errorf("open witness stream to %s: %w", p, err)
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if err := writeWitnessMsg(st, m); err != nil {
		st.Reset()
		return witnessMsg{}, err
	}
	st.CloseWrite()
	return readWitnessMsg(st)
}

func writeWitnessMsg(st network.Stream, m witnessMsg) error {
	if err := writeJSONLine(st, m); err != nil {
		return fmt.Errorf("write witness %s: %w", m.Kind, err)
	}
	return nil
}

func readWitnessMsg(st network.Stream) (witnessMsg, error) {
	line, err := readLine(newLineReader(st, maxWitnessLine), maxWitnessLine)
	if err != nil {
		return witnessMsg{}, fmt.Errorf("read witness message: %w", err)
	}
	return decodeWitnessMsg(line)
}

// minuteLimit allows at most max events in any minute.
type minuteLimit struct {
	mu    sync.Mutex
	max   int
	times []time.Time
}

func (l *minuteLimit) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.times = slices.DeleteFunc(l.times, func(t time.Time) bool { return now.Sub(t) > time.Minute })
	if len(l.times) >= l.max {
		return false
	}
	l.times = append(l.times, now)
	return true
}

// witnesses holds a Network's witness state: the IPs it has been connected
// to, the last check's outcome, and the limits of its helper and witness
// roles.
type witnesses struct {
	n         *Network
	emit      event.Emitter // EvtLocalReachabilityChanged, for a witnessed "private"
	helpLimit minuteLimit
	dialLimit minuteLimit
	check     chan struct{} // asks the check loop for a check

	mu        sync.Mutex
	contacted map[netip.Addr]time.Time // remote IPs of direct connections
	private   ma.Multiaddr             // the address witnesses could not reach; nil if none
	checked   time.Time                // when the last check ended with a result
}

func newWitnesses(n *Network) (*witnesses, error) {
	em, err := n.Host.EventBus().Emitter(new(event.EvtLocalReachabilityChanged), eventbus.Stateful)
	if err != nil {
		return nil, fmt.Errorf("p2p: reachability emitter: %w", err)
	}
	w := &witnesses{n: n, emit: em, check: make(chan struct{}, 1), contacted: map[netip.Addr]time.Time{},
		helpLimit: minuteLimit{max: helperPerMinute}, dialLimit: minuteLimit{max: witnessPerMinute}}
	n.Host.SetStreamHandler(WitnessProtocol, w.serve)
	n.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if ip, err := manet.ToIP(c.RemoteMultiaddr()); err == nil && !isCircuit(c.RemoteMultiaddr()) {
			a, _ := netip.AddrFromSlice(ip)
			w.noteContact(a.Unmap())
		}
	}})
	return w, nil
}

func (w *witnesses) noteContact(ip netip.Addr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.contacted[ip] = time.Now()
	if len(w.contacted) > maxWitnessAvoid {
		oldest, at := netip.Addr{}, time.Now()
		for a, t := range w.contacted {
			if t.Before(at) {
				oldest, at = a, t
			}
		}
		delete(w.contacted, oldest)
	}
}

// unannounced says whether a should not be announced: it is on the IP of
// the address witnesses could not reach (for any transport: the NAT in
// front of it filters them all alike). Peers then reach the node through
// its relays and hole punching, not by first trying an address that
// drops them; hole punching still uses the address.
func (w *witnesses) unannounced(a ma.Multiaddr) bool {
	p := w.privateAddr()
	if p == nil {
		return false
	}
	pa, err := addrPort(p)
	aa, aerr := addrPort(a)
	return err == nil && aerr == nil && pa.Addr() == aa.Addr()
}

// privateAddr returns the address witnesses could not reach, if the last
// check found one.
func (w *witnesses) privateAddr() ma.Multiaddr {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.private
}

// onVerdict is told each host-wide verdict. A public one starts a check,
// unless a check within witnessRecheck found the node private, in which
// case the private verdict is said again at once.
func (w *witnesses) onVerdict(r network.Reachability) {
	if r != network.ReachabilityPublic {
		return
	}
	w.mu.Lock()
	again := w.private != nil && time.Since(w.checked) < witnessRecheck
	w.mu.Unlock()
	if again {
		w.emit.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPrivate})
		return
	}
	select {
	case w.check <- struct{}{}:
	default:
	}
}

// run does the checks asked for, and one every witnessRecheck while the
// host-wide verdict is public or the witnesses made it private, until ctx
// ends. A check that finds no
// address to check yet (observed addresses take a few peers to confirm)
// or no witness is tried again, 5 s later at first, then less often.
func (w *witnesses) run(ctx context.Context, verdict func() network.Reachability) {
	t := time.NewTicker(witnessRecheck)
	defer t.Stop()
	var retry <-chan time.Time
	backoff := 5 * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.check:
			backoff = 5 * time.Second
		case <-retry:
			retry = nil
			if verdict() != network.ReachabilityPublic {
				continue
			}
		case <-t.C:
			if verdict() != network.ReachabilityPublic && w.privateAddr() == nil {
				continue
			}
		}
		if !w.checkOnce(ctx) && retry == nil {
			retry = time.After(backoff)
			backoff = min(2*backoff, time.Minute)
		}
	}
}

// target is the address to have witnessed: a public TCP address of the
// host that is not on one of its interfaces (witnesses dial TCP only). behindNAT is false
// when a public address is on an interface (no NAT can filter it); addr
// is nil when there is no public address yet.
func (w *witnesses) target() (addr ma.Multiaddr, behindNAT bool) {
	local := map[netip.Addr]bool{}
	if ifaces, err := manet.InterfaceMultiaddrs(); err == nil {
		for _, a := range ifaces {
			if ip, err := manet.ToIP(a); err == nil {
				if x, ok := netip.AddrFromSlice(ip); ok {
					local[x.Unmap()] = true
				}
			}
		}
	}
	for _, a := range w.n.Host.Addrs() {
		if isCircuit(a) || !manet.IsPublicAddr(a) {
			continue
		}
		ap, err := addrPort(a)
		if err != nil {
			continue
		}
		if local[ap.Addr()] {
			return nil, false
		}
		if addr == nil && TransportOf(a) == "tcp" {
			addr = a
		}
	}
	return addr, true
}

// checkOnce asks helpers for witnesses until one reaches the target, two
// at different IPs do not, or the helpers run out. It reports whether the
// check came to an end: a result, or no NAT to check.
func (w *witnesses) checkOnce(ctx context.Context) bool {
	addr := w.privateAddr() // checked again: the NAT may have changed
	if addr == nil {
		var behindNAT bool
		if addr, behindNAT = w.target(); !behindNAT {
			return true
		}
		if addr == nil {
			return false
		}
	}
	w.mu.Lock()
	avoid := make([]string, 0, len(w.contacted))
	for ip := range w.contacted {
		avoid = append(avoid, ip.String())
	}
	w.mu.Unlock()
	h := w.n.Host
	var helpers []peer.ID
	for _, p := range h.Network().Peers() {
		direct := slices.ContainsFunc(h.Network().ConnsToPeer(p), func(c network.Conn) bool { return !isCircuit(c.RemoteMultiaddr()) })
		if ps, err := h.Peerstore().SupportsProtocols(p, WitnessProtocol); direct && err == nil && len(ps) > 0 {
			helpers = append(helpers, p)
		}
	}
	mrand.Shuffle(len(helpers), func(i, j int) { helpers[i], helpers[j] = helpers[j], helpers[i] })
	var unreached []string
	for i, helper := range helpers {
		if i == witnessHelpers {
			break
		}
		actx, cancel := context.WithTimeout(ctx, witnessAskTimeout)
		res, err := roundTrip(actx, w.n, helper, witnessMsg{Kind: "ask", Addr: addr.String(), Avoid: avoid})
		cancel()
		switch {
		case err != nil:
			w.n.cfg.Logger.Debug("reach witness: ask failed", "helper", helper, "err", err)
			continue
		case res.Kind != "result":
			w.n.cfg.Logger.Debug("reach witness: no witness", "helper", helper, "reason", res.Reason)
			continue
		case res.Reached:
			w.n.cfg.Logger.Info("reach witness: a peer never contacted reached this node", "addr", addr, "witness", res.Witness)
			w.mu.Lock()
			was := w.private
			w.private, w.checked = nil, time.Now()
			w.mu.Unlock()
			if was != nil { // AutoNAT's public verdict stands again
				w.emit.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPublic})
			}
			return true
		}
		unreached = append(unreached, res.Witness)
		avoid = append(avoid, res.Witness)
		if len(unreached) == 2 {
			w.n.cfg.Logger.Info("reach witness: peers never contacted cannot reach this node; AutoNAT's dial-backs came from peers it had contacted (an address-restricted NAT): private", "addr", addr, "witnesses", unreached)
			w.mu.Lock()
			was := w.private
			w.private, w.checked = addr, time.Now()
			w.mu.Unlock()
			if was == nil {
				w.emit.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPrivate})
			}
			return true
		}
	}
	w.n.cfg.Logger.Debug("reach witness: no conclusive answer", "addr", addr, "helpers", len(helpers), "unreached", unreached)
	return false
}

// serve answers an ask (as helper) or a dial (as witness).
func (w *witnesses) serve(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(witnessAskTimeout))
	m, err := readWitnessMsg(st)
	if err != nil {
		st.Reset()
		return
	}
	var out witnessMsg
	switch m.Kind {
	case "ask":
		out = w.help(st, m)
	case "dial":
		out = w.dial(st, m)
	default:
		st.Reset()
		return
	}
	writeWitnessMsg(st, out)
}

// help finds a witness for the asker on st: a peer this node is directly
// connected to, at an IP the asker has not been connected to.
func (w *witnesses) help(st network.Stream, m witnessMsg) witnessMsg {
	none := func(why string) witnessMsg { return witnessMsg{Kind: "none", Reason: why} }
	asker := st.Conn().RemotePeer()
	if isCircuit(st.Conn().RemoteMultiaddr()) {
		return none("ask over a relayed connection")
	}
	askerIP, err := addrPort(st.Conn().RemoteMultiaddr())
	target, terr := addrPort(ma.StringCast(m.Addr))
	if err != nil || terr != nil || askerIP.Addr() != target.Addr() {
		return none("the address to dial is not the one this connection comes from")
	}
	if !w.helpLimit.allow() {
		return none("busy")
	}
	avoid := map[netip.Addr]bool{askerIP.Addr(): true}
	for _, s := range m.Avoid {
		a, _ := netip.ParseAddr(s) // checked by decodeWitnessMsg
		avoid[a.Unmap()] = true
	}
	h := w.n.Host
	peers := h.Network().Peers()
	mrand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	tries := 0
	for _, p := range peers {
		if p == asker || tries == witnessTries {
			continue
		}
		var ip netip.AddrPort
		for _, c := range h.Network().ConnsToPeer(p) {
			if !isCircuit(c.RemoteMultiaddr()) {
				ip, _ = addrPort(c.RemoteMultiaddr())
				break
			}
		}
		if !ip.IsValid() || avoid[ip.Addr()] {
			continue
		}
		if ps, err := h.Peerstore().SupportsProtocols(p, WitnessProtocol); err != nil || len(ps) == 0 {
			continue
		}
		tries++
		ctx, cancel := context.WithTimeout(context.Background(), witnessDialTimeout+5*time.Second)
		res, err := roundTrip(ctx, w.n, p, witnessMsg{Kind: "dial", Peer: asker.String(), Addr: m.Addr})
		cancel()
		if err != nil || res.Kind != "result" {
			continue
		}
		return witnessMsg{Kind: "result", Reached: res.Reached, Witness: ip.Addr().String()}
	}
	return none("no peer at an address the asker has not contacted")
}

// dial tries a TCP connection to the address asked for and says whether
// it got through: the address takes connections from strangers. It dials
// from a fresh port, not the listening one libp2p dials from, so the
// routers' connection tracking keeps nothing of it that could collide
// with a later connection between the two nodes (a failed dial from the
// listening port would leave an entry that turns the later dial into a
// simultaneous open the routers drop). It refuses when this node is
// connected to that peer already: it would not be a stranger.
func (w *witnesses) dial(st network.Stream, m witnessMsg) witnessMsg {
	none := func(why string) witnessMsg { return witnessMsg{Kind: "none", Reason: why} }
	if isCircuit(st.Conn().RemoteMultiaddr()) {
		return none("dial asked over a relayed connection")
	}
	p, _ := peer.Decode(m.Peer) // checked by decodeWitnessMsg
	if p == w.n.Host.ID() || w.n.Host.Network().Connectedness(p) != network.NotConnected {
		return none("connected to that peer already")
	}
	addr := ma.StringCast(m.Addr)
	if TransportOf(addr) != "tcp" {
		return none("only TCP addresses are witnessed")
	}
	if !w.dialLimit.allow() {
		return none("busy")
	}
	to, _ := addrPort(addr) // checked by decodeWitnessMsg
	ctx, cancel := context.WithTimeout(context.Background(), witnessDialTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", to.String())
	if err != nil {
		w.n.cfg.Logger.Debug("reach witness: dial failed", "peer", p, "addr", addr, "err", err)
		return witnessMsg{Kind: "result", Reached: false}
	}
	c.Close()
	return witnessMsg{Kind: "result", Reached: true}
}
