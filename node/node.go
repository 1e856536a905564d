package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ipfs/boxo/ipns"

	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/store"
)

// Version is the daemon's version string, reported by the API.
var Version = "0.1.0-dev"

// Options adjust a node beyond its config file; the zero value is what the
// daemon uses.
type Options struct {
	// Logger receives the node's logs (default: built from config.log).
	Logger *slog.Logger
	// Tune, if set, may change the loaded config before the node starts
	// (tests use it for short intervals).
	Tune func(*Config)
	// The simulator (node/testnet, --mode sim) runs many nodes in one
	// process with these; the daemon leaves them zero.
	// APIListener, if set, is where the API is served instead of a TCP
	// listener on addresses.api; the node closes it.
	APIListener net.Listener
	// Store, if set, is the open store the node uses instead of the
	// repo's; the node leaves it open on Close (a simulated node keeps its
	// in-memory store across restarts).
	Store *store.Store
	// TuneP2P, if set, may change the network config before it starts
	// (the simulator's transports, connection and DHT limits).
	TuneP2P func(*p2p.Config)
	// OwnsProcess says this node is alone in its process (the daemon): it
	// then tunes the Go runtime for itself (config [runtime]).
	OwnsProcess bool
}

// Node is a running weft daemon.
type Node struct {
	trimCancel context.CancelFunc // stops the memory trimmer (OwnsProcess)
	memTrims   atomic.Int64       // times the trimmer gave memory back

	repo    *Repo
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	net     *p2p.Network
	content *content
	colls   *collections
	feeds   *feeds
	native  *native
	metrics *metrics
	tracing *tracing
	started time.Time

	// storeBorrowed: the store came from Options.Store; Close leaves it open.
	storeBorrowed bool

	apiLn   net.Listener
	apiSrv  *http.Server
	apiAddr string
	// apiCancel ends every request's context when the node closes, so
	// long handlers (exports, walks, streams) return and Shutdown does not
	// wait out its timeout on them.
	apiCancel context.CancelFunc
	guard     *guard         // the API's browser and token rules (api_guard.go)
	gateway   *gatewayServer // nil when addresses.gateway is off

	ready        atomic.Bool
	shutdown     chan struct{}
	shutdownOnce sync.Once
	closeOnce    sync.Once
	closeErr     error
	wg           sync.WaitGroup
}

// Start opens the repo at dir, starts the store, network and API, and writes
// REPO/api once the API answers. On error everything opened is closed again.
func Start(ctx context.Context, dir string, opts Options) (*Node, error) {
	repo, err := OpenRepo(dir)
	if err != nil {
		return nil, err
	}
	n, err := start(ctx, repo, opts)
	if err != nil {
		repo.Close()
		return nil, err
	}
	return n, nil
}

