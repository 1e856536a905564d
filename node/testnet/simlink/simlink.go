// Package simlink is an in-memory network for simulated testnets: a libp2p
// transport whose connections are byte pipes between hosts of one process,
// with each host's sending link shaped by latency, jitter, bandwidth and
// loss, and with partitions between hosts.
//
// It costs no goroutine per connection: a read waits on the pipe until the
// head of its queue is due (a timer), so under testing/synctest every delay
// is virtual time. Connections are upgraded by libp2p's own upgrader
// (plaintext security, yamux), so everything above the byte stream is the
// code a real node runs.
//
// Model (what a run measures, and where it differs from a kernel link):
//   - A host's Shape applies to what it sends, as the namespaced testnet
//     shapes each node's egress: a byte written at t is due at the receiver
//     at t + serialisation + latency ± jitter (uniform), in order.
//   - Bandwidth is the host's egress rate, shared by all its connections; a
//     writer blocks while more than SendBuffer bytes wait to be sent.
//   - The stream is reliable, as TCP is: a write that is "lost" (each
//     1460-byte segment with the loss probability) arrives one
//     retransmission timeout late (max(200 ms, 3 × latency), Linux's floor)
//     instead of never.
//   - Connecting costs one round trip. A partition is a blackhole: dials
//     across it hang until their context ends, and open connections across
//     it stall (nothing is delivered) until the heal, when what waited is
//     delivered at once; libp2p's keep-alives close those that stall long.
package simlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

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
	conns     map[*pipe]struct{}
	cut       atomic.Pointer[map[[2]netip.Addr]bool] // partition, both orders
	down      atomic.Bool                            // Shutdown: every dial refused

	stats Stats
}

// Stats counts what the network carried.
type Stats struct {
	Dials, DialsRefused, DialsBlackholed int64
	Bytes, Segments, SegmentsLost        int64
}

// hostLink is one host's sending side.
type hostLink struct {
	ip    netip.Addr
	shape Shape
	free  time.Time // when its link is next free (bandwidth)
}

// New makes an empty network whose random choices (jitter, loss) come from
// seed.
func New(seed uint64) *Network {
	n := &Network{
		rng:       rand.New(rand.NewPCG(seed, 0x73696d6c696e6b)),
		hosts:     map[netip.Addr]*hostLink{},
		listeners: map[netip.AddrPort]*listener{},
		nextPort:  40000,
		conns:     map[*pipe]struct{}{},
	}
	empty := map[[2]netip.Addr]bool{}
	n.cut.Store(&empty)
	return n
}

// Stats returns the counters so far.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
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

