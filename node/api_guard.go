package node

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// The browser threat model of the HTTP API (README: "Security of the local
// API"). The user's browser runs pages from any site, and every one of them
// can send requests to 127.0.0.1. None of them may read or change anything:
//
//  1. Host: the API answers only to its own address, a loopback IP or
//     localhost with the API's port, and the names in addresses.api_hosts.
//     A page that rebinds its own name to 127.0.0.1 sends its own name as
//     Host and gets 403, so it never becomes "same origin" with the API.
//  2. Origin and Sec-Fetch-Site: a request that a browser marks as coming
//     from another origin (an Origin that is not http(s)://HOST, or
//     Sec-Fetch-Site cross-site or same-site) gets 403, for reads as well as
//     writes. Only a top-level navigation to the dashboard page is let
//     through, and it gets no token.
//  3. Token: every /api/v1 request needs "Authorization: Bearer TOKEN" (the
//     token in REPO/api.token), also on loopback. Browsers never add that
//     header by themselves, and nothing else (no cookie) stands for it, so a
//     request a page forges has no credential. /metrics and /debug/pprof need
//     it only off loopback; /healthz and /readyz never.
//  4. Content-Type: a route that takes JSON takes only application/json, a
//     route that takes bytes wants a Content-Type naming them, and no route
//     takes text/plain or a form (add takes a multipart tree with a
//     boundary): the bodies a page can send without asking CORS first.
//
// The dashboard gets the token without a user step: the daemon writes it
// into the dashboard page it serves to a browser of the same user on this
// machine (loopback client socket owned by the daemon's uid, loopback Host,
// not through a proxy, a plain navigation). Another
// origin cannot read that page (no CORS headers, Host checked, frames
// refused), so it cannot read the token either.

// access says which credentials a route needs.
type access int

const (
	// open routes (the health probes) need no token. Host and origin are
	// still checked.
	open access = iota
	// monitor routes (metrics, pprof) need the token when the API does not
	// listen on loopback, so a local Prometheus scrapes without one.
	monitor
	// private routes (all of /api/v1) need the token always.
	private
	// page is the dashboard: no token, reachable by a top-level navigation
	// from anywhere; it carries the token only as described above.
	page
)

// bodyKind says what a route takes as a request body, by Content-Type.
type bodyKind int

const (
	noBody   bodyKind = iota // parameters in the query; no form or text body
	jsonBody                 // application/json
	rawBody                  // bytes with a Content-Type naming them (not a form or text/plain)
	addBody                  // rawBody, or a multipart/form-data tree with a boundary
)

// guard applies the rules above to every request before its route runs.
type guard struct {
	port     string          // the API's port
	listenIP net.IP          // the API's listen IP; nil or unspecified: any local address
	names    map[string]bool // addresses.api_hosts, lower case: "name" or "name:port"
	token    []byte          // "Bearer " + the API token
	loopback bool            // the API listens on loopback only
}

func newGuard(apiAddr string, names []string, token string) *guard {
	host, port, _ := net.SplitHostPort(apiAddr)
	g := &guard{port: port, listenIP: net.ParseIP(host), names: map[string]bool{},
		token: []byte("Bearer " + token), loopback: isLoopbackHost(host)}
	for _, s := range names {
		g.names[strings.ToLower(strings.TrimSpace(s))] = true
	}
	return g
}

// errForbidden prefixes every refusal of a browser rule.
var errForbidden = errors.New("refused")

// hostAllowed reports whether a Host header names this API.
func (g *guard) hostAllowed(hostport string) bool {
	hostport = strings.ToLower(hostport)
	if g.names[hostport] {
		return true
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	if g.names[host] {
		return true
	}
	if port != g.port {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return false // a name: only localhost and configured ones
	case ip.IsLoopback():
		return true
	case g.listenIP == nil || g.listenIP.IsUnspecified():
		// Listening on every address: any IP literal is one a client
		// dialled directly. DNS rebinding needs a name, never an IP.
		return true
	default:
		return ip.Equal(g.listenIP)
	}
}

// crossOrigin says why a browser marks r as sent by another origin, or ""
// when it does not (or r is not from a browser). navigation is set when r
// is a top-level navigation that another site started (a link).
func crossOrigin(r *http.Request) (why string, navigation bool) {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, r.Host) || u.Path != "" {
			return fmt.Sprintf("Origin %s is not this API's origin", clip(o)), false
		}
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
		return "", false
	default:
		nav := r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
		return fmt.Sprintf("the browser says this request comes from a %s page", clip(site)), nav
	}
}

