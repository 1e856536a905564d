package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/p2p"
)

func (n *Node) handleID(w http.ResponseWriter, r *http.Request) (any, error) {
	h := n.net.Host
	pk, err := crypto.MarshalPublicKey(h.Peerstore().PubKey(h.ID()))
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	var protos []string
	for _, p := range h.Mux().Protocols() {
		protos = append(protos, string(p))
	}
	sort.Strings(protos)
	return api.ID{
		ID:        h.ID().String(),
		PublicKey: crypto.ConfigEncodeKey(pk),
		Addrs:     n.fullAddrs(),
		Agent:     "weft/" + Version,
		Protocols: protos,
	}, nil
}

// fullAddrs are the listen addresses with /p2p/ID appended, ready to dial.
func (n *Node) fullAddrs() []string {
	h := n.net.Host
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.String()+"/p2p/"+h.ID().String())
	}
	return out
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	h := n.net.Host
	// Report the transports the host actually listens on.
	transports := []string{"tcp"}
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			transports = append(transports, "quic-v1")
			break
		}
	}
	note := ""
	if n.net.Private() {
		note = "private swarm: TCP only (libp2p refuses a pre-shared key on QUIC)"
	}
	st := n.store.Stat()
	// The DHT answers queries (server mode) exactly when it has registered
	// its protocol handler; Mode() only reports the configured option.
	mode := "client"
	if slices.Contains(h.Mux().Protocols(), n.net.DHTProtocol()) {
		mode = "server"
	}
	return api.Status{
		ID:            h.ID().String(),
		Version:       Version,
		Started:       n.started,
		UptimeSeconds: time.Since(n.started).Seconds(),
		Profile:       n.cfg.Profile,
		Private:       n.net.Private(),
		Transports:    transports,
		TransportNote: note,
		AllowPeers:    len(n.net.AllowList()),
		Addrs:         n.fullAddrs(),
		Peers:         len(h.Network().Peers()),
		DHT: api.DHTStatus{
			Mode:         mode,
			Protocol:     string(n.net.DHTProtocol()),
			RoutingTable: n.net.DHT.RoutingTable().Size(),
		},
		Store: api.StoreStat{Blocks: st.Blocks, Bytes: st.BlockBytes, DiskBytes: st.DiskBytes, MaxBytes: int64(n.cfg.Store.MaxBytes)},
		NAT:   n.natStatus(),
	}, nil
}

