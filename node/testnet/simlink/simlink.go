// Package simlink is an in-memory network for simulated testnets: a libp2p
// transport between hosts of one process whose connections are natively
// multiplexed, as QUIC's are: every stream is its own pair of byte pipes,
// with each host's sending link shaped by latency, jitter, bandwidth and
// loss, and with partitions between hosts.
//
// It costs no goroutine per connection or stream: a read waits on its pipe
// until the head of its queue is due (a timer), so under testing/synctest
// every delay is virtual time. Above the streams everything is the code a
// real node runs (the swarm, identify, the DHT, gossipsub, weft's
// protocols). What it leaves out is what a simulation does not need and
// what cost most at a thousand nodes: a security handshake (the network
// itself tells each end who the other is, as plaintext security would) and
// yamux, whose three goroutines and buffers per connection end were a third
// of a simulated node's goroutines.
//
// Model (what a run measures, and where it differs from a kernel link):
//   - A host's Shape applies to what it sends, as the namespaced testnet
//     shapes each node's egress: a byte written at t is due at the receiver
//     at t + serialisation + latency ± jitter (uniform), rounded to the
//     millisecond (Quantum), in order across all the streams of a
//     connection, as on a TCP connection under yamux.
//   - Bandwidth is the host's egress rate, shared by all its connections; a
//     writer blocks while more than SendBuffer bytes wait to be sent.
//   - The stream is reliable, as TCP is: a write that is "lost" (each
//     1460-byte segment with the loss probability) arrives one
//     retransmission timeout late (max(200 ms, 3 × latency), Linux's floor)
//     instead of never.
//   - Connecting costs three round trips, as TCP with TLS 1.3 does (the
//     SYN, multistream's choice of security, the TLS handshake with the
//     muxer in its ALPN); a refused dial costs one. Opening a stream costs
//     nothing: its first bytes arrive with the usual delay.
//   - A partition is a blackhole: dials across it hang until their context
//     ends, and open connections across it stall (nothing is delivered)
//     until the heal, when what waited is delivered at once. A connection
//     stalled for StallTimeout is closed at both ends, as weft's yamux
//     keep-alive (a ping every 2 minutes, 10 s to answer) would close it.
//   - CPU work costs no virtual time, unless SetCPU says otherwise: then
//     the hosts share a machine of Cores cores, as the daemons of a real
//     testnet on one machine do, and every write costs PerWrite of CPU
//     (its sending and its receiving together) before the receiver can
//     read it. Each host works through what it receives in order, and
//     while more hosts have work than there are cores, each runs that
//     much slower: the fair share of a kernel's scheduler, taken as it
//     stands when the work starts. (A single queue for the cores in the
//     order of the writes, tried first, made the tail more than twice a
//     real testnet's: a real kernel runs a process that wakes with one
//     message soon, beside the backlogged ones.)
package simlink

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Quantum is the resolution of due times: every delivery falls on a whole
// millisecond of virtual time (rounded to the nearest, so latencies stay
// right on average). Jitter spreads deliveries over distinct nanoseconds,
// and a simulation then advances its clock for each one and runs what it
// wakes on one core; on millisecond boundaries the deliveries of a
// millisecond run together, on every core.
const Quantum = time.Millisecond

// due rounds t to Quantum, never before now.
func due(t, now time.Time) time.Time {
	r := t.Round(Quantum)
	if r.Before(now) {
		r = r.Add(Quantum)
	}
	return r
}

// StallTimeout is how long a connection across a partition stays open.
const StallTimeout = 2*time.Minute + 10*time.Second

// SendBuffer is how many bytes a host may have waiting for its link before
// a write blocks (a socket send buffer).
const SendBuffer = 256 << 10

// segment is the unit the loss probability applies to (a TCP segment).
const segment = 1460

// Shape is the shaping of what one host sends.
type Shape struct {
	Latency   time.Duration // one way
	Jitter    time.Duration // uniform in ±Jitter
	Loss      float64       // probability per 1460-byte segment, 0..1
	Bandwidth int64         // bytes per second; 0: unlimited
}

