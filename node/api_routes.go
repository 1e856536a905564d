package node

import (
	"errors"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/weft-p2p/weft/node/ui"
)

// route is one endpoint of the HTTP API: its method and path, who may call
// it (access, see api_guard.go), what body it takes, and its handler.
type route struct {
	method string
	path   string // exact, or a subtree when it ends in "/"
	access access
	body   bodyKind
	h      http.Handler
}

// routes is the API, in one table. Handlers live in a *_api.go file per
// domain; they turn typed Go methods and errors into HTTP.
func (n *Node) routes() []route {
	const get, post = http.MethodGet, http.MethodPost
	j := n.jsonHandler
	rs := []route{
		// Probes and monitoring.
		{get, "/healthz", open, noBody, http.HandlerFunc(handleHealthz)},
		{get, "/readyz", open, noBody, http.HandlerFunc(n.handleReadyz)},
		{get, "/metrics", monitor, noBody, n.metrics.handler()},
		{get, ui.Prefix, page, noBody, ui.HandlerWithToken(n.guard.dashboardToken)},

		// The node and its swarm (swarm_api.go).
		{get, "/api/v1/id", private, noBody, j(n.handleID)},
		{get, "/api/v1/status", private, noBody, j(n.handleStatus)},
		{get, "/api/v1/peers", private, noBody, j(n.handlePeers)},
		{post, "/api/v1/connect", private, jsonBody, j(n.handleConnect)},
		{post, "/api/v1/disconnect", private, jsonBody, j(n.handleDisconnect)},
		{get, "/api/v1/dht/find-peer", private, noBody, j(n.handleFindPeer)},
		{get, "/api/v1/dht/lookup", private, noBody, j(n.handleDHTLookup)},
		{get, "/api/v1/dht/table", private, noBody, j(n.handleRoutingTable)},
		{post, "/api/v1/shutdown", private, noBody, j(n.handleShutdown)},
		{post, "/api/v1/swarm/block", private, jsonBody, j(n.handleSwarmBlock)},
		{post, "/api/v1/swarm/unblock", private, jsonBody, j(n.handleSwarmUnblock)},

		// Content (content_api.go).
		{post, "/api/v1/add", private, addBody, http.HandlerFunc(n.handleAdd)},
		{get, "/api/v1/cat", private, noBody, http.HandlerFunc(n.handleCat)},
		{get, "/api/v1/get", private, noBody, http.HandlerFunc(n.handleGet)},
		{get, "/api/v1/car/export", private, noBody, http.HandlerFunc(n.handleCarExport)},
		{post, "/api/v1/car/import", private, rawBody, j(n.handleCarImport)},
		{get, "/api/v1/ls", private, noBody, j(n.handleLs)},
		{get, "/api/v1/stat", private, noBody, j(n.handleStat)},
		{post, "/api/v1/pin/add", private, noBody, j(n.handlePinAdd)},
		{post, "/api/v1/pin/rm", private, noBody, j(n.handlePinRm)},
		{get, "/api/v1/pin/ls", private, noBody, j(n.handlePinLs)},
		{get, "/api/v1/providers", private, noBody, j(n.handleProviders)},
		{post, "/api/v1/gc", private, noBody, j(n.handleGC)},

		// Pubsub (pubsub_api.go).
		{post, "/api/v1/pubsub/pub", private, rawBody, j(n.handlePubsubPub)},
		{get, "/api/v1/pubsub/sub", private, noBody, http.HandlerFunc(n.handlePubsubSub)},
		{get, "/api/v1/pubsub/ls", private, noBody, j(n.handlePubsubLs)},
		{get, "/api/v1/pubsub/peers", private, noBody, j(n.handlePubsubPeers)},

		// Feeds and their keys (feed_api.go).
		{post, "/api/v1/feed/publish", private, noBody, j(n.handleFeedPublish)},
		{get, "/api/v1/feed/resolve", private, noBody, j(n.handleFeedResolve)},
		{post, "/api/v1/feed/follow", private, noBody, j(n.handleFeedFollow)},
		{post, "/api/v1/feed/unfollow", private, noBody, j(n.handleFeedUnfollow)},
		{get, "/api/v1/feed/ls", private, noBody, j(n.handleFeedLs)},
		{get, "/api/v1/feed/counters", private, noBody, j(n.handleFeedCounters)},
		{get, "/api/v1/key/ls", private, noBody, j(n.handleKeyLs)},
		{post, "/api/v1/key/gen", private, noBody, j(n.handleKeyGen)},

		// Collections (collection_api.go).
		{post, "/api/v1/collection/create", private, jsonBody, j(withBody(n.handleCollectionCreate))},
		{post, "/api/v1/collection/join", private, jsonBody, j(withBody(n.handleCollectionJoin))},
		{post, "/api/v1/collection/leave", private, jsonBody, j(withBody(n.handleCollectionLeave))},
		{post, "/api/v1/collection/add", private, jsonBody, j(withBody(n.handleCollectionAdd))},
		{post, "/api/v1/collection/rm", private, jsonBody, j(withBody(n.handleCollectionRm))},
		{post, "/api/v1/collection/grant", private, jsonBody, j(withBody(n.handleCollectionGrant))},
		{post, "/api/v1/collection/snapshot", private, jsonBody, j(withBody(n.handleCollectionSnapshot))},
		{get, "/api/v1/collection/ls", private, noBody, j(n.handleCollectionItems)},
		{get, "/api/v1/collection/status", private, noBody, j(n.handleCollectionStatus)},
		{get, "/api/v1/collection/list", private, noBody, j(n.handleCollectionList)},
	}
	if n.cfg.Debug.Pprof {
		rs = append(rs,
			route{get, "/debug/pprof/", monitor, noBody, http.HandlerFunc(pprof.Index)},
			route{get, "/debug/pprof/cmdline", monitor, noBody, http.HandlerFunc(pprof.Cmdline)},
			route{get, "/debug/pprof/profile", monitor, noBody, http.HandlerFunc(pprof.Profile)},
			route{get, "/debug/pprof/symbol", monitor, noBody, http.HandlerFunc(pprof.Symbol)},
			route{post, "/debug/pprof/symbol", monitor, rawBody, http.HandlerFunc(pprof.Symbol)},
			route{get, "/debug/pprof/trace", monitor, noBody, http.HandlerFunc(pprof.Trace)},
		)
	}
	return rs
}

