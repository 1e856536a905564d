package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/weft-p2p/weft/node/nodetest"
)

// TestDashboardMounted: the daemon serves the dashboard at /ui/, sends /ui
// there with its query (so /ui?token=... keeps the token), and serves the
// static files (which hold no data) with a Content-Security-Policy.
func TestDashboardMounted(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	base := "http://" + n.APIAddr()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := noRedirect.Get(base + "/ui?token=" + n.Token())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "/ui/?token="+n.Token() {
		t.Fatalf("GET /ui?token= = %d to %q, want a redirect to /ui/?token=...", resp.StatusCode, loc)
	}

	for path, want := range map[string]string{
		"/ui/":          "<title>weft dashboard</title>",
		"/ui/app.js":    "../api/v1/peers",
		"/ui/style.css": ".graph",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d, body has %q: %v", path, resp.StatusCode, want, strings.Contains(string(body), want))
		}
		if resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
	}
	// The API and the dashboard stay apart: /ui/ paths are not API paths.
	resp, err = http.Get(base + "/ui/api/v1/id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/api/v1/id = %d, want 404", resp.StatusCode)
	}
}
