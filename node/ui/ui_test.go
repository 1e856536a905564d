package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestNothingFromTheNetwork: the embedded files name no other origin, so
// the page loads nothing from anywhere but the daemon. (The CSP the handler
// sends makes the browser enforce the same; the browser test in package
// node checks the requests the page really makes.)
func TestNothingFromTheNetwork(t *testing.T) {
	// The one absolute URL allowed: the SVG XML namespace, an identifier
	// that is never fetched.
	const svgNS = "http://www.w3.org/2000/svg"
	bad := []*regexp.Regexp{
		regexp.MustCompile(`(?i)\b(https?|wss?|ftp):(//|\\/\\/)`),
		regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?//`), // protocol-relative
		regexp.MustCompile(`(?i)@import`),
		regexp.MustCompile(`(?i)url\(\s*["']?(?:[a-z]+:|//)`), // CSS url() to anything absolute
	}
	n := 0
	err := fs.WalkDir(Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := fs.ReadFile(Files(), p)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), svgNS, "")
		text = strings.ReplaceAll(text, url(svgNS), "")
		for _, re := range bad {
			if m := re.FindString(text); m != "" {
				t.Errorf("%s refers to another origin: %q", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("only %d embedded files", n)
	}
}

// url is the svgNS as it appears URL-encoded in the data: favicon.
func url(s string) string { return strings.NewReplacer(":", "%3A", "/", "%2F").Replace(s) }

func TestHandler(t *testing.T) {
	h := Handler()
	get := func(method, path string, hdr http.Header) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, nil)
		for k, v := range hdr {
			r.Header[k] = v
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html", `<script src="app.js"`},
		{"/ui/app.js", "javascript", "Authorization"},
		{"/ui/style.css", "text/css", "--accent"},
	} {
		w := get("GET", tc.path, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s = %d", tc.path, w.Code)
		}
		if ct := w.Header().Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(w.Body.String(), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: CSP %q", tc.path, csp)
		}
		if w.Header().Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: no Referrer-Policy", tc.path)
		}
		// A second load with the ETag is a 304.
		tag := w.Header().Get("ETag")
		if tag == "" {
			t.Fatalf("GET %s: no ETag", tc.path)
		}
		if w := get("GET", tc.path, http.Header{"If-None-Match": {tag}}); w.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match = %d, want 304", tc.path, w.Code)
		}
	}
	if w := get("GET", "/ui?token=abc", nil); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/ui/?token=abc" {
		t.Errorf("GET /ui?token=abc = %d to %q, want a redirect to /ui/?token=abc", w.Code, w.Header().Get("Location"))
	}
	if w := get("GET", "/ui/missing.js", nil); w.Code != http.StatusNotFound {
		t.Errorf("GET /ui/missing.js = %d", w.Code)
	}
	if w := get("POST", "/ui/", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/ = %d", w.Code)
	}
	if w := get("GET", "/other/", nil); w.Code != http.StatusNotFound {
		t.Errorf("GET /other/ = %d", w.Code)
	}
}

// TestHandlerWithToken: the page carries the token the callback gives for
// the request, uncached; with "" (or from Handler) it carries none; the
// other files never do.
func TestHandlerWithToken(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	h := HandlerWithToken(func(r *http.Request) string { return r.Header.Get("X-Test-Give") })
	get := func(h http.Handler, path, give string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest("GET", path, nil)
		r.Header.Set("X-Test-Give", give)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := get(h, "/ui/", tok)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `<meta name="weft-api-token" content="`+tok+`">`) {
		t.Fatalf("GET /ui/ with a token = %d, page lacks it", w.Code)
	}
	if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("ETag") != "" {
		t.Errorf("page with the token: Cache-Control %q ETag %q, want no-store and no ETag", w.Header().Get("Cache-Control"), w.Header().Get("ETag"))
	}
	if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("Cross-Origin-Opener-Policy") != "same-origin" {
		t.Error("page with the token lacks its CSP or COOP")
	}
	w = get(h, "/ui/", `"><script>alert(1)</script>`)
	if strings.Contains(w.Body.String(), "<script>alert") {
		t.Error("the token is written into the page unescaped")
	}
	for _, tc := range []struct {
		h    http.Handler
		path string
		give string
	}{{h, "/ui/", ""}, {Handler(), "/ui/", tok}, {h, "/ui/app.js", tok}, {h, "/ui/style.css", tok}} {
		if w := get(tc.h, tc.path, tc.give); w.Code != http.StatusOK || strings.Contains(w.Body.String(), tok) {
			t.Errorf("GET %s (give %q) = %d; has the token: %v", tc.path, tc.give, w.Code, strings.Contains(w.Body.String(), tok))
		}
	}
}