// apiHandler serves the route table: every request passes the guard first;
// a known path with another method gets 405 with Allow, any other path 404.
func (n *Node) apiHandler() http.Handler {
	n.metrics = newMetrics(n)
	n.guard = newGuard(n.apiAddr, n.cfg.Addresses.APIHosts, n.repo.Token)
	mux := http.NewServeMux()
	byPath := map[string][]route{}
	var paths []string
	for _, rt := range n.routes() {
		if _, ok := byPath[rt.path]; !ok {
			paths = append(paths, rt.path)
		}
		byPath[rt.path] = append(byPath[rt.path], rt)
	}
	for _, p := range paths {
		mux.Handle(p, n.methods(byPath[p]))
	}
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := n.guard.check(r, private, noBody); err != nil {
			writeError(w, err)
			return
		}
		writeError(w, notFound("no API endpoint %s %s", r.Method, clip(r.URL.Path)))
	}))
	return apiHeaders(mux)
}

// methods serves the routes of one path: the one whose method matches
// (GET also answers HEAD), after the guard; 405 with Allow otherwise.
func (n *Node) methods(rs []route) http.Handler {
	var allow []string
	for _, rt := range rs {
		allow = append(allow, rt.method)
		if rt.method == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	allowed := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := r.Method
		if m == http.MethodHead {
			m = http.MethodGet
		}
		i := slices.IndexFunc(rs, func(rt route) bool { return rt.method == m })
		if i < 0 {
			if err := n.guard.check(r, private, noBody); err != nil {
				writeError(w, err)
				return
			}
			w.Header().Set("Allow", allowed)
			writeError(w, &httpError{http.StatusMethodNotAllowed,
				errors.New(r.Method + " is not allowed on " + clip(r.URL.Path) + "; use " + allowed)})
			return
		}
		rt := rs[i]
		if err := n.guard.check(r, rt.access, rt.body); err != nil {
			writeError(w, err)
			return
		}
		if strings.HasPrefix(rt.path, "/api/") && !n.ready.Load() {
			writeError(w, &httpError{http.StatusServiceUnavailable, errors.New("daemon is starting; try again shortly")})
			return
		}
		n.serveTraced(rt.method+" "+rt.path, rt.h, w, r)
	})
}

// apiHeaders sets what every answer carries: no MIME sniffing, and no use
// by another origin as an image, script or frame.
func apiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

func handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