// Network is a set of simulated hosts, by IPv4 address, and the links
// between them. Create it (and everything that uses it) inside the
// synctest bubble whose virtual time it should run in.
type Network struct {
	mu        sync.Mutex
	rng       *rand.Rand // seeded; guarded by mu
	hosts     map[netip.Addr]*hostLink
	listeners map[netip.AddrPort]*listener
	nextPort  uint16
	conns     map[*muxConn]struct{}                  // every open connection end
	cut       atomic.Pointer[map[[2]netip.Addr]bool] // partition, both orders
	down      atomic.Bool                            // Shutdown: every dial refused

	cpu CPU

	stats Stats
}

// Stats counts what the network carried.
type Stats struct {
	Dials, DialsRefused, DialsBlackholed int64
	Bytes, Segments, SegmentsLost        int64
	Writes                               int64 // stream writes, each a message of its protocol
}

// CPU is the machine the hosts share, for SetCPU.
type CPU struct {
	Cores    int           // 0: CPU work costs no virtual time
	PerWrite time.Duration // the CPU time of one write, sent and received
}

// hostLink is one host's sending side.
type hostLink struct {
	ip      netip.Addr
	shape   Shape
	free    time.Time // when its link is next free (bandwidth)
	cpuFree time.Time // when the CPU work queued for it so far is done (SetCPU)
}

// New makes an empty network whose random choices (jitter, loss) come from
// seed.
func New(seed uint64) *Network {
	n := &Network{
		rng:       rand.New(rand.NewPCG(seed, 0x73696d6c696e6b)),
		hosts:     map[netip.Addr]*hostLink{},
		listeners: map[netip.AddrPort]*listener{},
		nextPort:  40000,
		conns:     map[*muxConn]struct{}{},
	}
	empty := map[[2]netip.Addr]bool{}
	n.cut.Store(&empty)
	return n
}

// SetCPU charges CPU time for every write from now on, on the shared
// machine c describes (see the package doc); a zero CPU turns it off.
// Each write then looks at every host (which are busy): it is meant for
// the tens of nodes a real testnet on one machine has.
func (n *Network) SetCPU(c CPU) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cpu = c
}

// shareCPU queues PerWrite of work at dst, arriving at at, after dst's
// earlier work, and returns when it is done: it runs slower by the number
// of hosts busy when it starts over the cores, if more. n.mu held.
func (n *Network) shareCPU(dst netip.Addr, at time.Time) time.Time {
	h := n.host(dst)
	start := at
	if h.cpuFree.After(start) {
		start = h.cpuFree
	}
	busy := 1
	for _, o := range n.hosts {
		if o != h && o.cpuFree.After(start) {
			busy++
		}
	}
	f := max(1, float64(busy)/float64(n.cpu.Cores))
	h.cpuFree = start.Add(time.Duration(f * float64(n.cpu.PerWrite)))
	return h.cpuFree
}

// Stats returns the counters so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// OpenConns is the number of connection ends open now.
func (n *Network) OpenConns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

// AddrOf is the IPv4 address of the i-th host (i from 1): 10.x.y.z.
func AddrOf(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// SetShape sets (or changes) the shaping of what ip sends; it applies to
// bytes written from now on.
func (n *Network) SetShape(ip netip.Addr, s Shape) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.host(ip).shape = s
}

func (n *Network) host(ip netip.Addr) *hostLink {
	h := n.hosts[ip]
	if h == nil {
		h = &hostLink{ip: ip}
		n.hosts[ip] = h
	}
	return h
}

// Partition cuts the hosts into groups: hosts of different groups no longer
// reach each other. Hosts in no group reach everyone. It replaces an
// earlier partition.
func (n *Network) Partition(groups [][]netip.Addr) {
	cut := map[[2]netip.Addr]bool{}
	for i, g := range groups {
		for j, o := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range o {
					cut[[2]netip.Addr{a, b}] = true
				}
			}
		}
	}
	n.cut.Store(&cut)
	n.wakeAll()
	n.closeStalled()
}

// Heal ends the partition; what waited on stalled connections is delivered.
func (n *Network) Heal() {
	empty := map[[2]netip.Addr]bool{}
	n.cut.Store(&empty)
	n.wakeAll()
}

// Shutdown refuses every dial from now on, at once, as a network whose
// hosts are all gone would; open connections stay. A simulation calls it
// before closing its nodes: each node that loses its last peers runs a
// bootstrap round and a routing-table refresh (a few hundred dials), and a
// thousand nodes closing one batch after another otherwise made a
// thousand such refreshes, dialing nodes still up, at the end of the run.
func (n *Network) Shutdown() { n.down.Store(true) }

