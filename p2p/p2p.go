// Package p2p is weft's networking layer: the libp2p host with its transports,
// private-swarm protection and connection gating, the Kademlia DHT, the
// gossipsub router, bootstrapping and the memory of known peers that lets a
// restarted node find its swarm again without a bootstrap list.
//
// It knows nothing of blocks, pins or feeds: node/ hands it a datastore to
// persist into and uses the host, DHT and pubsub it builds.
package p2p

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	goyamux "github.com/libp2p/go-yamux/v5"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	lp2pconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// DHT modes accepted by Config.DHTMode.
const (
	DHTAuto   = "auto"
	DHTClient = "client"
	DHTServer = "server"
)

// Config describes a Network. The zero value of every optional field is a
// sensible default, noted beside it.
type Config struct {
	// Identity is the node's private key. Required.
	Identity crypto.PrivKey
	// ListenAddrs are the swarm listen multiaddrs. Required.
	ListenAddrs []ma.Multiaddr
	// PSK makes the swarm private (nil: public). With a PSK, QUIC listen
	// addresses are dropped: libp2p refuses a pre-shared key on QUIC.
	PSK pnet.PSK
	// AllowPeers, when not empty, is the only set of peers that may connect.
	AllowPeers []peer.ID
	// Bootstrap peers are dialled at start and whenever peers run low.
	Bootstrap []peer.AddrInfo
	// BootstrapInterval is the period of the bootstrap round (default 5m).
	BootstrapInterval time.Duration
	// LowPeers triggers a bootstrap round at once when connected peers drop
	// below it (0: 4; negative: never, only the periodic rounds run).
	LowPeers int
	// DHTMode is auto, client or server (default server).
	DHTMode string
	// DHTPrefix is the DHT protocol prefix (default /weft). A private swarm
	// appends a suffix derived from its key, so it never shares a DHT
	// protocol with a public or other private swarm.
	DHTPrefix string
	// DHTExtraOptions are appended to the DHT's options (validators for /ipfs).
	DHTExtraOptions []dht.Option
	// ConnMgrLow and ConnMgrHigh are the connection manager water marks
	// (default 64 and 192); ConnMgrGrace protects new connections (default
	// 30s); ConnMgrSilence is how often the manager checks the high water
	// mark and trims (default 10s, libp2p's).
	ConnMgrLow, ConnMgrHigh int
	ConnMgrGrace            time.Duration
	ConnMgrSilence          time.Duration
	// MaxMemory and MaxFDs bound the resource manager (0: scale to the machine).
	MaxMemory int64
	MaxFDs    int
	// ConnsPerIP bounds the connections one IPv4 address or IPv6 /56 holds
	// at once (8 times it for a /48), and connection attempts from one
	// address are rate-limited (a burst of twice it, then one per 5 s);
	// default 8, as libp2p's.
	ConnsPerIP int
	// ConnLimitExempt are prefixes ConnsPerIP and the attempt rate do not
	// apply to (nil: DefaultConnLimitExempt; empty: none). The totals below
	// still do.
	ConnLimitExempt []netip.Prefix
	// MaxInboundConns, MaxInboundStreams and MaxInboundStreamsPerPeer bound
	// incoming connections and streams in total and a peer's incoming
	// streams (0: libp2p's defaults scaled to MaxMemory: 64, 1024 and 256,
	// plus 64, 1024 and 128 per GiB).
	MaxInboundConns, MaxInboundStreams, MaxInboundStreamsPerPeer int
	// DHTStreamsPerPeer bounds a peer's incoming DHT streams (default 16).
	DHTStreamsPerPeer int
	// DHTRequestsPerPeer is the rate of DHT requests a peer is answered at
	// (per second, with a burst of ten seconds' worth; default 200): a
	// peer's requests past it wait, and are dropped when they would wait
	// more than 5 s.
	DHTRequestsPerPeer int
	// DHTProviderRecordsPerPeer bounds the provider records a peer adds:
	// a budget of this many, refilled over the records' lifetime (48 h),
	// so one peer's live records stay under twice it (default 20000).
	DHTProviderRecordsPerPeer int
	// EnableQUIC adds QUIC-v1 (ignored with a PSK).
	EnableQUIC bool
	// DialTimeout bounds one connection attempt (default 15s).
	DialTimeout time.Duration
	// KeepAliveInterval is how often each yamux connection pings its peer
	// and measures the round trip (default 2m; yamux's own is 30s). TCP's
	// keepalive (30s, in the kernel) already finds dead peers; every ping
	// wakes both ends, which with 30 peers was a third of an idle node's
	// wakeups at 30s.
	KeepAliveInterval time.Duration
	// MDNS turns on local-network discovery.
	MDNS bool
	// PubsubMaxMessageSize bounds a gossipsub message (default 1 MiB).
	PubsubMaxMessageSize int
	// Score tunes gossipsub peer scoring (zero fields: defaults).
	Score ScoreConfig
	// Datastore persists DHT records and known peers. Required.
	Datastore datastore.Batching
	// KnownPeersLimit is how many peers are remembered across restarts (default 64).
	KnownPeersLimit int
	// Logger receives the layer's logs (default slog.Default()).
	Logger *slog.Logger
	// NAT configures reachability checks, relays, hole punching, port
	// mapping and the announced addresses (nat.go). Zero: all off.
	NAT NATConfig
	// Transports, when not empty, replaces the TCP and QUIC transports and
	// the Noise and TLS security with these libp2p options. Only the
	// simulator sets it (node/testnet/simlink's in-memory transport); a
	// real swarm never does.
	Transports []libp2p.Option
	// PubsubDiscoveryLimit, when above 0, bounds how many peers of a topic
	// one DHT discovery round finds (and so dials); 0 keeps libp2p's 100,
	// with which every subscriber of a big topic connects to up to 100 of
	// the others.
	PubsubDiscoveryLimit int
	// Rendezvous, when set, names the DHT rendezvous a gossipsub topic is
	// advertised and looked up under (rendezvous.go); topics it gives one
	// name share one advertisement. nil: each topic its own.
	Rendezvous func(topic string) string
	// BitswapWorkers, when above 0, bounds Bitswap's blockstore and task
	// workers (default: boxo's, 128 and 8 goroutines per node).
	BitswapWorkers int
}

