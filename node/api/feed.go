package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// FeedPublish publishes cid as the next version of key's feed ("" or
// "self": the node's own).
func (c *Client) FeedPublish(ctx context.Context, key, cid string) (FeedRecord, error) {
	var out FeedRecord
	return out, c.Do(ctx, http.MethodPost, "/api/v1/feed/publish", url.Values{"key": {key}, "cid": {cid}}, nil, &out)
}

// FeedResolve returns a feed's latest record.
func (c *Client) FeedResolve(ctx context.Context, name string) (FeedRecord, error) {
	var out FeedRecord
	return out, c.Do(ctx, http.MethodGet, "/api/v1/feed/resolve", url.Values{"name": {name}}, nil, &out)
}

// FollowRequest is what a follow asks for.
type FollowRequest struct {
	Pin         bool // fetch and pin each version
	KeepHistory bool // with Pin: keep earlier versions pinned
	// NoWait answers once the follow is recorded and the feed's topic
	// joined, without waiting for the first catch-up (which then runs in
	// the background; 'feed ls' shows what it found).
	NoWait bool
}

// FeedFollow follows a feed.
func (c *Client) FeedFollow(ctx context.Context, name string, r FollowRequest) (Feed, error) {
	var out Feed
	q := url.Values{"name": {name}, "pin": {fmt.Sprint(r.Pin)}, "keep-history": {fmt.Sprint(r.KeepHistory)}}
	if r.NoWait {
		q.Set("wait", "false")
	}
	return out, c.Do(ctx, http.MethodPost, "/api/v1/feed/follow", q, nil, &out)
}

// FeedUnfollow stops following a feed.
func (c *Client) FeedUnfollow(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/feed/unfollow", url.Values{"name": {name}}, nil, nil)
}

// FeedLs lists followed and owned feeds.
func (c *Client) FeedLs(ctx context.Context) ([]Feed, error) {
	var out []Feed
	return out, c.Do(ctx, http.MethodGet, "/api/v1/feed/ls", nil, nil, &out)
}

// KeyGen makes a named feed key.
func (c *Client) KeyGen(ctx context.Context, name string) (Key, error) {
	var out Key
	return out, c.Do(ctx, http.MethodPost, "/api/v1/key/gen", url.Values{"name": {name}}, nil, &out)
}

// KeyLs lists feed keys.
func (c *Client) KeyLs(ctx context.Context) ([]Key, error) {
	var out []Key
	return out, c.Do(ctx, http.MethodGet, "/api/v1/key/ls", nil, nil, &out)
}