func (n *Network) blocked(a, b netip.Addr) bool {
	return (*n.cut.Load())[[2]netip.Addr{a, b}]
}

func (n *Network) ends() []*muxConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	cs := make([]*muxConn, 0, len(n.conns))
	for c := range n.conns {
		cs = append(cs, c)
	}
	return cs
}

// wakeAll wakes every reader and accepter, to look at the partition again.
func (n *Network) wakeAll() {
	for _, c := range n.ends() {
		c.wake()
	}
}

// closeStalled closes, StallTimeout from now, every connection the
// partition cuts that is still cut then.
func (n *Network) closeStalled() {
	for _, c := range n.ends() {
		if !n.blocked(c.local.Addr(), c.remote.Addr()) {
			continue
		}
		time.AfterFunc(StallTimeout, func() {
			if n.blocked(c.local.Addr(), c.remote.Addr()) {
				c.closeWith(time.Now())
			}
		})
	}
}

// Transport returns a libp2p transport constructor for the host at ip, for
// libp2p.Transport. The host must listen on /ip4/IP/tcp/PORT addresses.
func (n *Network) Transport(ip netip.Addr) func(ic.PrivKey, connmgr.ConnectionGater, network.ResourceManager) (*Transport, error) {
	return func(key ic.PrivKey, gater connmgr.ConnectionGater, rcmgr network.ResourceManager) (*Transport, error) {
		if rcmgr == nil {
			rcmgr = &network.NullResourceManager{}
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("simlink: host %s: %w", ip, err)
		}
		n.mu.Lock()
		n.host(ip)
		n.mu.Unlock()
		return &Transport{net: n, ip: ip, id: id, pub: key.GetPublic(), gater: gater, rcmgr: rcmgr}, nil
	}
}

// Transport is one host's libp2p transport on the simulated network.
type Transport struct {
	net   *Network
	ip    netip.Addr
	id    peer.ID
	pub   ic.PubKey
	gater connmgr.ConnectionGater // nil: none
	rcmgr network.ResourceManager
}

var _ transport.Transport = (*Transport)(nil)

// Protocols is the TCP protocol: the simulated hosts use /ip4/…/tcp/…
// addresses, so weft's address handling sees what it sees in a testnet.
func (t *Transport) Protocols() []int { return []int{ma.P_TCP} }

// Proxy is false.
func (t *Transport) Proxy() bool { return false }

// CanDial accepts /ip4/A/tcp/P.
func (t *Transport) CanDial(a ma.Multiaddr) bool {
	_, err := addrPort(a)
	return err == nil
}

func addrPort(a ma.Multiaddr) (netip.AddrPort, error) {
	if len(a) != 2 || a[0].Code() != ma.P_IP4 || a[1].Code() != ma.P_TCP {
		return netip.AddrPort{}, fmt.Errorf("simlink: %s is not /ip4/A/tcp/P", a)
	}
	ip, port := a[0].RawValue(), a[1].RawValue()
	if len(ip) != 4 || len(port) != 2 {
		return netip.AddrPort{}, fmt.Errorf("simlink: %s is not /ip4/A/tcp/P", a)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip)), binary.BigEndian.Uint16(port)), nil
}

func toMA(ap netip.AddrPort) ma.Multiaddr {
	m, _ := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
	return m
}

// Listen listens on /ip4/IP/tcp/PORT (IP must be the host's).
func (t *Transport) Listen(laddr ma.Multiaddr) (transport.Listener, error) {
	ap, err := addrPort(laddr)
	if err != nil {
		return nil, err
	}
	if ap.Addr() != t.ip {
		return nil, fmt.Errorf("simlink: host %s cannot listen on %s", t.ip, laddr)
	}
	n := t.net
	n.mu.Lock()
	if ap.Port() == 0 {
		ap = netip.AddrPortFrom(ap.Addr(), n.nextPort)
		n.nextPort++
	}
	if n.listeners[ap] != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("simlink: listen %s: address already in use", ap)
	}
	l := &listener{t: t, ap: ap, ma: toMA(ap), queue: make(chan *muxConn, 64), done: make(chan struct{})}
	n.listeners[ap] = l
	n.mu.Unlock()
	return l, nil
}