func (c *Config) setDefaults() {
	if c.BootstrapInterval <= 0 {
		c.BootstrapInterval = 5 * time.Minute
	}
	if c.LowPeers == 0 {
		c.LowPeers = 4
	}
	if c.DHTMode == "" {
		c.DHTMode = DHTServer
	}
	if c.DHTPrefix == "" {
		c.DHTPrefix = "/weft"
	}
	if c.ConnMgrHigh == 0 {
		c.ConnMgrLow, c.ConnMgrHigh = 64, 192
	}
	if c.ConnMgrGrace <= 0 {
		c.ConnMgrGrace = 30 * time.Second
	}
	if c.ConnMgrSilence <= 0 {
		c.ConnMgrSilence = 10 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 15 * time.Second
	}
	if c.PubsubMaxMessageSize <= 0 {
		c.PubsubMaxMessageSize = 1 << 20
	}
	if c.KnownPeersLimit <= 0 {
		c.KnownPeersLimit = 64
	}
	if c.ConnsPerIP <= 0 {
		c.ConnsPerIP = 8
	}
	if c.ConnLimitExempt == nil {
		c.ConnLimitExempt = DefaultConnLimitExempt
	}
	if c.DHTStreamsPerPeer <= 0 {
		c.DHTStreamsPerPeer = 16
	}
	if c.DHTRequestsPerPeer <= 0 {
		c.DHTRequestsPerPeer = 200
	}
	if c.DHTProviderRecordsPerPeer <= 0 {
		c.DHTProviderRecordsPerPeer = 20000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Score.setDefaults()
}

func (c *Config) validate() error {
	if c.Identity == nil {
		return errors.New("p2p: no identity key")
	}
	if len(c.ListenAddrs) == 0 {
		return errors.New("p2p: no listen addresses")
	}
	if c.Datastore == nil {
		return errors.New("p2p: no datastore")
	}
	switch c.DHTMode {
	case DHTAuto, DHTClient, DHTServer:
	default:
		return fmt.Errorf("p2p: DHT mode %q is not auto, client or server", c.DHTMode)
	}
	return c.Score.validate()
}

// Network is a running libp2p host with its DHT and gossipsub router.
type Network struct {
	Host   host.Host
	DHT    *dht.IpfsDHT
	PubSub *pubsub.PubSub

	cfg       Config
	prefix    protocol.ID
	listening []ma.Multiaddr
	cm        *connmgr.BasicConnMgr
	boot      *bootstrapper
	bitswap   *Bitswap
	psStats   *pubsubStats
	mdns      mdns.Service
	gate      *gate
	scores    *scoreWatch
	natw      *natWatch
	witness   atomic.Pointer[witnesses] // reach witnesses (witness.go); set with natw, read by the host's address factory
	quicCMs   []*quicreuse.ConnManager  // QUIC socket managers, set while libp2p.New runs; none without QUIC
	natReady  chan struct{}             // closed once Host and DHT are set (nat.go)

	topicsMu sync.Mutex
	topics   map[string]*pubsub.Topic // joined topics, see Topic
	dhtGuard *dhtGuard

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New builds the host, starts listening, and starts the DHT, gossipsub and
// the bootstrap loop. ctx bounds start-up only; Close stops everything.
func New(ctx context.Context, cfg Config) (*Network, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	listen := cfg.ListenAddrs
	quicOn := cfg.EnableQUIC && cfg.PSK == nil
	if !quicOn {
		listen = filterQUIC(listen)
		if len(listen) == 0 {
			return nil, errors.New("p2p: a private swarm needs a TCP listen address (QUIC cannot carry a pre-shared key)")
		}
	}
	cm, err := connmgr.NewConnManager(cfg.ConnMgrLow, cfg.ConnMgrHigh,
		connmgr.WithGracePeriod(cfg.ConnMgrGrace), connmgr.WithSilencePeriod(cfg.ConnMgrSilence))
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	prefix := protocol.ID(cfg.DHTPrefix)
	if cfg.PSK != nil {
		prefix = PrivateDHTPrefix(cfg.DHTPrefix, cfg.PSK)
	}
	rm, err := newResourceManager(&cfg, prefix+"/kad/1.0.0")
	if err != nil {
		return nil, err
	}
	// TLS first, as go-libp2p's defaults and Kubo order them: its AES-GCM
	// runs on the CPU's AES instructions and moved bulk data faster than
	// Noise's ChaCha20-Poly1305 on the machines measured
	// (scripts/bench/transfer.sh prints both). Noise stays for peers that
	// offer only Noise.
	transports := []libp2p.Option{
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Transport(tcp.NewTCPTransport),
	}
	if len(cfg.Transports) > 0 {
		transports, quicOn = cfg.Transports, false
	}
	gate := newGate(cfg.AllowPeers) // allowlist, and the deny set of Block (partition.go)
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.ListenAddrs(listen...),
		libp2p.ChainOptions(transports...),
		libp2p.Muxer(yamux.ID, yamuxTransport(cfg.KeepAliveInterval)),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.WithDialTimeout(cfg.DialTimeout),
		libp2p.UserAgent("weft"),
		libp2p.DisableMetrics(),
	}
	n := &Network{cfg: cfg, cm: cm, listening: listen, gate: gate, natReady: make(chan struct{}), topics: map[string]*pubsub.Topic{}}
	if quicOn {
		// go-libp2p's QUIC transport, keeping its socket managers: the
		// sweep punch (sweep.go) sends datagrams from the QUIC socket.
		// AutoNAT's dial-back hosts, which libp2p.New builds from the same
		// options, have managers of their own (without listeners).
		opts = append(opts, libp2p.Transport(func(key crypto.PrivKey, qcm *quicreuse.ConnManager, psk pnet.PSK, g lp2pconnmgr.ConnectionGater, rcm network.ResourceManager) (transport.Transport, error) {
			n.quicCMs = append(n.quicCMs, qcm)
			return quic.NewTransport(key, qcm, psk, g, rcm)
		}))
	}
	if cfg.PSK != nil {
		opts = append(opts, libp2p.PrivateNetwork(cfg.PSK))
	}
	opts = append(opts, libp2p.ConnectionGater(gate))
	natOpts, err := natOptions(&n.cfg.NAT, n)
	if err != nil {
		rm.Close()
		return nil, err
	}
	opts = append(opts, natOpts...)
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: start host: %w", explainListenError(err))
	}

	n.Host = h
	n.scores = newScoreWatch(n)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.prefix = prefix
	n.dhtGuard = newDHTGuard(cfg.DHTRequestsPerPeer, cfg.DHTProviderRecordsPerPeer, cfg.Logger)

	mode := map[string]dht.ModeOpt{DHTAuto: dht.ModeAuto, DHTClient: dht.ModeClient, DHTServer: dht.ModeServer}[cfg.DHTMode]
	dopts := []dht.Option{
		dht.Mode(mode),
		dht.ProtocolPrefix(n.prefix),
		dht.Datastore(cfg.Datastore),
		dht.BootstrapPeers(cfg.Bootstrap...),
		dht.OnRequestHook(n.dhtGuard.hook),
	}
	dopts = append(dopts, cfg.DHTExtraOptions...)
	n.DHT, err = dht.New(h, dopts...)
	if err != nil {
		n.abort()
		return nil, fmt.Errorf("p2p: start DHT: %w", err)
	}

	if err := n.watchNAT(n.ctx); err != nil {
		n.abort()
		return nil, err
	}

	n.psStats = newPubsubStats()
	n.PubSub, err = pubsub.NewGossipSub(n.ctx, h,
		pubsub.WithRawTracer(n.psStats),
		// Room for bursts: gossipsub drops what does not fit a peer's
		// outbound queue or the validation queue (defaults 32).
		pubsub.WithPeerOutboundQueueSize(512),
		pubsub.WithValidateQueueSize(512),
		pubsub.WithMessageSigning(true),
		pubsub.WithStrictSignatureVerification(true),
		pubsub.WithMaxMessageSize(cfg.PubsubMaxMessageSize),
		pubsub.WithPeerScore(peerScoreParams(cfg.Score), peerScoreThresholds()),
		pubsub.WithPeerScoreInspect(pubsub.ExtendedPeerScoreInspectFn(n.scores.inspect), cfg.Score.CheckInterval),
		pubsub.WithDiscovery(newRendezvous(drouting.NewRoutingDiscovery(n.DHT), cfg.Rendezvous), discoveryOpts(cfg.PubsubDiscoveryLimit)...),
	)
	if err != nil {
		n.abort()
		return nil, fmt.Errorf("p2p: start gossipsub: %w", err)
	}

	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.scores.run(n.ctx)
	}()

	n.boot = newBootstrapper(n, cfg)
	n.boot.start(&n.wg)

	if cfg.MDNS {
		n.mdns = mdns.NewMdnsService(h, "weft"+string(n.prefix), &mdnsNotifee{n: n})
		if err := n.mdns.Start(); err != nil {
			n.abort()
			return nil, fmt.Errorf("p2p: start mDNS: %w", err)
		}
	}
	return n, nil
}

