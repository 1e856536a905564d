package node_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// apiReq is one raw request to a node's API and the status it must get.
type apiReq struct {
	name   string
	method string
	path   string
	header map[string]string // "Host" sets the Host header
	token  bool              // send the node's token
	body   string
	want   int
}

// do sends rq to n's API and returns the answer's status, headers and body.
func do(t *testing.T, n *node.Node, rq apiReq) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(rq.method, "http://"+n.APIAddr()+rq.path, strings.NewReader(rq.body))
	if err != nil {
		t.Fatal(err)
	}
	if rq.body == "" {
		req.Body, req.ContentLength = nil, 0
	}
	for k, v := range rq.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if rq.token {
		req.Header.Set("Authorization", "Bearer "+n.Token())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", rq.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read answer: %v", rq.name, err)
	}
	return resp.StatusCode, resp.Header, b
}

func runReqs(t *testing.T, n *node.Node, reqs []apiReq) {
	t.Helper()
	for _, rq := range reqs {
		code, _, body := do(t, n, rq)
		if code != rq.want {
			t.Errorf("%s: %s %s = %d, want %d: %.300s", rq.name, rq.method, rq.path, code, rq.want, body)
		}
	}
}

// TestAPIHostAllowlist: the API answers only to Host names that are its
// own; a page that rebinds attacker.example to 127.0.0.1 gets 403 for
// everything, with or without the token.
func TestAPIHostAllowlist(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Addresses.APIHosts = []string{"weft.internal", "proxy.example:8443"}
	}})
	port := n.APIAddr()[strings.LastIndex(n.APIAddr(), ":")+1:]
	host := func(h string) map[string]string { return map[string]string{"Host": h} }
	var reqs []apiReq
	for _, tc := range []struct {
		host string
		want int
	}{
		{"attacker.example", http.StatusForbidden},
		{"attacker.example:" + port, http.StatusForbidden},
		{"ATTACKER.example:" + port, http.StatusForbidden},
		{"localhost.:" + port, http.StatusForbidden},
		{"127.0.0.1.nip.io:" + port, http.StatusForbidden},
		{"127.0.0.1:1", http.StatusForbidden}, // not the API's port
		{"192.168.1.20:" + port, http.StatusForbidden},
		{"proxy.example:9999", http.StatusForbidden},
		{"127.0.0.1:" + port, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"LocalHost:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"127.0.0.2:" + port, http.StatusOK},
		{"weft.internal", http.StatusOK},
		{"weft.internal:80", http.StatusOK},
		{"proxy.example:8443", http.StatusOK},
	} {
		for _, path := range []string{"/api/v1/key/ls", "/metrics", "/healthz", "/ui/"} {
			reqs = append(reqs, apiReq{name: "Host " + tc.host, method: "GET", path: path, header: host(tc.host), token: true, want: tc.want})
		}
	}
	runReqs(t, n, reqs)
	// A POST under a foreign Host changes nothing either.
	runReqs(t, n, []apiReq{{name: "key gen under a foreign Host", method: "POST", path: "/api/v1/key/gen?name=rebound",
		header: host("attacker.example:" + port), token: true, want: http.StatusForbidden}})
	if keys, _ := n.Keys(); len(keys) != 1 {
		t.Errorf("keys after the refused key gen: %v", keys)
	}
}

