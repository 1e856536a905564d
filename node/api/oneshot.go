package api

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// NewOneShotClient returns a client for a process that makes a request or
// two and exits, as every CLI command does. Its GETs each go over a
// connection of their own, written and read by the calling goroutine:
// net/http's pooled transport starts goroutines (a dialer, a reader and a
// writer per connection), which in a process that has just started means
// new threads, about half a millisecond of a 1 KiB `weft cat`. Requests
// with a body, non-http URLs and hosts reached through a proxy ($HTTP_PROXY)
// still use the pooled transport: it reads the answer while the body is
// being sent, which streaming uploads need.
func NewOneShotClient(addr, token string) *Client {
	c := NewClient(addr, token)
	if strings.HasPrefix(c.base, "http://") {
		c.http = &http.Client{Transport: oneShotTransport{}}
	}
	return c
}

// oneShotTransport is NewOneShotClient's http.RoundTripper.
type oneShotTransport struct{}

func (oneShotTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || (req.Body != nil && req.Body != http.NoBody) {
		return http.DefaultTransport.RoundTrip(req)
	}
	if proxy, err := http.ProxyFromEnvironment(req); err != nil || proxy != nil {
		return http.DefaultTransport.RoundTrip(req) // HTTP_PROXY names one for this host
	}
	ctx := req.Context()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", canonicalAddr(req.URL.Host))
	if err != nil {
		return nil, err
	}
	// Cancelling the request (Ctrl-C) closes the connection, which ends a
	// blocked read or write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	out := req.Clone(ctx)
	out.Close = true // "Connection: close": the daemon need not keep it
	if err := out.Write(conn); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &connBody{ReadCloser: resp.Body, conn: conn, stop: stop}
	return resp, nil
}

// canonicalAddr adds the default port to a host without one.
func canonicalAddr(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "80")
}

// connBody closes the response's connection with its body.
type connBody struct {
	io.ReadCloser
	conn net.Conn
	stop func() bool
	once sync.Once
}

func (b *connBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.stop()
		b.conn.Close()
	})
	return err
}