func init() {
	// gossipsub looks every DiscoveryPollInterval (1s by default) for
	// topics short of peers, which wakes an idle node twice a second for
	// nothing. A topic is still looked up at once when it is joined; a
	// topic that lost its peers is looked up again within 10s. The
	// variable is gossipsub's package-level setting, so it is set once,
	// here, before any node starts.
	pubsub.DiscoveryPollInterval = 10 * time.Second
}

func discoveryOpts(limit int) []pubsub.DiscoverOpt {
	if limit <= 0 {
		return nil
	}
	return []pubsub.DiscoverOpt{pubsub.WithDiscoveryOpts(discovery.Limit(limit))}
}

func (n *Network) abort() {
	n.cancel()
	if n.DHT != nil {
		n.DHT.Close()
	}
	n.Host.Close()
}

// Close stops discovery, bootstrapping, gossipsub, the DHT and the host, and
// saves the peers it is connected to for the next start. It runs once.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		n.boot.saveKnownPeers()
		if n.bitswap != nil {
			errs = append(errs, n.bitswap.Close())
		}
		n.cancel()
		n.wg.Wait()
		errs = append(errs, n.DHT.Close(), n.Host.Close())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Private reports whether the swarm is protected by a pre-shared key.
func (n *Network) Private() bool { return n.cfg.PSK != nil }

