package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p-kad-dht/amino"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	xrate "github.com/libp2p/go-libp2p/x/rate"
	"golang.org/x/time/rate"
)

// Limits against floods. The resource manager (go-libp2p's rcmgr) does the
// counting: connections per address, connection attempts per address,
// connections, streams and per-peer streams in total, and per-peer streams
// of the DHT protocol. The DHT's request hook does the rest: a rate of DHT
// requests per peer, and a bound on the provider records one peer adds.

// DefaultConnLimitExempt are the prefixes Config.ConnLimitExempt defaults
// to: this machine's own main loopback addresses, which every node of a
// local swarm shares. The rest of 127.0.0.0/8 is limited like any address.
var DefaultConnLimitExempt = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.1/32"),
	netip.MustParsePrefix("::1/128"),
}

// newResourceManager builds the resource manager of cfg's limits.
func newResourceManager(cfg *Config, dhtProto protocol.ID) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	var concrete rcmgr.ConcreteLimitConfig
	if cfg.MaxMemory > 0 || cfg.MaxFDs > 0 {
		maxMem, maxFDs := cfg.MaxMemory, cfg.MaxFDs
		if maxMem <= 0 {
			maxMem = 1 << 30
		}
		if maxFDs <= 0 {
			maxFDs = 1024
		}
		concrete = limits.Scale(maxMem, maxFDs)
	} else {
		concrete = limits.AutoScale()
	}
	lv := func(n int) rcmgr.LimitVal {
		if n <= 0 {
			return rcmgr.DefaultLimit
		}
		return rcmgr.LimitVal(n)
	}
	dht := rcmgr.ResourceLimits{StreamsInbound: lv(cfg.DHTStreamsPerPeer)}
	concrete = rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			ConnsInbound:   lv(cfg.MaxInboundConns),
			StreamsInbound: lv(cfg.MaxInboundStreams),
		},
		PeerDefault:  rcmgr.ResourceLimits{StreamsInbound: lv(cfg.MaxInboundStreamsPerPeer)},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{dhtProto: dht},
	}.Build(concrete)

	// Per address: ConnsPerIP at once from one IPv4 address or IPv6 /56
	// (8 times that from a /48), and attempts from one address rate-limited
	// (a burst of twice that, then one every 5 s), as libp2p does by
	// default but with our numbers and our exemptions.
	n := cfg.ConnsPerIP
	exempt4, exempt6 := []rcmgr.NetworkPrefixLimit{}, []rcmgr.NetworkPrefixLimit{}
	var rateExempt []xrate.PrefixLimit
	for _, p := range cfg.ConnLimitExempt {
		l := rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt}
		if p.Addr().Is4() {
			exempt4 = append(exempt4, l)
		} else {
			exempt6 = append(exempt6, l)
		}
		rateExempt = append(rateExempt, xrate.PrefixLimit{Prefix: p}) // zero Limit: not limited
	}
	burst := xrate.Limit{RPS: 0.2, Burst: 2 * n}
	rl := &xrate.Limiter{
		NetworkPrefixLimits: rateExempt,
		SubnetRateLimiter: xrate.SubnetLimiter{
			IPv4SubnetLimits: []xrate.SubnetLimit{{PrefixLength: 32, Limit: burst}},
			IPv6SubnetLimits: []xrate.SubnetLimit{
				{PrefixLength: 56, Limit: burst},
				{PrefixLength: 48, Limit: xrate.Limit{RPS: 0.5, Burst: 10 * n}},
			},
			GracePeriod: time.Minute,
		},
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: n}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: n}, {PrefixLength: 48, ConnCount: 8 * n}},
		),
		rcmgr.WithNetworkPrefixLimit(exempt4, exempt6),
		rcmgr.WithConnRateLimiters(rl),
		// Its metrics go to Prometheus' default registry, which weft does
		// not serve (node/metrics.go has its own); they cost a formatted
		// trace event per scope change, 3% of a simulated swarm's CPU.
		rcmgr.WithMetricsDisabled(),
	)
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	return rm, nil
}

