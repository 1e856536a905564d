package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// newTestServer serves h on 127.0.0.1 until the test ends.
func newTestServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestOneShotClient: GETs, streamed and plain, errors and uploads behave
// through the one-shot client as through the pooled one.
func TestOneShotClient(t *testing.T) {
	addr := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/chunks": // no Content-Length: a chunked answer, flushed in pieces
			for i := range 3 {
				fmt.Fprintf(w, "part %d\n", i)
				w.(http.Flusher).Flush()
			}
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/gone":
			http.Error(w, `{"error":"no such thing"}`, http.StatusNotFound)
		}
	})
	for _, tc := range []struct {
		name, method, path string
		body               io.Reader
		want               string
		code               int
	}{
		{"streamed GET", http.MethodGet, "/chunks", nil, "part 0\npart 1\npart 2\n", 0},
		{"upload", http.MethodPost, "/echo", strings.NewReader("sent"), "sent", 0},
		{"error", http.MethodGet, "/gone", nil, "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewOneShotClient(addr, "tok")
			resp, err := c.Raw(t.Context(), tc.method, tc.path, nil, tc.body, "text/plain")
			if tc.code != 0 {
				var se *StatusError
				if !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("got %v, want status %d", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := NewOneShotClient("127.0.0.1:1", "tok").Raw(t.Context(), http.MethodGet, "/", nil, nil, ""); !errors.Is(err, ErrUnreachable) {
		t.Errorf("no daemon: %v, want ErrUnreachable", err)
	}
}

// TestOneShotClientCancel: cancelling the context ends a read that waits
// for the daemon.
func TestOneShotClientCancel(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // headers now, the body never
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := NewOneShotClient(addr, "").Raw(ctx, http.MethodGet, "/", nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the read ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not end after cancel")
	}
}
