// Package ui is weft's web dashboard: a few static files (HTML, CSS and
// JavaScript, with no build step) embedded in the binary and served by the
// daemon under /ui/.
//
// The files hold no data, so they are served without the API token. The
// page gets everything from the daemon's HTTP API, the same endpoints the CLI
// uses, and sends the token the user gives it (from /ui/?token=... or its
// token form) as "Authorization: Bearer TOKEN" on every call. The page loads
// nothing from any other origin; the Content-Security-Policy the handler sets
// makes the browser refuse it if a change ever tried.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
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

// Handler serves the dashboard for requests whose path starts with Prefix.
// Mount it at Prefix; a ServeMux then also redirects /ui to /ui/, keeping
// the query (and so ?token=).
func Handler() http.Handler {
	files := Files()
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
