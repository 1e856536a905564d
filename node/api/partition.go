package api

import (
	"context"
	"net/http"
)

// BlockRequest names peers to cut off from, or to let back.
type BlockRequest struct {
	Peers []string `json:"peers"`
}

// Block closes the node's connections to peers and refuses new ones both
// ways until Unblock (testnets use it to partition nodes on loopback).
func (c *Client) Block(ctx context.Context, peers []string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/swarm/block", nil, BlockRequest{Peers: peers}, nil)
}

// Unblock lets peers connect again; it dials nobody.
func (c *Client) Unblock(ctx context.Context, peers []string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/swarm/unblock", nil, BlockRequest{Peers: peers}, nil)
}
