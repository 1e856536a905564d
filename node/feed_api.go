package node

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/feed"
)

func (n *Node) feedRoutes(route func(string, handlerFunc)) {
	route("POST /api/v1/feed/publish", func(w http.ResponseWriter, r *http.Request) (any, error) {
		c, err := queryCID(r)
		if err != nil {
			return nil, err
		}
		return n.PublishFeed(r.Context(), r.URL.Query().Get("key"), c)
	})
	route("GET /api/v1/feed/resolve", func(w http.ResponseWriter, r *http.Request) (any, error) {
		name, err := parseFeedName(r.URL.Query().Get("name"))
		if err != nil {
			return nil, err
		}
		rec, err := n.feeds.m.Resolve(r.Context(), name)
		if err != nil {
			if errors.Is(err, feed.ErrNotFound) {
				return nil, notFound("no record found for feed %s", name)
			}
			return nil, err
		}
		return recordInfo(rec), nil
	})
	route("POST /api/v1/feed/follow", func(w http.ResponseWriter, r *http.Request) (any, error) {
		q := r.URL.Query()
		pin, _ := strconv.ParseBool(q.Get("pin"))
		keep, _ := strconv.ParseBool(q.Get("keep-history"))
		if err := n.FollowFeed(r.Context(), q.Get("name"), feed.FollowOptions{Pin: pin, KeepHistory: keep}); err != nil {
			return nil, err
		}
		name, _ := parseFeedName(q.Get("name"))
		fi, _ := n.feeds.m.Feed(name)
		return api.Feed{Name: name.String(), Following: true, Pin: pin, KeepHistory: keep, Held: recordInfo(fi.Held)}, nil
	})
	route("POST /api/v1/feed/unfollow", func(w http.ResponseWriter, r *http.Request) (any, error) {
		name, err := parseFeedName(r.URL.Query().Get("name"))
		if err != nil {
			return nil, err
		}
		if err := n.feeds.m.Unfollow(r.Context(), name); err != nil {
			return nil, err
		}
		return map[string]string{"unfollowed": name.String()}, nil
	})
	route("GET /api/v1/feed/ls", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return n.Feeds(), nil
	})
	route("GET /api/v1/feed/counters", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return n.FeedCounters(), nil
	})
	route("GET /api/v1/key/ls", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return n.Keys()
	})
	route("POST /api/v1/key/gen", func(w http.ResponseWriter, r *http.Request) (any, error) {
		return n.GenKey(r.URL.Query().Get("name"))
	})
}
