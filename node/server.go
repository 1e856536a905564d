package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/ui"
	"github.com/weft-p2p/weft/p2p"
)

// httpError is an error with the HTTP status it should be answered with.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Errorf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Errorf(format, args...)}
}

// handlerFunc is an API handler that returns a value to encode as JSON, or
// an error to answer with.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h handlerFunc) {
		mux.Handle(pattern, n.jsonHandler(h))
	}
	route("GET /api/v1/id", n.handleID)
	route("GET /api/v1/status", n.handleStatus)
	route("GET /api/v1/peers", n.handlePeers)
	route("POST /api/v1/connect", n.handleConnect)
	route("POST /api/v1/disconnect", n.handleDisconnect)
	route("GET /api/v1/dht/find-peer", n.handleFindPeer)
	route("GET /api/v1/dht/table", n.handleRoutingTable)
	route("POST /api/v1/shutdown", n.handleShutdown)
	n.contentRoutes(route, mux)
	n.pubsubRoutes(route, mux)
	n.collectionRoutes(route, mux)
	n.feedRoutes(route)
	n.partitionRoutes(route)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	top := http.NewServeMux()
	top.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	top.HandleFunc("GET /readyz", n.handleReadyz)
	n.metrics = newMetrics(n)
	top.Handle("GET /metrics", n.authMiddleware(n.metrics.handler()))
	if n.cfg.Debug.Pprof {
		top.Handle("/debug/pprof/", n.authMiddleware(http.HandlerFunc(pprof.Index)))
		top.Handle("/debug/pprof/cmdline", n.authMiddleware(http.HandlerFunc(pprof.Cmdline)))
		top.Handle("/debug/pprof/profile", n.authMiddleware(http.HandlerFunc(pprof.Profile)))
		top.Handle("/debug/pprof/symbol", n.authMiddleware(http.HandlerFunc(pprof.Symbol)))
		top.Handle("/debug/pprof/trace", n.authMiddleware(http.HandlerFunc(pprof.Trace)))
	}
	top.Handle(ui.Prefix, ui.Handler()) // static files only; the page reads the API with the token
	top.Handle("/", n.readyGate(n.authMiddleware(mux)))
	return top
}

// readyGate answers 503 until the node has started every part.
func (n *Node) readyGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.ready.Load() {
			writeError(w, &httpError{http.StatusServiceUnavailable, errors.New("daemon is starting; try again shortly")})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleReadyz is the readiness probe: 200 once the store is open, the host
// listens, and (when bootstrap peers are configured) at least one peer is
// connected; 503 with the reasons otherwise.
func (n *Node) handleReadyz(w http.ResponseWriter, r *http.Request) {
	var why []string
	if !n.ready.Load() {
		why = append(why, "starting")
	} else {
		if len(n.net.Host.Addrs()) == 0 {
			why = append(why, "host not listening")
		}
		if len(n.cfg.Bootstrap) > 0 && len(n.net.Host.Network().Peers()) == 0 {
			why = append(why, "no peers yet (bootstrap peers are configured)")
		}
	}
	if len(why) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reasons": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// authMiddleware requires the bearer token when the API listens on a
// non-loopback address. On loopback the token is accepted but not needed.
func (n *Node) authMiddleware(next http.Handler) http.Handler {
	host, _, _ := net.SplitHostPort(n.apiAddr)
	need := !isLoopbackHost(host)
	want := []byte("Bearer " + n.repo.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if need && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, &httpError{http.StatusUnauthorized, errors.New("missing or wrong API token: send 'Authorization: Bearer TOKEN' (the token is in REPO/api.token)")})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (n *Node) jsonHandler(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		if v == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, routing.ErrNotFound):
		code = http.StatusNotFound
	}
	writeJSON(w, code, api.Error{Error: err.Error()})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("bad JSON body: %v", err)
	}
	return nil
}

// withBody is a handler that decodes the JSON request body into a T first.
func withBody[T any](fn func(r *http.Request, req T) (any, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		var req T
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		return fn(r, req)
	}
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

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
		return nil, badRequest("bad multiaddr %q (want e.g. /ip4/127.0.0.1/tcp/4101/p2p/12D3Koo...): %v", req.Addr, err)
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
			return "", badRequest("bad peer %q: %v", s, err)
		}
		return ai.ID, nil
	}
	id, err := peer.Decode(s)
	if err != nil {
		return "", badRequest("bad peer ID %q: %v", s, err)
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