// check applies the Host, origin, token and Content-Type rules for a route
// with the given access and body.
func (g *guard) check(r *http.Request, a access, body bodyKind) error {
	if !g.hostAllowed(r.Host) {
		return &httpError{http.StatusForbidden, fmt.Errorf("%w: Host %q is not an address of this API (a page that rebinds its name to 127.0.0.1 sends its own name); use 127.0.0.1:%s, or list the name in addresses.api_hosts",
			errForbidden, clip(r.Host), g.port)}
	}
	if why, nav := crossOrigin(r); why != "" && !(nav && a == page && (r.Method == http.MethodGet || r.Method == http.MethodHead)) {
		return &httpError{http.StatusForbidden, fmt.Errorf("%w: %s; the API answers only its own origin", errForbidden, why)}
	}
	switch a {
	case private:
		if !g.tokenOK(r) {
			return errNeedToken
		}
	case monitor:
		if !g.loopback && !g.tokenOK(r) {
			return errNeedToken
		}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	return checkContentType(r, body)
}

var errNeedToken = &httpError{http.StatusUnauthorized, errors.New("missing or wrong API token: send 'Authorization: Bearer TOKEN' (the token is in REPO/api.token)")}

func (g *guard) tokenOK(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), g.token) == 1
}

// dashboardToken is the token to write into the dashboard page for r, or
// "" when r may not have it: only for a plain navigation or reload from a
// browser of this user on this machine (on Linux the kernel says whose the
// client's socket is) that reached the API directly by a loopback address.
// A configured name may be a reverse proxy that others reach, and a proxy
// that says so (Forwarded, X-Forwarded-For) gets no token either; there the
// page asks for it.
func (g *guard) dashboardToken(r *http.Request) string {
	h := r.Header
	if h.Get("Forwarded") != "" || h.Get("X-Forwarded-For") != "" || h.Get("X-Real-Ip") != "" {
		return ""
	}
	if why, _ := crossOrigin(r); why != "" {
		return ""
	}
	if d := h.Get("Sec-Fetch-Dest"); d != "" && d != "document" {
		return ""
	}
	client, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !client.Addr().IsLoopback() {
		return ""
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return ""
	}
	if server, err := netip.ParseAddrPort(local.String()); err != nil || !sameUserPeer(client, server) {
		return "" // another account on this machine
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != g.port || !isLoopbackHost(strings.ToLower(host)) {
		return ""
	}
	return strings.TrimPrefix(string(g.token), "Bearer ")
}

// corsSimple are the request bodies a page may send to another origin
// without asking it first (a form, or fetch with mode no-cors).
var corsSimple = map[string]bool{
	"text/plain":                        true,
	"application/x-www-form-urlencoded": true,
	"multipart/form-data":               true,
}

func checkContentType(r *http.Request, body bodyKind) error {
	ct := r.Header.Get("Content-Type")
	media, params := "", map[string]string(nil)
	if ct != "" {
		var err error
		if media, params, err = mime.ParseMediaType(ct); err != nil {
			return &httpError{http.StatusUnsupportedMediaType, fmt.Errorf("bad Content-Type %q: %v", clip(ct), err)}
		}
	}
	unsupported := func(want string) error {
		got := "none"
		if ct != "" {
			got = clip(media)
		}
		return &httpError{http.StatusUnsupportedMediaType, fmt.Errorf("%s %s takes %s, not Content-Type %s", r.Method, clip(r.URL.Path), want, got)}
	}
	switch body {
	case noBody:
		if corsSimple[media] {
			return unsupported("no body (its parameters are in the query)")
		}
	case jsonBody:
		if media != "application/json" {
			return unsupported("a JSON body with Content-Type application/json")
		}
	case rawBody:
		if media == "" || corsSimple[media] {
			return unsupported("bytes with a Content-Type such as application/octet-stream")
		}
	case addBody:
		if strings.HasPrefix(media, "multipart/") {
			if params["boundary"] == "" {
				return badRequest("multipart body without a boundary in its Content-Type")
			}
			return nil
		}
		if media == "" || corsSimple[media] {
			return unsupported("a file (Content-Type application/octet-stream) or a multipart/form-data tree")
		}
	}
	return nil
}