// QUIC reports whether the host listens on QUIC.
func (n *Network) QUIC() bool { return n.cfg.EnableQUIC && n.cfg.PSK == nil }

// DHTLimitStats reports what the per-peer DHT limits did.
func (n *Network) DHTLimitStats() DHTLimitStats { return n.dhtGuard.stats() }

// DHTProtocol is the DHT protocol ID this node speaks.
func (n *Network) DHTProtocol() protocol.ID { return n.prefix + "/kad/1.0.0" }

// AllowList returns the peers allowed to connect (empty: everyone).
func (n *Network) AllowList() []peer.ID { return n.cfg.AllowPeers }

// Bootstrap runs one bootstrap round now and waits for it.
func (n *Network) Bootstrap(ctx context.Context) { n.boot.round(ctx) }

// PrivateDHTPrefix derives a private swarm's DHT prefix from its key, so
// swarms with different keys never speak the same DHT protocol.
func PrivateDHTPrefix(base string, psk pnet.PSK) protocol.ID {
	sum := sha256.Sum256(append([]byte("weft-dht-prefix:"), psk...))
	return protocol.ID(strings.TrimRight(base, "/") + "/private-" + hex.EncodeToString(sum[:6]))
}

func filterQUIC(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			continue
		}
		if _, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			continue
		}
		out = append(out, a)
	}
	return out
}

