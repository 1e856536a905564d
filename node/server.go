package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/store"
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
	writeJSON(w, code, api.Error{Error: errorText(err)})
}

// maxErrorBytes bounds an error message the API sends: an error that
// quotes a huge bad input (a 900 KB "CID") is cut in the middle.
const maxErrorBytes = 1024

// errorText is the message a client sees for err, on every path (JSON
// errors, stream error events and trailers): bounded in size, and naming
// config keys as config.toml spells them.
func errorText(err error) string {
	msg := err.Error()
	if errors.Is(err, store.ErrStoreFull) {
		// The store names its own Go field; the user edits config.toml.
		msg = strings.ReplaceAll(msg, "Store.MaxBytes", "store.max_bytes in config.toml")
	}
	if len(msg) > maxErrorBytes {
		const head, tail = maxErrorBytes / 2, maxErrorBytes / 4
		msg = strings.ToValidUTF8(msg[:head]+fmt.Sprintf(" …[%d bytes cut]… ", len(msg)-head-tail)+msg[len(msg)-tail:], "")
	}
	return msg
}

// clipLen is how much of a bad input an error quotes.
const clipLen = 64

// clip shortens an input quoted in an error message, saying how long it
// was: every error that echoes what a client sent goes through it.
func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return strings.ToValidUTF8(s[:clipLen], "") + fmt.Sprintf("…(%d bytes)", len(s))
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