// Dial connects to raddr, the host p, after three round trips.
func (t *Transport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, err
	}
	c, err := t.dial(ctx, raddr, p, scope)
	if err != nil {
		scope.Done()
		return nil, err
	}
	return c, nil
}

// handshakeRTTs is what connecting costs: TCP's handshake, multistream's
// choice of security, TLS 1.3's handshake (carrying the muxer's choice).
const handshakeRTTs = 3

func (t *Transport) dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID, scope network.ConnManagementScope) (*muxConn, error) {
	if err := scope.SetPeer(p); err != nil {
		return nil, err
	}
	ap, err := addrPort(raddr)
	if err != nil {
		return nil, err
	}
	n := t.net
	n.mu.Lock()
	n.stats.Dials++
	rtt := n.host(t.ip).shape.Latency + n.host(ap.Addr()).shape.Latency
	local := netip.AddrPortFrom(t.ip, n.nextPort)
	n.nextPort++
	if n.nextPort < 40000 {
		n.nextPort = 40000
	}
	n.mu.Unlock()
	if n.down.Load() {
		n.mu.Lock()
		n.stats.DialsRefused++
		n.mu.Unlock()
		return nil, fmt.Errorf("simlink: dial %s: connection refused (the network is shut down)", ap)
	}
	if n.blocked(t.ip, ap.Addr()) {
		n.mu.Lock()
		n.stats.DialsBlackholed++
		n.mu.Unlock()
		<-ctx.Done()
		return nil, fmt.Errorf("simlink: dial %s: %w", ap, ctx.Err())
	}
	if err := sleepCtx(ctx, rtt); err != nil {
		return nil, fmt.Errorf("simlink: dial %s: %w", ap, err)
	}
	n.mu.Lock()
	l := n.listeners[ap]
	n.mu.Unlock()
	if l == nil {
		n.mu.Lock()
		n.stats.DialsRefused++
		n.mu.Unlock()
		return nil, fmt.Errorf("simlink: dial %s: connection refused", ap)
	}
	if p != "" && p != l.t.id {
		return nil, fmt.Errorf("simlink: dial %s: the host there is %s, not %s", ap, l.t.id, p)
	}
	if err := sleepCtx(ctx, (handshakeRTTs-1)*rtt); err != nil {
		return nil, fmt.Errorf("simlink: dial %s: handshake: %w", ap, err)
	}
	dir := network.DirOutbound
	if ok, isClient, _ := network.GetSimultaneousConnect(ctx); ok && !isClient {
		dir = network.DirInbound
	}
	ours, theirs := n.newConnPair(t, l.t, local, ap, scope)
	if t.gater != nil && !t.gater.InterceptSecured(dir, ours.remotePeer, ours) {
		ours.closeWith(time.Now())
		return nil, fmt.Errorf("simlink: dial %s: the connection gater refused %s", ap, ours.remotePeer)
	}
	select {
	case l.queue <- theirs:
	case <-l.done:
		ours.closeWith(time.Now())
		return nil, fmt.Errorf("simlink: dial %s: connection refused", ap)
	case <-ctx.Done():
		ours.closeWith(time.Now())
		return nil, fmt.Errorf("simlink: dial %s: %w", ap, ctx.Err())
	}
	return ours, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listener is a host's transport.Listener on the simulated network.
type listener struct {
	t     *Transport
	ap    netip.AddrPort
	ma    ma.Multiaddr
	queue chan *muxConn // ends whose dialer has finished the handshake
	done  chan struct{}
	once  sync.Once
}

var _ transport.Listener = (*listener)(nil)

// Accept returns the next inbound connection the gater and the resource
// manager let in.
func (l *listener) Accept() (transport.CapableConn, error) {
	for {
		var c *muxConn
		select {
		case c = <-l.queue:
		case <-l.done:
			return nil, transport.ErrListenerClosed
		}
		t := l.t
		if t.gater != nil && !t.gater.InterceptAccept(c) {
			c.closeWith(time.Now())
			continue
		}
		scope, err := t.rcmgr.OpenConnection(network.DirInbound, true, c.RemoteMultiaddr())
		if err != nil {
			c.closeWith(time.Now())
			continue
		}
		if err := scope.SetPeer(c.remotePeer); err != nil {
			scope.Done()
			c.closeWith(time.Now())
			continue
		}
		c.scope = scope
		if t.gater != nil && !t.gater.InterceptSecured(network.DirInbound, c.remotePeer, c) {
			c.closeWith(time.Now())
			continue
		}
		return c, nil
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		n := l.t.net
		n.mu.Lock()
		if n.listeners[l.ap] == l {
			delete(n.listeners, l.ap)
		}
		n.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.queue:
				c.closeWith(time.Now())
			default:
				return
			}
		}
	})
	return nil
}

