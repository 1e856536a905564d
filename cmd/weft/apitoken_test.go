package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/weft-p2p/weft/node/nodetest"
)

// TestAPIFlagToken: the daemon wants its token also on loopback. With
// --api naming the default repo's daemon, the CLI sends that repo's token
// with no flag; it never sends it to another address, where --token works.
func TestAPIFlagToken(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{})
	t.Setenv("WEFT_PATH", a.Repo().Path)
	t.Setenv("WEFT_API_TOKEN", "")

	if code, out, stderr := weft(t, "id", "--api", a.APIAddr()); code != 0 || !strings.Contains(out, a.ID().String()) {
		t.Fatalf("weft id --api (the default repo's daemon): exit %d, %q %q", code, out, stderr)
	}
	code, _, stderr := weft(t, "id", "--api", b.APIAddr())
	if code == 0 || !strings.Contains(stderr, "token") {
		t.Fatalf("weft id --api (another daemon) without --token: exit %d, %q; want a refusal that names the token", code, stderr)
	}
	if code, out, stderr := weft(t, "id", "--api", b.APIAddr(), "--token", b.Token()); code != 0 || !strings.Contains(out, b.ID().String()) {
		t.Fatalf("weft id --api --token: exit %d, %q %q", code, out, stderr)
	}
	// What another address receives: no Authorization at all.
	var mu sync.Mutex
	var auth []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, `{"error":"missing or wrong API token"}`, http.StatusUnauthorized)
	}))
	defer other.Close()
	weft(t, "id", "--api", strings.TrimPrefix(other.URL, "http://"))
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || auth[0] != "" {
		t.Fatalf("another address received Authorization %q, want one request without it", auth)
	}
}