func (n *Network) wakeAll() {
	n.mu.Lock()
	ps := make([]*pipe, 0, len(n.conns))
	for p := range n.conns {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	for _, p := range ps {
		p.wake()
	}
}

// Transport returns a libp2p transport constructor for the host at ip, for
// libp2p.Transport. The host must listen on /ip4/IP/tcp/PORT addresses.
func (n *Network) Transport(ip netip.Addr) func(transport.Upgrader, network.ResourceManager) (*Transport, error) {
	return func(up transport.Upgrader, rcmgr network.ResourceManager) (*Transport, error) {
		if rcmgr == nil {
			rcmgr = &network.NullResourceManager{}
		}
		n.mu.Lock()
		n.host(ip)
		n.mu.Unlock()
		return &Transport{net: n, ip: ip, up: up, rcmgr: rcmgr}, nil
	}
}

// Transport is one host's libp2p transport on the simulated network.
type Transport struct {
	net   *Network
	ip    netip.Addr
	up    transport.Upgrader
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
	na, err := manet.ToNetAddr(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := na.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
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
	l := &listener{net: n, ap: ap, ma: toMA(ap), queue: make(chan *conn, 64), done: make(chan struct{})}
	n.listeners[ap] = l
	n.mu.Unlock()
	return t.up.UpgradeGatedMaListener(t, t.up.GateMaListener(l)), nil
}

// Dial connects to raddr after one round trip.
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

func (t *Transport) dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID, scope network.ConnManagementScope) (transport.CapableConn, error) {
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
	ours, theirs := n.newConnPair(local, ap)
	select {
	case l.queue <- theirs:
	case <-l.done:
		ours.Close()
		return nil, fmt.Errorf("simlink: dial %s: connection refused", ap)
	case <-ctx.Done():
		ours.Close()
		theirs.Close()
		return nil, fmt.Errorf("simlink: dial %s: %w", ap, ctx.Err())
	}
	dir := network.DirOutbound
	if ok, isClient, _ := network.GetSimultaneousConnect(ctx); ok && !isClient {
		dir = network.DirInbound
	}
	return t.up.Upgrade(ctx, t, ours, dir, p, scope)
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

// listener is a manet.Listener on the simulated network.
type listener struct {
	net   *Network
	ap    netip.AddrPort
	ma    ma.Multiaddr
	queue chan *conn
	done  chan struct{}
	once  sync.Once
}

func (l *listener) Accept() (manet.Conn, error) {
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		l.net.mu.Lock()
		if l.net.listeners[l.ap] == l {
			delete(l.net.listeners, l.ap)
		}
		l.net.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.queue:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *listener) Addr() net.Addr            { return net.TCPAddrFromAddrPort(l.ap) }
func (l *listener) Multiaddr() ma.Multiaddr   { return l.ma }
func (c *conn) LocalMultiaddr() ma.Multiaddr  { return toMA(c.local) }
func (c *conn) RemoteMultiaddr() ma.Multiaddr { return toMA(c.remote) }

// chunk is one write, due at the reader at `at`.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe is one direction of a connection: src writes, dst reads.
type pipe struct {
	net      *Network
	src, dst netip.Addr

	mu      sync.Mutex
	q       []chunk
	last    time.Time // due time of the last chunk (order is kept)
	eof     bool      // the writer closed: EOF once q is drained and eofAt passed
	eofAt   time.Time
	rclosed bool // the reader closed its end
	signal  chan struct{}
}

func (p *pipe) wake() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

func (n *Network) newConnPair(a, b netip.AddrPort) (*conn, *conn) {
	ab := &pipe{net: n, src: a.Addr(), dst: b.Addr(), signal: make(chan struct{}, 1)}
	ba := &pipe{net: n, src: b.Addr(), dst: a.Addr(), signal: make(chan struct{}, 1)}
	n.mu.Lock()
	n.conns[ab] = struct{}{}
	n.conns[ba] = struct{}{}
	n.mu.Unlock()
	ca := &conn{local: a, remote: b, in: ba, out: ab}
	cb := &conn{local: b, remote: a, in: ab, out: ba}
	return ca, cb
}

// conn is one end of a simulated connection. It implements manet.Conn.
type conn struct {
	local, remote netip.AddrPort
	in, out       *pipe

	closeOnce sync.Once
	closed    atomic.Bool
	dl        sync.Mutex
	rdl, wdl  time.Time
}

func (c *conn) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(c.local) }
func (c *conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

func (c *conn) SetDeadline(t time.Time) error {
	c.dl.Lock()
	c.rdl, c.wdl = t, t
	c.dl.Unlock()
	c.in.wake()
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.dl.Lock()
	c.rdl = t
	c.dl.Unlock()
	c.in.wake()
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.dl.Lock()
	c.wdl = t
	c.dl.Unlock()
	return nil
}

func (c *conn) deadlines() (r, w time.Time) {
	c.dl.Lock()
	defer c.dl.Unlock()
	return c.rdl, c.wdl
}

// Read returns the bytes that are due, waiting (in virtual time under
// synctest) for the next ones.
func (c *conn) Read(b []byte) (int, error) {
	p := c.in
	for {
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
		rdl, _ := c.deadlines()
		now := time.Now()
		if !rdl.IsZero() && !now.Before(rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		var wait time.Duration = -1
		p.mu.Lock()
		stalled := p.net.blocked(p.src, p.dst)
		switch {
		case stalled:
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
		case len(p.q) > 0:
			wait = p.q[0].at.Sub(now)
		case p.eof && !now.Before(p.eofAt):
			p.mu.Unlock()
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
func (c *conn) Write(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	p := c.out
	n := p.net
	for {
		_, wdl := c.deadlines()
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
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
	}
	// n.mu held: shape this write.
	h := n.host(p.src)
	s := h.shape
	now := time.Now()
	sent := now
	if s.Bandwidth > 0 {
		start := now
		if h.free.After(start) {
			start = h.free
		}
		sent = start.Add(time.Duration(float64(len(b)) / float64(s.Bandwidth) * float64(time.Second)))
		h.free = sent
	}
	at := sent.Add(s.Latency)
	if s.Jitter > 0 {
		at = at.Add(time.Duration(n.rng.Int64N(int64(2*s.Jitter)+1)) - s.Jitter)
	}
	segs := int64((len(b) + segment - 1) / segment)
	n.stats.Bytes += int64(len(b))
	n.stats.Segments += segs
	if s.Loss > 0 {
		lost := false
		for range segs {
			if n.rng.Float64() < s.Loss {
				lost = true
				n.stats.SegmentsLost++
			}
		}
		if lost {
			at = at.Add(max(200*time.Millisecond, 3*s.Latency))
		}
	}
	n.mu.Unlock()

	p.mu.Lock()
	if p.rclosed {
		p.mu.Unlock()
		return 0, syscallReset
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

var syscallReset = errors.New("simlink: connection reset by peer")

// Close closes this end: the peer reads EOF after what was written, one
// latency later.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		n := c.out.net
		n.mu.Lock()
		lat := n.host(c.out.src).shape.Latency
		delete(n.conns, c.in)
		delete(n.conns, c.out)
		n.mu.Unlock()
		p := c.out
		p.mu.Lock()
		at := time.Now().Add(lat)
		if at.Before(p.last) {
			at = p.last
		}
		p.eof, p.eofAt = true, at
		p.mu.Unlock()
		p.wake()
		c.in.mu.Lock()
		c.in.rclosed = true
		c.in.q = nil
		c.in.mu.Unlock()
		c.in.wake()
	})
	return nil
}

// CloseRead and CloseWrite are not needed by the upgraded connection.
var _ manet.Conn = (*conn)(nil)