// TestAPIOriginTokenContentType: the origin, token and Content-Type rules
// of README "Security of the local API", request by request.
func TestAPIOriginTokenContentType(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	self := "http://" + n.APIAddr()
	hdr := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	runReqs(t, n, []apiReq{
		// The token, also on loopback.
		{"no token", "GET", "/api/v1/status", nil, false, "", http.StatusUnauthorized},
		{"wrong token", "GET", "/api/v1/key/ls", hdr("Authorization", "Bearer "+strings.Repeat("0", 64)), false, "", http.StatusUnauthorized},
		{"token", "GET", "/api/v1/status", nil, true, "", http.StatusOK},
		{"no token, write", "POST", "/api/v1/key/gen?name=a", nil, false, "", http.StatusUnauthorized},
		{"no token, unknown path", "GET", "/api/v1/nothing", nil, false, "", http.StatusUnauthorized},
		{"token, unknown path", "GET", "/api/v1/nothing", nil, true, "", http.StatusNotFound},
		{"metrics on loopback need no token", "GET", "/metrics", nil, false, "", http.StatusOK},
		{"healthz", "GET", "/healthz", nil, false, "", http.StatusOK},
		{"readyz", "GET", "/readyz", nil, false, "", http.StatusOK},
		{"dashboard", "GET", "/ui/", nil, false, "", http.StatusOK},
		// Origin and fetch metadata: reads and writes, token or not.
		{"foreign Origin read", "GET", "/api/v1/key/ls", hdr("Origin", "http://evil.example"), true, "", http.StatusForbidden},
		{"foreign Origin on 127.0.0.1", "GET", "/api/v1/status", hdr("Origin", "http://127.0.0.1:1"), true, "", http.StatusForbidden},
		{"Origin null", "POST", "/api/v1/key/gen?name=b", hdr("Origin", "null"), true, "", http.StatusForbidden},
		{"foreign Origin metrics", "GET", "/metrics", hdr("Origin", "http://evil.example"), false, "", http.StatusForbidden},
		{"foreign Origin healthz", "GET", "/healthz", hdr("Origin", "http://evil.example"), false, "", http.StatusForbidden},
		{"cross-site", "GET", "/api/v1/status", hdr("Sec-Fetch-Site", "cross-site"), true, "", http.StatusForbidden},
		{"same-site (another port)", "POST", "/api/v1/gc", hdr("Sec-Fetch-Site", "same-site"), true, "", http.StatusForbidden},
		{"own Origin", "GET", "/api/v1/status", hdr("Origin", self, "Sec-Fetch-Site", "same-origin"), true, "", http.StatusOK},
		{"typed in the address bar", "GET", "/api/v1/status", hdr("Sec-Fetch-Site", "none"), true, "", http.StatusOK},
		{"a link to the dashboard", "GET", "/ui/", hdr("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"), false, "", http.StatusOK},
		{"the dashboard as a script", "GET", "/ui/", hdr("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "script"), false, "", http.StatusForbidden},
		{"a link to the API", "GET", "/api/v1/key/ls", hdr("Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"), true, "", http.StatusForbidden},
		// Content-Type: no form, no text/plain.
		{"JSON as text/plain", "POST", "/api/v1/disconnect", hdr("Content-Type", "text/plain"), true, `{"peer":"x"}`, http.StatusUnsupportedMediaType},
		{"JSON as a form", "POST", "/api/v1/connect", hdr("Content-Type", "application/x-www-form-urlencoded"), true, `{"addr":"x"}`, http.StatusUnsupportedMediaType},
		{"JSON with no type", "POST", "/api/v1/collection/create", nil, true, `{"name":"x"}`, http.StatusUnsupportedMediaType},
		{"JSON", "POST", "/api/v1/disconnect", hdr("Content-Type", "application/json"), true, `{"peer":"12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"}`, http.StatusNotFound},
		{"query-only POST with a form", "POST", "/api/v1/key/gen?name=c", hdr("Content-Type", "application/x-www-form-urlencoded"), true, "name=c", http.StatusUnsupportedMediaType},
		{"raw body as text/plain", "POST", "/api/v1/pubsub/pub?topic=t", hdr("Content-Type", "text/plain"), true, "hi", http.StatusUnsupportedMediaType},
		{"raw body with no type", "POST", "/api/v1/car/import", nil, true, "x", http.StatusUnsupportedMediaType},
		{"add as text/plain", "POST", "/api/v1/add", hdr("Content-Type", "text/plain"), true, "hi", http.StatusUnsupportedMediaType},
		{"add as a urlencoded form", "POST", "/api/v1/add", hdr("Content-Type", "application/x-www-form-urlencoded"), true, "a=b", http.StatusUnsupportedMediaType},
		{"bad Content-Type", "POST", "/api/v1/connect", hdr("Content-Type", "application/json; ;;"), true, "{}", http.StatusUnsupportedMediaType},
	})
	if keys, _ := n.Keys(); len(keys) != 1 {
		t.Errorf("keys after refused key gens: %v", keys)
	}
}

// TestAPIMethodNotAllowed: a known path with another method is 405 with
// Allow; an unknown path is 404; both as JSON errors.
func TestAPIMethodNotAllowed(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	for _, tc := range []struct {
		method, path, allow string
		want                int
	}{
		{"POST", "/api/v1/id", "GET, HEAD", http.StatusMethodNotAllowed},
		{"DELETE", "/api/v1/status", "GET, HEAD", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/connect", "POST", http.StatusMethodNotAllowed},
		{"PUT", "/api/v1/add", "POST", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/key/gen", "POST", http.StatusMethodNotAllowed},
		{"POST", "/metrics", "GET, HEAD", http.StatusMethodNotAllowed},
		{"POST", "/ui/", "GET, HEAD", http.StatusMethodNotAllowed},
		{"OPTIONS", "/api/v1/connect", "POST", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/no/such", "", http.StatusNotFound},
		{"HEAD", "/api/v1/id", "", http.StatusOK},
	} {
		code, h, body := do(t, n, apiReq{name: tc.method + " " + tc.path, method: tc.method, path: tc.path, token: true})
		if code != tc.want || h.Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d Allow %q, want %d Allow %q", tc.method, tc.path, code, h.Get("Allow"), tc.want, tc.allow)
		}
		if tc.want >= 400 {
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Errorf("%s %s: answer is not a JSON error: %q", tc.method, tc.path, body)
			}
		}
	}
}

// TestAPIErrorsBounded: an error never echoes a huge bad input whole; a
// 900 KB CID gets a short answer that still says what was wrong.
func TestAPIErrorsBounded(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	huge := "bafy" + strings.Repeat("x", 900<<10)
	body, _ := json.Marshal(map[string]string{"addr": "/ip4/" + huge})
	peerBody, _ := json.Marshal(map[string]string{"peer": huge})
	collBody, _ := json.Marshal(map[string]any{"collection": huge, "cids": []string{huge}})
	for _, rq := range []apiReq{
		{name: "stat", method: "GET", path: "/api/v1/stat?cid=" + huge},
		{name: "cat", method: "GET", path: "/api/v1/cat?cid=" + huge},
		{name: "pin add", method: "POST", path: "/api/v1/pin/add?cid=" + huge},
		{name: "feed resolve", method: "GET", path: "/api/v1/feed/resolve?name=" + huge},
		{name: "key gen", method: "POST", path: "/api/v1/key/gen?name=" + huge},
		{name: "find peer", method: "GET", path: "/api/v1/dht/find-peer?peer=" + huge},
		{name: "connect", method: "POST", path: "/api/v1/connect", header: map[string]string{"Content-Type": "application/json"}, body: string(body)},
		{name: "disconnect", method: "POST", path: "/api/v1/disconnect", header: map[string]string{"Content-Type": "application/json"}, body: string(peerBody)},
		{name: "collection add", method: "POST", path: "/api/v1/collection/add", header: map[string]string{"Content-Type": "application/json"}, body: string(collBody)},
		{name: "unknown path", method: "GET", path: "/api/v1/" + huge},
		{name: "405", method: "PUT", path: "/api/v1/id?x=" + huge},
	} {
		rq.token = true
		code, _, b := do(t, n, rq)
		if code < 400 || code >= 500 {
			t.Errorf("%s: %d, want a 4xx: %.200s", rq.name, code, b)
		}
		if len(b) > 2048 {
			t.Errorf("%s: %d-byte answer to a bad input: %.200s…", rq.name, len(b), b)
		}
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s: answer is not a JSON error: %.200s", rq.name, b)
		}
	}
}

// TestAddMultipartWithoutBoundary: a multipart add whose Content-Type has
// no boundary is a 400, not a 200 with an error event, and the server logs
// no panic.
func TestAddMultipartWithoutBoundary(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	var logged syncBuffer
	log.SetOutput(&logged) // net/http logs a handler's panic with package log
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	for _, ct := range []string{"multipart/form-data", "multipart/mixed", "multipart/form-data; charset=utf-8"} {
		code, _, b := do(t, n, apiReq{name: ct, method: "POST", path: "/api/v1/add", token: true,
			header: map[string]string{"Content-Type": ct}, body: "--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nhi\r\n--x--\r\n"})
		if code != http.StatusBadRequest || !strings.Contains(string(b), "boundary") {
			t.Errorf("add with Content-Type %q = %d %s, want 400 naming the boundary", ct, code, b)
		}
	}
	// A good multipart add still works after.
	if _, err := nodetest.Client(n).Add(t.Context(), files.NewMapDirectory(map[string]files.Node{"a": files.NewBytesFile([]byte("a"))}), nil, nil, nil); err != nil {
		t.Fatalf("multipart add: %v", err)
	}
	if s := logged.String(); strings.Contains(s, "panic") {
		t.Errorf("the server logged a panic:\n%s", s)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStoreFullNamesConfigKey: the store-full error tells the user the
// config key they can raise, as config.toml spells it.
func TestStoreFullNamesConfigKey(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.Store.MaxBytes = 64 << 10 }})
	data := make([]byte, 1<<20)
	rand.Read(data)
	_, err := nodetest.Client(n).Add(t.Context(), files.NewBytesFile(data), nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "store.max_bytes") || strings.Contains(err.Error(), "Store.MaxBytes") {
		t.Fatalf("add past store.max_bytes: %v, want an error naming store.max_bytes", err)
	}
}

// TestDashboardGetsToken: the dashboard page carries the API token when a
// browser on this machine opens it by a loopback address, and not when the
// request came through a proxy, under a configured name, from a link on
// another site, or as a subresource of another page.
func TestDashboardGetsToken(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.Addresses.APIHosts = []string{"weft.lan"} }})
	port := n.APIAddr()[strings.LastIndex(n.APIAddr(), ":")+1:]
	meta := `<meta name="weft-api-token" content="` + n.Token() + `">`
	for _, tc := range []struct {
		name   string
		header map[string]string
		token  bool
	}{
		{"typed in the address bar", map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, true},
		{"no fetch metadata", nil, true},
		{"localhost", map[string]string{"Host": "localhost:" + port}, true},
		{"reload from itself", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "document"}, true},
		{"a link on another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, false},
		{"a link on another port", map[string]string{"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}, false},
		{"through a proxy", map[string]string{"X-Forwarded-For": "192.0.2.7"}, false},
		{"through a proxy (Forwarded)", map[string]string{"Forwarded": "for=192.0.2.7"}, false},
		{"a configured name", map[string]string{"Host": "weft.lan"}, false},
		{"in a frame", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "iframe"}, false},
	} {
		code, h, body := do(t, n, apiReq{name: tc.name, method: "GET", path: "/ui/", header: tc.header})
		if code != http.StatusOK {
			t.Errorf("%s: GET /ui/ = %d", tc.name, code)
			continue
		}
		if got := bytes.Contains(body, []byte(meta)); got != tc.token {
			t.Errorf("%s: page carries the token: %v, want %v", tc.name, got, tc.token)
		}
		if !tc.token && bytes.Contains(body, []byte(n.Token())) {
			t.Errorf("%s: the token is in the page", tc.name)
		}
		if tc.token && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: page with the token has Cache-Control %q, want no-store", tc.name, h.Get("Cache-Control"))
		}
	}
}