func (l *listener) Addr() net.Addr          { return net.TCPAddrFromAddrPort(l.ap) }
func (l *listener) Multiaddr() ma.Multiaddr { return l.ma }

// newConnPair makes the two ends of a connection from the host of dialer
// (at a) to the host of lis (at b); scope is the dialer's (the listener's
// end gets its own when accepted).
func (n *Network) newConnPair(dialer, lis *Transport, a, b netip.AddrPort, scope network.ConnManagementScope) (*muxConn, *muxConn) {
	ca := &muxConn{net: n, tr: dialer, local: a, remote: b, localPeer: dialer.id, remotePeer: lis.id, remoteKey: lis.pub,
		scope: scope, streams: map[*stream]struct{}{}, signal: make(chan struct{}, 1)}
	cb := &muxConn{net: n, tr: lis, local: b, remote: a, localPeer: lis.id, remotePeer: dialer.id, remoteKey: dialer.pub,
		scope: &network.NullScope{}, streams: map[*stream]struct{}{}, signal: make(chan struct{}, 1)}
	ca.peer, cb.peer = cb, ca
	ca.localMA, ca.remoteMA = toMA(a), toMA(b)
	cb.localMA, cb.remoteMA = ca.remoteMA, ca.localMA
	n.mu.Lock()
	n.conns[ca] = struct{}{}
	n.conns[cb] = struct{}{}
	n.mu.Unlock()
	return ca, cb
}

// muxConn is one end of a connection: a transport.CapableConn that is
// natively multiplexed.
type muxConn struct {
	net                   *Network
	tr                    *Transport
	local, remote         netip.AddrPort
	localPeer, remotePeer peer.ID
	remoteKey             ic.PubKey
	localMA, remoteMA     ma.Multiaddr
	scope                 network.ConnManagementScope
	peer                  *muxConn    // the other end
	closed                atomic.Bool // set under mu; read without it by IsClosed

	// sendLast is the due time of the last bytes this end sent on any of
	// its streams: a connection keeps one order, as TCP under yamux does
	// (what is written waits behind what was written before it, whatever
	// its stream), and as the namespaced testnet's delay line keeps it per
	// flow. Jitter therefore delays a burst to the latest draw in it.
	sendMu   sync.Mutex
	sendLast time.Time

	mu       sync.Mutex
	pending  []*stream // opened by the peer, not accepted yet
	streams  map[*stream]struct{}
	goneAt   time.Time // when the peer's close reaches this end (zero: open)
	signal   chan struct{}
	scopeEnd sync.Once
}

var _ transport.CapableConn = (*muxConn)(nil)

func (c *muxConn) wake() {
	c.wake1()
	c.mu.Lock()
	ss := make([]*stream, 0, len(c.streams))
	for s := range c.streams {
		ss = append(ss, s)
	}
	c.mu.Unlock()
	for _, s := range ss {
		s.in.wake()
	}
}

func (c *muxConn) LocalPeer() peer.ID             { return c.localPeer }
func (c *muxConn) RemotePeer() peer.ID            { return c.remotePeer }
func (c *muxConn) RemotePublicKey() ic.PubKey     { return c.remoteKey }
func (c *muxConn) LocalMultiaddr() ma.Multiaddr   { return c.localMA }
func (c *muxConn) RemoteMultiaddr() ma.Multiaddr  { return c.remoteMA }
func (c *muxConn) Scope() network.ConnScope       { return c.scope }
func (c *muxConn) Transport() transport.Transport { return c.tr }
func (c *muxConn) As(any) bool                    { return false }
func (c *muxConn) ConnState() network.ConnectionState {
	return network.ConnectionState{Transport: "simlink"}
}

// latency is the one-way delay of what ip sends.
func (n *Network) latency(ip netip.Addr) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.host(ip).shape.Latency
}

