package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/namesys"
	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-p2p/weft/protocol/feed"
)

// The HTTP gateway (addresses.gateway) is boxo's path gateway over the
// node's blocks: /ipfs/CID[/path] and /ipns/NAME[/path], deserialized
// (files, directory listings, byte ranges) and trustless
// (?format=car|raw|ipns-record, or the Accept header). Missing blocks are
// fetched from the swarm over Bitswap, which checks every block against its
// CID. /ipns/ names resolve through the feed logic: the record held for a
// followed name, else a catch-up from peers and the DHT. DNSLink and
// subdomain gateways are not offered (a gateway that resolves DNS names
// would have to reach DNS servers).
//
// Browser safety: the gateway only reads, so it takes no token, but it
// answers only GET, HEAD and OPTIONS, and only to a Host naming its own
// address (loopback IPs, localhost), so a page that rebinds its DNS name to
// 127.0.0.1 cannot make it its own origin (the API's rule, api_guard.go).

// gatewayOff reports whether addresses.gateway turns the gateway off.
func gatewayOff(addr string) bool { return addr == "" || strings.EqualFold(addr, "off") }

// gatewayServer is the running gateway.
type gatewayServer struct {
	ln   net.Listener
	srv  *http.Server
	addr string
}

// gatewayMetrics count gateway responses (boxo adds its own ipfs_http_*
// metrics to the same registry).
type gatewayMetrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newGatewayMetrics(reg prometheus.Registerer) *gatewayMetrics {
	m := &gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_gateway_requests_total",
			Help: "HTTP gateway responses, by status code and response format (file, car, raw, ipns-record, tar, ...).",
		}, []string{"status", "format"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_gateway_response_bytes_total",
			Help: "Body bytes the HTTP gateway sent, by response format.",
		}, []string{"format"}),
	}
	reg.MustRegister(m.requests, m.bytes)
	return m
}

// startGateway listens on addresses.gateway and serves the gateway, unless
// it is off.
func (n *Node) startGateway() error {
	addr := n.cfg.Addresses.Gateway
	if gatewayOff(addr) {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for the gateway on %s: %w (pick another with 'weft config set addresses.gateway HOST:PORT', or turn it off with 'off')", addr, err)
	}
	h, err := n.gatewayHandler(ln.Addr().String())
	if err != nil {
		ln.Close()
		return err
	}
	gs := &gatewayServer{ln: ln, addr: ln.Addr().String(),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	gs.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	gs.srv.RegisterOnShutdown(cancel)
	n.gateway = gs
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer cancel()
		if err := gs.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("gateway stopped", "err", err)
		}
	}()
	return nil
}

// stopGateway ends the gateway's requests and closes its listener.
func (n *Node) stopGateway() error {
	if n.gateway == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.gateway.srv.Shutdown(ctx); err != nil {
		n.gateway.srv.Close()
		return fmt.Errorf("stop gateway: %w", err)
	}
	return nil
}

// GatewayAddr is the address the HTTP gateway listens on ("" when off).
func (n *Node) GatewayAddr() string {
	if n.gateway == nil {
		return ""
	}
	return n.gateway.addr
}

func (n *Node) gatewayHandler(addr string) (http.Handler, error) {
	reg := prometheus.Registerer(prometheus.NewRegistry())
	if n.metrics != nil {
		reg = n.metrics.reg
	}
	backend, err := gateway.NewBlocksBackend(n.content.bserv,
		gateway.WithNameSystem(feedNames{n}),
		gateway.WithValueStore(feedRecords{n}),
		gateway.WithPrometheusRegistry(reg))
	if err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	gw := gateway.NewHandler(gateway.Config{
		DeserializedResponses: true,
		NoDNSLink:             true,
		RetrievalTimeout:      n.cfg.Content.FetchTimeout.D(),
		MetricsRegistry:       reg,
	}, backend)
	mux := http.NewServeMux()
	mux.Handle("/ipfs/", gw)
	mux.Handle("/ipns/", gw)
	g := newGuard(addr, nil, "")
	m := newGatewayMetrics(reg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		format := gatewayFormat(r)
		defer func() {
			m.requests.WithLabelValues(strconv.Itoa(cw.status()), format).Inc()
			m.bytes.WithLabelValues(format).Add(float64(cw.n))
		}()
		if !g.hostAllowed(r.Host) {
			http.Error(cw, fmt.Sprintf("refused: Host %q is not an address of this gateway (a page that rebinds its name to 127.0.0.1 sends its own name); use 127.0.0.1:%s", clip(r.Host), g.port), http.StatusForbidden)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			cw.Header().Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(cw, "the gateway is read-only: GET, HEAD and OPTIONS only", http.StatusMethodNotAllowed)
			return
		}
		mux.ServeHTTP(cw, r)
	}), nil
}

