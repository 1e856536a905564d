package p2p

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// knownPeersPrefix is where peers seen connected are remembered, so that a
// restarted node can find its swarm again without any bootstrap list.
var knownPeersPrefix = datastore.NewKey("/weft/p2p/known-peers")

// knownPeer is one remembered peer, stored as JSON.
type knownPeer struct {
	Addrs    []string  `json:"addrs"`
	LastSeen time.Time `json:"last_seen"`
}

// bootstrapper keeps the node connected: it dials the bootstrap list and the
// remembered peers, refreshes the DHT routing table, on a period and at once
// whenever the connection count drops below LowPeers.
type bootstrapper struct {
	n       *Network
	cfg     Config
	trigger chan struct{}
	saveMu  sync.Mutex
	saved   map[peer.ID]savedPeer // what saveKnownPeers last wrote, under saveMu
}

// savedPeer is a known-peer record as last written.
type savedPeer struct {
	addrs string
	at    time.Time
}

// knownPeerRefresh is how old a saved record of a peer that is still
// connected, at the same addresses, may grow before it is written again:
// rewriting unchanged records every minute kept the store (and its
// compaction workers) busy in an idle swarm.
const knownPeerRefresh = 10 * time.Minute

func newBootstrapper(n *Network, cfg Config) *bootstrapper {
	return &bootstrapper{n: n, cfg: cfg, trigger: make(chan struct{}, 1), saved: map[peer.ID]savedPeer{}}
}

func (b *bootstrapper) start(wg *sync.WaitGroup) {
	b.n.Host.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(net network.Network, _ network.Conn) {
			if len(net.Peers()) < b.cfg.LowPeers {
				b.kick()
			}
		},
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.loop()
	}()
}

func (b *bootstrapper) kick() {
	select {
	case b.trigger <- struct{}{}:
	default:
	}
}

func (b *bootstrapper) loop() {
	ctx := b.n.ctx
	b.round(ctx)
	tick := time.NewTicker(b.cfg.BootstrapInterval)
	defer tick.Stop()
	// Known peers are saved more often than the bootstrap round runs, so an
	// unclean stop loses at most a minute of them.
	save := time.NewTicker(time.Minute)
	defer save.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-save.C:
			b.saveKnownPeers()
			continue
		case <-tick.C:
		case <-b.trigger:
			// A flapping connection must not turn into a dial storm.
			if time.Since(last) < 2*time.Second {
				continue
			}
		}
		last = time.Now()
		b.round(ctx)
	}
}

// round dials bootstrap and remembered peers in parallel, then refreshes the
// routing table. It returns when the dials and the refresh are done.
func (b *bootstrapper) round(ctx context.Context) {
	h := b.n.Host
	targets := append([]peer.AddrInfo(nil), b.cfg.Bootstrap...)
	if len(h.Network().Peers()) < b.cfg.LowPeers {
		targets = append(targets, b.loadKnownPeers(ctx)...)
	}
	var wg sync.WaitGroup
	for _, ai := range targets {
		if ai.ID == h.ID() || h.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		wg.Add(1)
		go func(ai peer.AddrInfo) {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, b.cfg.DialTimeout)
			defer cancel()
			if err := h.Connect(dctx, ai); err != nil {
				b.cfg.Logger.Debug("bootstrap: dial failed", "peer", ai.ID, "err", err)
			}
		}(ai)
	}
	wg.Wait()
	if ctx.Err() != nil || len(h.Network().Peers()) == 0 {
		return
	}
	select {
	case err := <-b.n.DHT.RefreshRoutingTable():
		if err != nil {
			b.cfg.Logger.Debug("bootstrap: routing table refresh", "err", err)
		}
	case <-ctx.Done():
	}
}