// OpenStream opens a stream; the peer can accept it at once, and reads
// what is written on it after the link's delay.
func (c *muxConn) OpenStream(ctx context.Context) (network.MuxedStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ours, theirs := c.newStreamPair()
	c.mu.Lock()
	if c.closed.Load() || c.gone(time.Now()) {
		c.mu.Unlock()
		return nil, fmt.Errorf("simlink: open stream to %s: %w", c.remotePeer, network.ErrReset)
	}
	c.streams[ours] = struct{}{}
	c.mu.Unlock()
	p := c.peer
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		ours.Reset()
		return ours, nil // the peer's close is on its way: the stream fails as used
	}
	p.pending = append(p.pending, theirs)
	p.streams[theirs] = struct{}{}
	p.mu.Unlock()
	p.wake1()
	return ours, nil
}

func (c *muxConn) wake1() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// gone says whether the peer's close has reached this end; c.mu held.
func (c *muxConn) gone(now time.Time) bool {
	return !c.goneAt.IsZero() && !now.Before(c.goneAt)
}

// AcceptStream returns the next stream the peer opened, or an error once
// either end is closed.
func (c *muxConn) AcceptStream() (network.MuxedStream, error) {
	for {
		now := time.Now()
		c.mu.Lock()
		switch {
		case c.closed.Load():
			c.mu.Unlock()
			return nil, net.ErrClosed
		case len(c.pending) > 0:
			s := c.pending[0]
			c.pending[0] = nil
			c.pending = c.pending[1:]
			c.mu.Unlock()
			return s, nil
		case c.gone(now):
			c.mu.Unlock()
			return nil, fmt.Errorf("simlink: connection from %s: closed by the peer", c.remotePeer)
		}
		wait := time.Duration(-1)
		if !c.goneAt.IsZero() {
			wait = c.goneAt.Sub(now)
		}
		c.mu.Unlock()
		if wait >= 0 {
			tm := time.NewTimer(wait)
			select {
			case <-c.signal:
			case <-tm.C:
			}
			tm.Stop()
		} else {
			<-c.signal
		}
	}
}

// Close closes this end: its streams are reset, and the peer learns of it
// one latency later.
func (c *muxConn) Close() error {
	now := time.Now()
	return c.closeWith(due(now.Add(c.net.latency(c.local.Addr())), now))
}

// CloseWithError is Close (the code is not carried).
func (c *muxConn) CloseWithError(network.ConnErrorCode) error { return c.Close() }

// closeWith closes this end; the peer learns of it at `at`.
func (c *muxConn) closeWith(at time.Time) error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	ss := make([]*stream, 0, len(c.streams))
	for s := range c.streams {
		ss = append(ss, s)
	}
	c.pending = nil
	c.mu.Unlock()
	for _, s := range ss {
		s.ResetWithError(0)
	}
	n := c.net
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	p := c.peer
	p.mu.Lock()
	if p.goneAt.IsZero() || at.Before(p.goneAt) {
		p.goneAt = at
	}
	p.mu.Unlock()
	p.wake1()
	c.wake1()
	c.scopeEnd.Do(func() { c.scope.Done() })
	return nil
}

// IsClosed says whether this end was closed.
func (c *muxConn) IsClosed() bool { return c.closed.Load() }

// forget drops a finished stream from its connection.
func (c *muxConn) forget(s *stream) {
	c.mu.Lock()
	delete(c.streams, s)
	c.mu.Unlock()
}

// chunk is one write, due at the reader at `at`.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe is one direction of a stream: src writes, dst reads.
type pipe struct {
	net      *Network
	src, dst netip.Addr

	mu      sync.Mutex
	q       []chunk
	last    time.Time // due time of the last chunk (order is kept)
	eof     bool      // the writer closed: EOF once q is drained and eofAt passed
	eofAt   time.Time
	rst     bool // the writer reset: the reader fails once rstAt passed
	rstAt   time.Time
	rclosed bool // the reader closed its end
	signal  chan struct{}
}

func (p *pipe) wake() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// newStreamPair makes the two ends of a stream of c: ours and the peer's.
func (c *muxConn) newStreamPair() (*stream, *stream) {
	a, b := c.local.Addr(), c.remote.Addr()
	ab := &pipe{net: c.net, src: a, dst: b, signal: make(chan struct{}, 1)}
	ba := &pipe{net: c.net, src: b, dst: a, signal: make(chan struct{}, 1)}
	return &stream{conn: c, in: ba, out: ab}, &stream{conn: c.peer, in: ab, out: ba}
}