func (n *Node) handlePeers(w http.ResponseWriter, r *http.Request) (any, error) {
	h := n.net.Host
	out := []api.Peer{}
	for _, p := range h.Network().Peers() {
		conns := h.Network().ConnsToPeer(p)
		if len(conns) == 0 {
			continue
		}
		// Show the best connection: a direct one if there is one.
		c := conns[0]
		streams, direct := 0, false
		for _, cc := range conns {
			streams += len(cc.GetStreams())
			if !p2p.DescribeConn(cc).Relayed {
				direct = true
				if p2p.DescribeConn(c).Relayed {
					c = cc
				}
			}
		}
		ci := p2p.DescribeConn(c)
		dir := "inbound"
		if c.Stat().Direction == network.DirOutbound {
			dir = "outbound"
		}
		var protos []string
		if ps, err := h.Peerstore().GetProtocols(p); err == nil {
			for _, pr := range ps {
				protos = append(protos, string(pr))
			}
			sort.Strings(protos)
		}
		agent, _ := h.Peerstore().Get(p, "AgentVersion")
		as, _ := agent.(string)
		out = append(out, api.Peer{
			ID:        p.String(),
			Addr:      c.RemoteMultiaddr().String(),
			Direction: dir,
			LatencyMS: float64(h.Peerstore().LatencyEWMA(p).Microseconds()) / 1000,
			Streams:   streams,
			Protocols: protos,
			Agent:     as,
			Transport: ci.Transport,
			Relayed:   ci.Relayed,
			Limited:   ci.Limited,
			Conns:     len(conns),
			Direct:    direct,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (n *Node) handleConnect(w http.ResponseWriter, r *http.Request) (any, error) {
	var req api.ConnectRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	ai, err := peer.AddrInfoFromString(req.Addr)
	if err != nil {
		return nil, badRequest("bad multiaddr %q (want e.g. /ip4/127.0.0.1/tcp/4101/p2p/12D3Koo...): %v", clip(req.Addr), err)
	}
	if ai.ID == n.net.Host.ID() {
		return nil, badRequest("%s is this node", ai.ID)
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.Swarm.DialTimeout.D())
	defer cancel()
	// The user asks for this dial now: a dial that failed a moment ago
	// (a redial racing a disconnect, a peer that was restarting) must not
	// refuse it with "dial backoff".
	n.net.ClearDialBackoff(ai.ID)
	if !slices.ContainsFunc(ai.Addrs, isRelayAddr) {
		ctx = network.WithForceDirectDial(ctx, "weft connect") // also skips the backoff
	}
	if err := n.net.Host.Connect(ctx, *ai); err != nil {
		return nil, &httpError{http.StatusBadGateway, fmt.Errorf("connect to %s: %w", ai.ID, err)}
	}
	return api.ConnectResult{ID: ai.ID.String()}, nil
}

// isRelayAddr says a reaches the peer through a relay (a direct dial
// would drop it).
func isRelayAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func parsePeer(s string) (peer.ID, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "/") {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return "", badRequest("bad peer %q: %v", clip(s), err)
		}
		return ai.ID, nil
	}
	id, err := peer.Decode(s)
	if err != nil {
		return "", badRequest("bad peer ID %q: %v", clip(s), err)
	}
	return id, nil
}

func (n *Node) handleDisconnect(w http.ResponseWriter, r *http.Request) (any, error) {
	var req api.DisconnectRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	id, err := parsePeer(req.Peer)
	if err != nil {
		return nil, err
	}
	if n.net.Host.Network().Connectedness(id) != network.Connected {
		return nil, notFound("not connected to %s", id)
	}
	if err := n.net.Host.Network().ClosePeer(id); err != nil {
		return nil, fmt.Errorf("disconnect %s: %w", id, err)
	}
	return nil, nil
}

func (n *Node) handleFindPeer(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := parsePeer(r.URL.Query().Get("peer"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	ai, err := n.net.DHT.FindPeer(ctx, id)
	if errors.Is(err, routing.ErrNotFound) {
		// A lookup can lose a race with a connection to the target that is
		// closing as it dials; one more walk settles it.
		ai, err = n.net.DHT.FindPeer(ctx, id)
	}
	n.metrics.observeDHT("find_peer", start, err)
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) {
			return nil, notFound("peer %s not found in the DHT", id)
		}
		return nil, fmt.Errorf("find peer %s: %w", id, err)
	}
	return api.PeerInfo{ID: ai.ID.String(), Addrs: addrStrings(ai.Addrs)}, nil
}

// handleDHTLookup runs one DHT lookup and says how it went: found or
// not, in how many hops, after querying how many peers, how long.
func (n *Node) handleDHTLookup(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	kind, key := q.Get("kind"), q.Get("key")
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	out := api.DHTLookup{Kind: kind, Key: key}
	var l p2p.Lookup
	start := time.Now()
	switch kind {
	case "find-peer":
		id, err := parsePeer(key)
		if err != nil {
			return nil, err
		}
		l, err = n.net.FindPeerMeasured(ctx, id)
		n.metrics.observeDHT("find_peer", start, err)
		if err != nil {
			return nil, err
		}
	case "find-providers":
		c, err := cid.Decode(key)
		if err != nil {
			return nil, badRequest("bad CID %q: %v", key, err)
		}
		l, out.Providers, err = n.net.FindProvidersMeasured(ctx, c)
		n.metrics.observeDHT("find_providers", start, err)
		if err != nil {
			return nil, err
		}
	default:
		return nil, badRequest("kind %q: want find-peer or find-providers", kind)
	}
	out.Found, out.Local, out.Hops, out.Queried, out.Seconds = l.Found, l.Local, l.Hops, l.Queried, l.Took.Seconds()
	return out, nil
}

func (n *Node) handleRoutingTable(w http.ResponseWriter, r *http.Request) (any, error) {
	rt := n.net.DHT.RoutingTable()
	self := kb.ConvertPeerID(n.net.Host.ID())
	out := api.RoutingTable{Size: rt.Size(), Peers: []api.RoutingTableEntry{}}
	for _, p := range rt.ListPeers() {
		out.Peers = append(out.Peers, api.RoutingTableEntry{
			ID:        p.String(),
			Bucket:    kb.CommonPrefixLen(self, kb.ConvertPeerID(p)),
			Connected: n.net.Host.Network().Connectedness(p) == network.Connected,
		})
	}
	sort.Slice(out.Peers, func(i, j int) bool {
		if out.Peers[i].Bucket != out.Peers[j].Bucket {
			return out.Peers[i].Bucket < out.Peers[j].Bucket
		}
		return out.Peers[i].ID < out.Peers[j].ID
	})
	return out, nil
}

func (n *Node) handleShutdown(w http.ResponseWriter, r *http.Request) (any, error) {
	n.requestShutdown()
	return nil, nil
}
