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

	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/ui"
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