// TestDashboardTokenNotForOtherUsers: another account on this machine
// reaches the loopback API too, but the dashboard page it loads carries no
// token (Linux: the kernel says whose the client socket is). The other
// account is "nobody", so this needs root to start it.
func TestDashboardTokenNotForOtherUsers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux tells a loopback client's user apart (README says so)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user (CI runs as root)")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("no bash for the other user's client: %v", err)
	}
	n := nodetest.Start(t, nodetest.Options{})
	host, port, _ := net.SplitHostPort(n.APIAddr())
	// bash's /dev/tcp: a plain HTTP client that needs no file the other
	// user may not read.
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s && printf 'GET /ui/ HTTP/1.0\r\nHost: %s\r\n\r\n' >&3 && cat <&3`, host, port, n.APIAddr())
	get := func(cred *syscall.Credential) string {
		t.Helper()
		cmd := exec.Command(bash, "-c", script)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GET /ui/ as uid %v: %v", cred, err)
		}
		if !bytes.Contains(out, []byte("<title>weft dashboard</title>")) {
			t.Fatalf("GET /ui/ as uid %v did not get the page:\n%.500s", cred, out)
		}
		return string(out)
	}
	if page := get(nil); !strings.Contains(page, n.Token()) {
		t.Fatal("the daemon's own user got no token: the check refuses everyone")
	}
	if page := get(&syscall.Credential{Uid: 65534, Gid: 65534}); strings.Contains(page, n.Token()) {
		t.Error("another user got the token in the dashboard page")
	}
}