// DHTLimitStats counts what the DHT's per-peer limits did.
type DHTLimitStats struct {
	Requests         int64 // requests let through
	Delayed          int64 // of those, requests that waited for their peer's rate
	Dropped          int64 // requests dropped (and their streams reset): the peer was too far over its rate
	ProviderRecords  int64 // provider records accepted
	ProvidersRefused int64 // ADD_PROVIDER requests refused: the peer had used its record budget
}

// dhtGuard limits each peer's DHT requests to a rate (a storm on one
// stream waits, and past maxWait is dropped) and the provider records it
// adds to a budget that refills over the records' lifetime, so one peer
// cannot make this node spend a core answering it or fill the store with
// provider records. It runs as the DHT's OnRequestHook.
type dhtGuard struct {
	reqRate  rate.Limit
	reqBurst int
	provRate rate.Limit
	provMax  int
	maxWait  time.Duration
	log      *slog.Logger

	mu    sync.Mutex
	peers map[peer.ID]*dhtBudget

	requests, delayed, dropped, records, refused atomic.Int64
}

type dhtBudget struct {
	req, prov *rate.Limiter
	seen      time.Time
	warned    atomic.Bool // the peer's first refusal was logged
}

// dhtGuardPeers is how many peers' budgets are kept before the idle ones
// are forgotten; dhtGuardIdle how long a peer must have been silent to be.
const (
	dhtGuardPeers = 4096
	dhtGuardIdle  = 10 * time.Minute
)

func newDHTGuard(requestsPerSec, providerRecords int, log *slog.Logger) *dhtGuard {
	return &dhtGuard{
		reqRate:  rate.Limit(requestsPerSec),
		reqBurst: 10 * requestsPerSec,
		provRate: rate.Limit(float64(providerRecords) / amino.DefaultProvideValidity.Seconds()),
		provMax:  providerRecords,
		maxWait:  5 * time.Second,
		log:      log,
		peers:    make(map[peer.ID]*dhtBudget),
	}
}

func (g *dhtGuard) budget(p peer.ID) *dhtBudget {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	b := g.peers[p]
	if b == nil {
		if len(g.peers) >= dhtGuardPeers {
			for q, o := range g.peers {
				if now.Sub(o.seen) > dhtGuardIdle {
					delete(g.peers, q)
				}
			}
		}
		b = &dhtBudget{req: rate.NewLimiter(g.reqRate, g.reqBurst), prov: rate.NewLimiter(g.provRate, g.provMax)}
		g.peers[p] = b
	}
	b.seen = now
	return b
}

// hook is the DHT's OnRequestHook: it runs before each request is
// handled, on the stream's own goroutine, so waiting here slows that
// stream's requests down. A request it refuses is turned into one of a
// type no handler takes: the DHT then drops it and resets the stream, and
// does none of its work. (The DHT offers no other way to refuse a request,
// and takes no provider store of ours.)
func (g *dhtGuard) hook(ctx context.Context, s network.Stream, req *pb.Message) {
	p := s.Conn().RemotePeer()
	b := g.budget(p)
	refuse := func(why string) {
		req.Type = pb.Message_MessageType(-1)
		if !b.warned.Swap(true) {
			g.log.Info("dht: refusing a peer's requests past its limit (logged once per peer)", "peer", p, "limit", why)
		}
	}
	r := b.req.Reserve()
	switch d := r.Delay(); {
	case !r.OK() || d > g.maxWait:
		r.Cancel()
		g.dropped.Add(1)
		refuse("dht.requests_per_peer")
		return
	case d > 0:
		g.delayed.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			req.Type = pb.Message_MessageType(-1) // shutting down
			return
		}
	}
	if req.GetType() == pb.Message_ADD_PROVIDER {
		if !b.prov.Allow() {
			g.refused.Add(1)
			refuse("dht.provider_records_per_peer")
			return
		}
		g.records.Add(1)
	}
	g.requests.Add(1)
}

func (g *dhtGuard) stats() DHTLimitStats {
	return DHTLimitStats{
		Requests: g.requests.Load(), Delayed: g.delayed.Load(), Dropped: g.dropped.Load(),
		ProviderRecords: g.records.Load(), ProvidersRefused: g.refused.Load(),
	}
}