// ErrAddrInUse says a listen address is taken by another process.
var ErrAddrInUse = errors.New("listen address already in use")

func explainListenError(err error) error {
	if err != nil && strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%w (another daemon or program holds the port; pick another with 'weft config set addresses.swarm'): %v", ErrAddrInUse, err)
	}
	return err
}

type mdnsNotifee struct{ n *Network }

func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.Host.ID() {
		return
	}
	m.n.wg.Add(1)
	go func() {
		defer m.n.wg.Done()
		ctx, cancel := context.WithTimeout(m.n.ctx, m.n.cfg.DialTimeout)
		defer cancel()
		if err := m.n.Host.Connect(ctx, ai); err != nil {
			m.n.cfg.Logger.Debug("mdns: connect failed", "peer", ai.ID, "err", err)
		}
	}()
}

// ClearDialBackoff forgets the dial failures to p that make the swarm
// refuse to dial it for a while ("dial backoff"), for a dial the user asks
// for explicitly.
func (n *Network) ClearDialBackoff(p peer.ID) {
	if sw, ok := n.Host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}

// yamuxTransport is go-libp2p's yamux with keepalive pings and round-trip
// measurements every interval (default 2m) instead of every 30s.
func yamuxTransport(interval time.Duration) *yamux.Transport {
	if interval <= 0 {
		interval = 2 * time.Minute
	}
	cfg := *(*goyamux.Config)(yamux.DefaultTransport)
	cfg.KeepAliveInterval = interval
	cfg.MeasureRTTInterval = interval
	return (*yamux.Transport)(&cfg)
}
