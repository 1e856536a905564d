// Package ui is weft's web dashboard: a few static files (HTML, CSS and
// JavaScript, with no build step) embedded in the binary and served by the
// daemon under /ui/.
//
// The page gets everything from the daemon's HTTP API, the same endpoints
// the CLI uses, and sends the API token as "Authorization: Bearer TOKEN" on
// every call. The token is the one the daemon wrote into the page (see
// HandlerWithToken), else the one the user gives it (/ui/?token=... or its
// token form). The page loads nothing from any other origin; the
// Content-Security-Policy the handler sets makes the browser refuse it if a
// change ever tried.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html"
	"io/fs"
	"net/http"
	"strings"
)

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// Files is the dashboard's file tree (index.html at its root).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// csp lets the page load its own files and talk to its own origin, nothing
// else. The favicon is a data: URL; charts are inline SVG built in the DOM.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// tokenMeta is the element of index.html that HandlerWithToken fills in.
var tokenMeta = []byte(`<meta name="weft-api-token" content="">`)

// Handler serves the dashboard for requests whose path starts with Prefix,
// with no token in the page. Mount it at Prefix; a ServeMux then also
// redirects /ui to /ui/, keeping the query (and so ?token=).
func Handler() http.Handler { return HandlerWithToken(nil) }

// HandlerWithToken is Handler, but the page (index.html) carries the API
// token that token returns for the request, if any, so the page works with
// no step from the user. The caller decides who may have it: token must
// return "" for any request that another origin or another machine could
// have made or could read (see node's api_guard.go).
func HandlerWithToken(token func(*http.Request) string) http.Handler {
	files := Files()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil || !bytes.Contains(index, tokenMeta) {
		panic("ui: index.html lacks " + string(tokenMeta)) // the embedded page always has it
	}
	etags := map[string]string{}
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags["/"+p] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	etags["/"] = etags["/index.html"]
	fileServer := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p, ok := strings.CutPrefix(r.URL.Path, strings.TrimSuffix(Prefix, "/"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		if p == "" {
			// The page's URLs are relative to /ui/.
			u := *r.URL
			u.Path = Prefix
			http.Redirect(w, r, u.RequestURI(), http.StatusMovedPermanently)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		// The token may sit in the URL until the script moves it to
		// sessionStorage: never send it on in a Referer.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// No window of another origin keeps a handle on this one.
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if p == "/" && token != nil {
			if tok := token(r); tok != "" {
				page := bytes.Replace(index, tokenMeta,
					[]byte(`<meta name="weft-api-token" content="`+html.EscapeString(tok)+`">`), 1)
				h.Set("Cache-Control", "no-store") // the token stays out of caches
				h.Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusOK)
				if r.Method != http.MethodHead {
					_, _ = w.Write(page)
				}
				return
			}
		}
		// Revalidate on every load so an upgraded daemon serves its own
		// files; the ETag makes that a 304.
		h.Set("Cache-Control", "no-cache")
		if tag, ok := etags[p]; ok {
			h.Set("ETag", tag)
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = p
		r2.URL.RawPath = ""
		fileServer.ServeHTTP(w, r2)
	})
}
