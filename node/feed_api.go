package node

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/feed"
)

func (n *Node) handleFeedPublish(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	return n.PublishFeed(r.Context(), r.URL.Query().Get("key"), c)
}

func (n *Node) handleFeedResolve(w http.ResponseWriter, r *http.Request) (any, error) {
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
}

func (n *Node) handleFeedFollow(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	pin, _ := strconv.ParseBool(q.Get("pin"))
	keep, _ := strconv.ParseBool(q.Get("keep-history"))
	wait := true
	if v := q.Get("wait"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, badRequest("bad wait %q: want true or false", clip(v))
		}
		wait = b
	}
	if err := n.FollowFeed(r.Context(), q.Get("name"), feed.FollowOptions{Pin: pin, KeepHistory: keep}, wait); err != nil {
		return nil, err
	}
	name, _ := parseFeedName(q.Get("name"))
	fi, _ := n.feeds.m.Feed(name)
	return api.Feed{Name: name.String(), Following: true, Pin: pin, KeepHistory: keep, Held: recordInfo(fi.Held)}, nil
}

func (n *Node) handleFeedUnfollow(w http.ResponseWriter, r *http.Request) (any, error) {
	name, err := parseFeedName(r.URL.Query().Get("name"))
	if err != nil {
		return nil, err
	}
	if err := n.feeds.m.Unfollow(r.Context(), name); err != nil {
		return nil, err
	}
	return map[string]string{"unfollowed": name.String()}, nil
}

func (n *Node) handleFeedLs(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.Feeds(), nil
}

func (n *Node) handleFeedCounters(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.FeedCounters(), nil
}

func (n *Node) handleKeyLs(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.Keys()
}

func (n *Node) handleKeyGen(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.GenKey(r.URL.Query().Get("name"))
}
