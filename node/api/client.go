package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/propagation"
)

// ErrUnreachable says nothing answered at the API address.
var ErrUnreachable = errors.New("daemon not reachable")

// StatusError is a non-2xx answer from the daemon.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// Client talks to one daemon's HTTP API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the API at addr (host:port or a URL). token
// is sent as a bearer token when not empty.
func NewClient(addr, token string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{}}
}

// NewClientHTTP is NewClient over hc (its transport may dial another way:
// into a network namespace, say).
func NewClientHTTP(addr, token string, hc *http.Client) *Client {
	c := NewClient(addr, token)
	c.http = hc
	return c
}

// WithHTTP returns a copy of c that sends its requests through hc (the
// simulator's in-memory connections).
func (c *Client) WithHTTP(hc *http.Client) *Client {
	cc := *c
	cc.http = hc
	return &cc
}

// Base returns the API's base URL.
func (c *Client) Base() string { return c.base }

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.Raw(ctx, method, path, query, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}

// Raw sends a request and returns the response for streaming. A non-2xx
// answer is turned into a *StatusError and the body closed.
func (c *Client) Raw(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The span in ctx, if any, becomes the parent of the daemon's spans
	// for this call (W3C traceparent).
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w at %s: is 'weft daemon' running?", ErrUnreachable, c.base)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		return nil, &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}

// ID returns the node's identity.
func (c *Client) ID(ctx context.Context) (ID, error) {
	var out ID
	return out, c.Do(ctx, http.MethodGet, "/api/v1/id", nil, nil, &out)
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.Do(ctx, http.MethodGet, "/api/v1/status", nil, nil, &out)
}

// Peers lists connected peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	return out, c.Do(ctx, http.MethodGet, "/api/v1/peers", nil, nil, &out)
}

// Connect dials a peer multiaddr (with /p2p/ID).
func (c *Client) Connect(ctx context.Context, addr string) (ConnectResult, error) {
	var out ConnectResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/connect", nil, ConnectRequest{Addr: addr}, &out)
}

// Disconnect closes connections to a peer.
func (c *Client) Disconnect(ctx context.Context, peerID string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/disconnect", nil, DisconnectRequest{Peer: peerID}, nil)
}

// FindPeer looks a peer up in the DHT.
func (c *Client) FindPeer(ctx context.Context, peerID string) (PeerInfo, error) {
	var out PeerInfo
	return out, c.Do(ctx, http.MethodGet, "/api/v1/dht/find-peer", url.Values{"peer": {peerID}}, nil, &out)
}

// DHTLookup runs one measured DHT lookup: kind is find-peer (key a peer
// ID) or find-providers (key a CID).
func (c *Client) DHTLookup(ctx context.Context, kind, key string) (DHTLookup, error) {
	var out DHTLookup
	return out, c.Do(ctx, http.MethodGet, "/api/v1/dht/lookup", url.Values{"kind": {kind}, "key": {key}}, nil, &out)
}

// RoutingTable returns the DHT routing table.
func (c *Client) RoutingTable(ctx context.Context) (RoutingTable, error) {
	var out RoutingTable
	return out, c.Do(ctx, http.MethodGet, "/api/v1/dht/table", nil, nil, &out)
}

// Shutdown asks the daemon to stop.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/shutdown", nil, nil, nil)
}

// Publish sends data on a pubsub topic.
func (c *Client) Publish(ctx context.Context, topic string, data []byte) error {
	resp, err := c.Raw(ctx, http.MethodPost, "/api/v1/pubsub/pub", url.Values{"topic": {topic}}, bytes.NewReader(data), "application/octet-stream")
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Subscribe streams messages of a topic to fn until ctx ends or fn returns
// false.
func (c *Client) Subscribe(ctx context.Context, topic string, fn func(PubsubMessage) bool) error {
	resp, err := c.Raw(ctx, http.MethodGet, "/api/v1/pubsub/sub", url.Values{"topic": {topic}}, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m PubsubMessage
		if err := dec.Decode(&m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("subscription to %q ended: %w", topic, err)
		}
		if !fn(m) {
			return nil
		}
	}
}

// PubsubTopics lists the topics this node is subscribed to.
func (c *Client) PubsubTopics(ctx context.Context) ([]string, error) {
	var out []string
	return out, c.Do(ctx, http.MethodGet, "/api/v1/pubsub/ls", nil, nil, &out)
}

// PubsubPeers lists the peers seen on a topic.
func (c *Client) PubsubPeers(ctx context.Context, topic string) ([]string, error) {
	var out []string
	return out, c.Do(ctx, http.MethodGet, "/api/v1/pubsub/peers", url.Values{"topic": {topic}}, nil, &out)
}