// loadKnownPeers reads the remembered peers and puts their addresses into
// the peerstore.
func (b *bootstrapper) loadKnownPeers(ctx context.Context) []peer.AddrInfo {
	res, err := b.cfg.Datastore.Query(ctx, query.Query{Prefix: knownPeersPrefix.String()})
	if err != nil {
		b.cfg.Logger.Warn("known peers: query failed", "err", err)
		return nil
	}
	defer res.Close()
	var out []peer.AddrInfo
	for r := range res.Next() {
		if r.Error != nil {
			continue
		}
		id, err := peer.Decode(datastore.RawKey(r.Key).BaseNamespace())
		if err != nil {
			continue
		}
		var kp knownPeer
		if json.Unmarshal(r.Value, &kp) != nil {
			continue
		}
		ai := peer.AddrInfo{ID: id}
		for _, s := range kp.Addrs {
			if a, err := ma.NewMultiaddr(s); err == nil {
				ai.Addrs = append(ai.Addrs, a)
			}
		}
		if len(ai.Addrs) > 0 {
			b.n.Host.Peerstore().AddAddrs(id, ai.Addrs, peerstore.RecentlyConnectedAddrTTL)
			out = append(out, ai)
		}
	}
	return out
}

// saveKnownPeers remembers the currently connected peers (most recent first,
// at most KnownPeersLimit) and forgets the oldest beyond that. A peer whose
// record is unchanged and younger than knownPeerRefresh is not written again.
func (b *bootstrapper) saveKnownPeers() {
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := b.n.Host
	ds := b.cfg.Datastore
	now := time.Now()
	batch, err := ds.Batch(ctx)
	if err != nil {
		b.cfg.Logger.Warn("known peers: batch", "err", err)
		return
	}
	written := map[peer.ID]savedPeer{}
	for p, sp := range b.saved {
		if now.Sub(sp.at) >= knownPeerRefresh {
			delete(b.saved, p) // due again anyway; keeps the map to recent peers
		}
	}
	for _, p := range h.Network().Peers() {
		var addrs []string
		for _, c := range h.Network().ConnsToPeer(p) {
			if c.Stat().Direction == network.DirOutbound {
				addrs = append(addrs, c.RemoteMultiaddr().String())
			}
		}
		for _, a := range h.Peerstore().Addrs(p) {
			addrs = append(addrs, a.String())
		}
		addrs = dedupe(addrs)
		if len(addrs) == 0 {
			continue
		}
		key := strings.Join(addrs, " ")
		if sp, ok := b.saved[p]; ok && sp.addrs == key && now.Sub(sp.at) < knownPeerRefresh {
			continue
		}
		written[p] = savedPeer{addrs: key, at: now}
		v, _ := json.Marshal(knownPeer{Addrs: addrs, LastSeen: now})
		if err := batch.Put(ctx, knownPeersPrefix.ChildString(p.String()), v); err != nil {
			b.cfg.Logger.Warn("known peers: put", "err", err)
			return
		}
	}
	if len(written) == 0 {
		return
	}
	if err := batch.Commit(ctx); err != nil {
		b.cfg.Logger.Warn("known peers: save", "err", err)
		return
	}
	for p, sp := range written {
		b.saved[p] = sp
	}
	b.prune(ctx)
}

func (b *bootstrapper) prune(ctx context.Context) {
	res, err := b.cfg.Datastore.Query(ctx, query.Query{Prefix: knownPeersPrefix.String()})
	if err != nil {
		return
	}
	type entry struct {
		key  string
		seen time.Time
	}
	var all []entry
	for r := range res.Next() {
		if r.Error != nil {
			continue
		}
		var kp knownPeer
		_ = json.Unmarshal(r.Value, &kp)
		all = append(all, entry{r.Key, kp.LastSeen})
	}
	res.Close()
	if len(all) <= b.cfg.KnownPeersLimit {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seen.After(all[j].seen) })
	for _, e := range all[b.cfg.KnownPeersLimit:] {
		if err := b.cfg.Datastore.Delete(ctx, datastore.RawKey(e.key)); err != nil {
			b.cfg.Logger.Warn("known peers: prune", "err", fmt.Errorf("delete %s: %w", e.key, err))
		}
	}
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