// stream is one end of a stream. It implements network.MuxedStream.
type stream struct {
	conn    *muxConn
	in, out *pipe

	mu               sync.Mutex
	wclosed, rclosed bool
	reset            bool
	rdl, wdl         time.Time
}

var _ network.MuxedStream = (*stream)(nil)

func (s *stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl, s.wdl = t, t
	s.mu.Unlock()
	s.in.wake()
	return nil
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl = t
	s.mu.Unlock()
	s.in.wake()
	return nil
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.wdl = t
	s.mu.Unlock()
	return nil
}

// state returns the deadlines and the error a read (r) or write (w) fails
// with at once, if any.
func (s *stream) state() (rdl, wdl time.Time, rerr, werr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.reset:
		rerr, werr = network.ErrReset, network.ErrReset
	default:
		if s.rclosed {
			rerr = net.ErrClosed
		}
		if s.wclosed {
			werr = net.ErrClosed
		}
	}
	return s.rdl, s.wdl, rerr, werr
}

// Read returns the bytes that are due, waiting (in virtual time under
// synctest) for the next ones.
func (s *stream) Read(b []byte) (int, error) {
	p := s.in
	for {
		rdl, _, rerr, _ := s.state()
		if rerr != nil {
			return 0, rerr
		}
		now := time.Now()
		if !rdl.IsZero() && !now.Before(rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		var wait time.Duration = -1
		p.mu.Lock()
		stalled := p.net.blocked(p.src, p.dst)
		switch {
		case stalled:
		case p.rst && !now.Before(p.rstAt):
			p.q = nil
			p.mu.Unlock()
			return 0, network.ErrReset
		case len(p.q) > 0 && !now.Before(p.q[0].at):
			nr := 0
			for nr < len(b) && len(p.q) > 0 && !now.Before(p.q[0].at) {
				k := copy(b[nr:], p.q[0].b)
				nr += k
				if k == len(p.q[0].b) {
					p.q[0] = chunk{}
					p.q = p.q[1:]
				} else {
					p.q[0].b = p.q[0].b[k:]
				}
			}
			p.mu.Unlock()
			return nr, nil
		case p.rst:
			wait = p.rstAt.Sub(now)
			if len(p.q) > 0 {
				wait = min(wait, p.q[0].at.Sub(now))
			}
		case len(p.q) > 0:
			wait = p.q[0].at.Sub(now)
		case p.eof && !now.Before(p.eofAt):
			p.mu.Unlock()
			s.done()
			return 0, io.EOF
		case p.eof:
			wait = p.eofAt.Sub(now)
		}
		p.mu.Unlock()
		if !rdl.IsZero() && (wait < 0 || rdl.Sub(now) < wait) {
			wait = rdl.Sub(now)
		}
		if wait >= 0 {
			tm := time.NewTimer(wait)
			select {
			case <-p.signal:
			case <-tm.C:
			}
			tm.Stop()
		} else {
			<-p.signal
		}
	}
}

// Write queues b for the peer, due after the sender's shaping.
func (s *stream) Write(b []byte) (int, error) {
	if _, _, _, werr := s.state(); werr != nil {
		return 0, werr
	}
	p := s.out
	n := p.net
	for {
		_, wdl, _, _ := s.state()
		n.mu.Lock()
		h := n.host(p.src)
		now := time.Now()
		if h.shape.Bandwidth <= 0 || h.free.Sub(now) <= time.Duration(float64(SendBuffer)/float64(h.shape.Bandwidth)*float64(time.Second)) {
			break
		}
		wait := h.free.Sub(now) - time.Duration(float64(SendBuffer)/float64(h.shape.Bandwidth)*float64(time.Second))
		n.mu.Unlock()
		if !wdl.IsZero() {
			if !now.Before(wdl) {
				return 0, os.ErrDeadlineExceeded
			}
			wait = min(wait, wdl.Sub(now))
		}
		time.Sleep(wait)
		if _, _, _, werr := s.state(); werr != nil {
			return 0, werr
		}
	}
	// n.mu held: shape this write.
	h := n.host(p.src)
	sh := h.shape
	now := time.Now()
	sent := now
	if sh.Bandwidth > 0 {
		start := now
		if h.free.After(start) {
			start = h.free
		}
		sent = start.Add(time.Duration(float64(len(b)) / float64(sh.Bandwidth) * float64(time.Second)))
		h.free = sent
	}
	at := sent.Add(sh.Latency)
	if sh.Jitter > 0 {
		at = at.Add(time.Duration(n.rng.Int64N(int64(2*sh.Jitter)+1)) - sh.Jitter)
	}
	segs := int64((len(b) + segment - 1) / segment)
	n.stats.Writes++
	n.stats.Bytes += int64(len(b))
	n.stats.Segments += segs
	if sh.Loss > 0 {
		lost := false
		for range segs {
			if n.rng.Float64() < sh.Loss {
				lost = true
				n.stats.SegmentsLost++
			}
		}
		if lost {
			at = at.Add(max(200*time.Millisecond, 3*sh.Latency))
		}
	}
	if n.cpu.Cores > 0 && n.cpu.PerWrite > 0 {
		at = n.shareCPU(p.dst, at)
	}
	n.mu.Unlock()
	at = due(at, now)

	c := s.conn
	c.sendMu.Lock()
	if at.Before(c.sendLast) {
		at = c.sendLast
	}
	c.sendLast = at
	c.sendMu.Unlock()
	p.mu.Lock()
	if p.rclosed {
		p.mu.Unlock()
		return 0, network.ErrReset
	}
	if at.Before(p.last) {
		at = p.last
	}
	p.last = at
	p.q = append(p.q, chunk{b: append([]byte(nil), b...), at: at})
	p.mu.Unlock()
	p.wake()
	return len(b), nil
}

// CloseWrite ends what this end sends: the peer reads EOF after it, one
// latency later at the earliest.
func (s *stream) CloseWrite() error {
	s.mu.Lock()
	if s.wclosed || s.reset {
		s.mu.Unlock()
		return nil
	}
	s.wclosed = true
	done := s.rclosed
	s.mu.Unlock()
	p := s.out
	now := time.Now()
	at := due(now.Add(p.net.latency(p.src)), now)
	p.mu.Lock()
	if at.Before(p.last) {
		at = p.last
	}
	p.eof, p.eofAt = true, at
	p.mu.Unlock()
	p.wake()
	if done {
		s.conn.forget(s)
	}
	return nil
}

// CloseRead stops reading: what arrives is dropped and the peer's writes
// fail.
func (s *stream) CloseRead() error {
	s.mu.Lock()
	if s.rclosed || s.reset {
		s.mu.Unlock()
		return nil
	}
	s.rclosed = true
	done := s.wclosed
	s.mu.Unlock()
	s.in.mu.Lock()
	s.in.rclosed, s.in.q = true, nil
	s.in.mu.Unlock()
	s.in.wake()
	if done {
		s.conn.forget(s)
	}
	return nil
}

// Close closes both directions.
func (s *stream) Close() error {
	s.CloseWrite()
	return s.CloseRead()
}

// done notes that the peer finished sending; the stream is forgotten by
// its connection once this end has finished too.
func (s *stream) done() {
	s.mu.Lock()
	finished := s.wclosed
	s.mu.Unlock()
	if finished {
		s.conn.forget(s)
	}
}

// Reset ends both directions at once: the peer's reads fail one latency
// later, its writes at once.
func (s *stream) Reset() error { return s.ResetWithError(0) }

// ResetWithError is Reset (the code is not carried).
func (s *stream) ResetWithError(network.StreamErrorCode) error {
	s.mu.Lock()
	if s.reset || (s.wclosed && s.rclosed) {
		s.mu.Unlock()
		return nil
	}
	s.reset = true
	wasWClosed := s.wclosed
	s.mu.Unlock()
	if !wasWClosed {
		p := s.out
		now := time.Now()
		at := due(now.Add(p.net.latency(p.src)), now)
		p.mu.Lock()
		p.rst, p.rstAt = true, at
		p.mu.Unlock()
		p.wake()
	}
	s.in.mu.Lock()
	s.in.rclosed, s.in.q = true, nil
	s.in.mu.Unlock()
	s.in.wake()
	s.conn.forget(s)
	return nil
}