func start(ctx context.Context, repo *Repo, opts Options) (_ *Node, err error) {
	cfg := repo.Config
	if opts.Tune != nil {
		opts.Tune(&cfg)
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("invalid tuned config: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = NewLogger(os.Stderr, cfg.Log)
	}
	n := &Node{repo: repo, cfg: cfg, log: log, started: time.Now(), shutdown: make(chan struct{})}
	defer func() {
		if err != nil {
			n.closeParts()
		}
	}()

	ts, err := ResolveTracing(cfg.Tracing, repo.Path, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if n.tracing, err = startTracing(ctx, ts, cfg.PeerID); err != nil {
		return nil, err
	}

	// Bind the API first: a taken port is the commonest start-up failure and
	// should be reported before the slower parts start.
	n.apiLn = opts.APIListener
	if n.apiLn == nil {
		n.apiLn, err = net.Listen("tcp", cfg.Addresses.API)
	}
	if err != nil {
		return nil, fmt.Errorf("listen for API on %s: %w (is another daemon running? pick another port with 'weft config set addresses.api HOST:PORT')", cfg.Addresses.API, err)
	}
	n.apiAddr = n.apiLn.Addr().String()
	// The API answers from here on: /healthz at once, /readyz with 503 and
	// everything else with 503 until the node is ready.
	n.apiSrv = &http.Server{Handler: n.apiHandler(), ReadHeaderTimeout: 10 * time.Second}
	apiCtx, apiCancel := context.WithCancel(context.Background())
	n.apiCancel = apiCancel
	n.apiSrv.BaseContext = func(net.Listener) context.Context { return apiCtx }
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.apiSrv.Serve(n.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("API server stopped", "err", err)
		}
	}()

	scfg := store.Config{
		Path:          filepath.Join(repo.Path, StoreDir),
		MaxBytes:      int64(cfg.Store.MaxBytes),
		BufferedFiles: cfg.Store.BufferedFiles,
		SyncFileIO:    cfg.Store.SyncFileIO,
		// Small value-log files: a running daemon cannot give back the file
		// Badger is writing, so this bounds what a GC leaves on disk.
		ValueLogFileSize: 16 << 20,
		Logger:           log.With("subsystem", "store"),
	}
	if opts.Store != nil {
		n.store, n.storeBorrowed = opts.Store, true
	} else if n.store, err = store.Open(scfg); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	pcfg, err := n.p2pConfig()
	if err != nil {
		return nil, err
	}
	if opts.TuneP2P != nil {
		opts.TuneP2P(&pcfg)
	}
	n.net, err = p2p.New(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	n.content = newContent(n)
	if n.native, err = newNative(n); err != nil {
		return nil, err
	}
	n.colls = startCollections(ctx, n)
	if n.feeds, err = newFeeds(n); err != nil {
		return nil, err
	}
	if err := n.startGateway(); err != nil {
		return nil, err
	}
	if opts.OwnsProcess && cfg.Runtime.MemoryTrimInterval > 0 {
		tctx, cancel := context.WithCancel(context.Background())
		n.trimCancel = cancel
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.trimMemory(tctx, cfg.Runtime.MemoryTrimInterval.D(), func() { n.memTrims.Add(1) })
		}()
	}
	n.ready.Store(true)
	if err := writeFileAtomic(filepath.Join(repo.Path, APIFile), []byte(n.apiAddr+"\n"), 0o644); err != nil {
		return nil, err
	}
	n.log.Info("weft daemon ready", "peer", n.net.Host.ID(), "api", n.apiAddr, "gateway", n.GatewayAddr(), "addrs", n.net.Host.Addrs(), "private", n.net.Private())
	return n, nil
}

func (n *Node) p2pConfig() (p2p.Config, error) {
	cfg := n.cfg
	listen, err := parseAddrs(cfg.Addresses.Swarm)
	if err != nil {
		return p2p.Config{}, err
	}
	var boot []peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return p2p.Config{}, fmt.Errorf("bootstrap address %q: %w", s, err)
		}
		boot = append(boot, *ai)
	}
	var allow []peer.ID
	for _, s := range cfg.Swarm.AllowPeers {
		id, err := peer.Decode(s)
		if err != nil {
			return p2p.Config{}, fmt.Errorf("swarm.allow_peers %q: %w", s, err)
		}
		allow = append(allow, id)
	}
	exempt, err := connLimitExempt(cfg.Swarm.ConnLimitExempt)
	if err != nil {
		return p2p.Config{}, err
	}
	pc := p2p.Config{
		Identity:                  n.repo.Identity,
		ListenAddrs:               listen,
		PSK:                       n.repo.SwarmKey,
		AllowPeers:                allow,
		Bootstrap:                 boot,
		BootstrapInterval:         cfg.DHT.BootstrapInterval.D(),
		LowPeers:                  lowPeers(cfg.DHT.LowPeers),
		DHTMode:                   cfg.DHT.Mode,
		DHTPrefix:                 cfg.DHT.ProtocolPrefix,
		ConnMgrLow:                cfg.Swarm.ConnMgrLow,
		ConnMgrHigh:               cfg.Swarm.ConnMgrHigh,
		ConnMgrGrace:              cfg.Swarm.ConnMgrGrace.D(),
		MaxMemory:                 int64(cfg.Swarm.MaxMemory),
		MaxFDs:                    cfg.Swarm.MaxFDs,
		EnableQUIC:                cfg.Swarm.EnableQUIC,
		DialTimeout:               cfg.Swarm.DialTimeout.D(),
		MDNS:                      cfg.Discovery.MDNS,
		PubsubMaxMessageSize:      int(cfg.Pubsub.MaxMessageSize),
		Datastore:                 n.store.Datastore(),
		KnownPeersLimit:           cfg.Swarm.KnownPeersLimit,
		ConnsPerIP:                cfg.Swarm.ConnsPerIP,
		ConnLimitExempt:           exempt,
		MaxInboundConns:           cfg.Swarm.MaxInboundConns,
		MaxInboundStreams:         cfg.Swarm.MaxInboundStreams,
		DHTStreamsPerPeer:         cfg.DHT.StreamsPerPeer,
		DHTRequestsPerPeer:        cfg.DHT.RequestsPerPeer,
		MaxInboundStreamsPerPeer:  cfg.Swarm.MaxInboundStreamsPerPeer,
		DHTProviderRecordsPerPeer: cfg.DHT.ProviderRecordsPerPeer,
		Logger:                    n.log.With("subsystem", "p2p"),
		Rendezvous:                feedRendezvous,
	}
	pc.Score = p2p.ScoreConfig{
		DecayInterval:       cfg.Pubsub.ScoreDecayInterval.D(),
		InvalidMessageDecay: cfg.Pubsub.InvalidMessageDecay.D(),
		CheckInterval:       cfg.Pubsub.ScoreCheckInterval.D(),
		BanDuration:         cfg.Pubsub.GraylistBan.D(),
	}
	pc.DHTExtraOptions = dhtValidators()
	if pc.NAT, err = natConfig(cfg); err != nil {
		return p2p.Config{}, err
	}
	return pc, nil
}