// gatewayFormat names the response format a request asks for, for metrics.
func gatewayFormat(r *http.Request) string {
	if f := r.URL.Query().Get("format"); f != "" {
		switch f {
		case "car", "raw", "ipns-record", "tar", "dag-json", "dag-cbor", "json", "cbor":
			return f
		}
		return "other"
	}
	accept := r.Header.Get("Accept")
	for _, f := range []struct{ media, name string }{
		{"application/vnd.ipld.car", "car"},
		{"application/vnd.ipld.raw", "raw"},
		{"application/vnd.ipfs.ipns-record", "ipns-record"},
		{"application/x-tar", "tar"},
		{"application/vnd.ipld.dag-json", "dag-json"},
		{"application/vnd.ipld.dag-cbor", "dag-cbor"},
	} {
		if strings.Contains(accept, f.media) {
			return f.name
		}
	}
	return "file"
}

// countingWriter records a response's status and body size.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// feedNames resolves /ipns/ paths for the gateway through the feed logic.
type feedNames struct{ n *Node }

var _ namesys.NameSystem = feedNames{}

func (f feedNames) Resolve(ctx context.Context, p path.Path, _ ...namesys.ResolveOption) (namesys.Result, error) {
	if p.Namespace() != path.IPNSNamespace {
		return namesys.Result{}, fmt.Errorf("%w: %s is not an /ipns/ path", namesys.ErrResolveFailed, p)
	}
	segs := p.Segments()
	name, err := ipns.NameFromString(segs[1])
	if err != nil {
		return namesys.Result{}, gateway.NewErrorStatusCode(fmt.Errorf("%w: %q is not an IPNS key name (DNSLink is not supported)", namesys.ErrResolveFailed, clip(segs[1])), http.StatusNotImplemented)
	}
	rec, err := f.n.feeds.m.Resolve(ctx, name)
	if err != nil {
		if errors.Is(err, feed.ErrNotFound) {
			return namesys.Result{}, gateway.NewErrorStatusCode(fmt.Errorf("%w: %w", namesys.ErrResolveFailed, err), http.StatusNotFound)
		}
		return namesys.Result{}, fmt.Errorf("%w: %w", namesys.ErrResolveFailed, err)
	}
	out, err := path.Join(rec.Value, segs[2:]...)
	if err != nil {
		return namesys.Result{}, fmt.Errorf("%w: %w", namesys.ErrResolveFailed, err)
	}
	return namesys.Result{Path: out, TTL: rec.TTL}, nil
}

func (f feedNames) ResolveAsync(ctx context.Context, p path.Path, opts ...namesys.ResolveOption) <-chan namesys.AsyncResult {
	out := make(chan namesys.AsyncResult, 1)
	res, err := f.Resolve(ctx, p, opts...)
	out <- namesys.AsyncResult{Path: res.Path, TTL: res.TTL, LastMod: res.LastMod, Err: err}
	close(out)
	return out
}

func (feedNames) Publish(context.Context, crypto.PrivKey, path.Path, ...namesys.PublishOption) error {
	return errors.New("the gateway is read-only: publish with 'weft feed publish'")
}

// feedRecords answers ?format=ipns-record with the record the feed logic
// resolves.
type feedRecords struct{ n *Node }

func (f feedRecords) GetValue(ctx context.Context, key string, _ ...routing.Option) ([]byte, error) {
	name, err := ipns.NameFromRoutingKey([]byte(key))
	if err != nil {
		return nil, routing.ErrNotFound
	}
	rec, err := f.n.feeds.m.Resolve(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", routing.ErrNotFound, err)
	}
	return rec.Raw, nil
}

func (f feedRecords) SearchValue(ctx context.Context, key string, opts ...routing.Option) (<-chan []byte, error) {
	out := make(chan []byte, 1)
	if v, err := f.GetValue(ctx, key, opts...); err == nil {
		out <- v
	}
	close(out)
	return out, nil
}

func (feedRecords) PutValue(context.Context, string, []byte, ...routing.Option) error {
	return errors.New("the gateway is read-only")
}