// lowPeers maps dht.low_peers onto p2p.Config.LowPeers: 0 turns the
// immediate redial off (p2p's "never" is negative; its 0 is a default).
func lowPeers(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// connLimitExempt parses swarm.conn_limit_exempt. The key absent (a
// config written before it existed) gives nil, p2p's default; an empty list
// gives an empty one, no exemptions.
func connLimitExempt(list []string) ([]netip.Prefix, error) {
	if list == nil {
		return nil, nil
	}
	out := []netip.Prefix{}
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("swarm.conn_limit_exempt %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// dhtValidators gives the DHT the record validators of the IPFS DHT: public
// keys and IPNS records.
func dhtValidators() []dht.Option {
	return []dht.Option{
		dht.Validator(record.NamespacedValidator{
			"pk":   record.PublicKeyValidator{},
			"ipns": ipns.Validator{},
		}),
	}
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.net.Host.ID() }

// APIAddr is the address the HTTP API listens on.
func (n *Node) APIAddr() string { return n.apiAddr }

// Token is the API bearer token.
func (n *Node) Token() string { return n.repo.Token }

// Network is the node's libp2p layer.
func (n *Node) Network() *p2p.Network { return n.net }

// Store is the node's store.
func (n *Node) Store() *store.Store { return n.store }

// Config is the configuration the node runs with.
func (n *Node) Config() Config { return n.cfg }

// Repo is the node's repo.
func (n *Node) Repo() *Repo { return n.repo }

// ShutdownRequested is closed when a client asks the daemon to stop.
func (n *Node) ShutdownRequested() <-chan struct{} { return n.shutdown }

func (n *Node) requestShutdown() {
	n.shutdownOnce.Do(func() { close(n.shutdown) })
}

// Close stops the API, the network and the store, in that order, and
// releases the repo. It runs once; later calls return the first result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closeErr = n.closeParts()
		if err := n.repo.Close(); err != nil {
			n.closeErr = errors.Join(n.closeErr, err)
		}
	})
	return n.closeErr
}

func (n *Node) closeParts() error {
	var errs []error
	os.Remove(filepath.Join(n.repo.Path, APIFile))
	if n.apiSrv != nil {
		n.apiCancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.apiSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop API: %w", err))
			n.apiSrv.Close()
		}
		cancel()
	} else if n.apiLn != nil {
		n.apiLn.Close()
	}
	if err := n.stopGateway(); err != nil {
		errs = append(errs, err)
	}
	if n.trimCancel != nil {
		n.trimCancel()
	}
	n.wg.Wait()
	if n.colls != nil {
		n.colls.close()
	}
	if n.feeds != nil {
		n.feeds.close()
	}
	if n.native != nil {
		n.native.close()
	}
	if n.content != nil {
		n.content.close()
	}
	if n.net != nil {
		if err := n.net.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop network: %w", err))
		}
	}
	if n.store != nil && !n.storeBorrowed {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
	}
	// A collector that is down must not fail the shutdown: its spans are
	// lost, and the log says so.
	if err := n.tracing.close(); err != nil {
		n.log.Warn("tracing: spans not flushed", "err", err)
	}
	return errors.Join(errs...)
}
