package feed

import (
	"context"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file states what the package needs from the rest of the node. node/
// implements each interface over the real gossipsub, DHT, block store and
// datastore; the tests use in-memory fakes. Every method may be called from
// several goroutines at once and must be safe for that. The Manager never
// calls them with its own lock held, so an implementation may call back
// into the Manager.

// Topics is the gossipsub side of feeds.
type Topics interface {
	// Join makes the node a member of topic: join it, register validate
	// as its topic validator (pubsub.RegisterTopicValidator) and subscribe,
	// draining the subscription (the validator has already applied every
	// record by the time it is delivered). Called when a feed is first
	// followed or published, and by New for every feed restored from the
	// store (so validate may run before New returns). Joining a topic
	// already joined must succeed.
	Join(topic string, validate pubsub.ValidatorEx) error
	// Leave undoes Join. Called by Unfollow for feeds this node does not own.
	Leave(topic string) error
	// Publish sends data on topic. Gossipsub validates a local publish
	// synchronously with the node's own peer ID as sender, which is why
	// Config.Self must be set.
	Publish(ctx context.Context, topic string, data []byte) error
}

// Router is the DHT. Keys are IPNS routing keys ("/ipns/" + binary
// multihash, see RoutingKey); the DHT validates values with boxo's
// ipns.Validator under the "ipns" namespace.
type Router interface {
	PutValue(ctx context.Context, key string, value []byte) error
	// GetValue returns the best record the DHT holds for key.
	GetValue(ctx context.Context, key string) ([]byte, error)
}

// Pinner fetches and pins feed content. Both calls block until done or ctx
// ends.
type Pinner interface {
	// Pin fetches the whole DAG under c (over the exchange if not local) and
	// pins it recursively on behalf of feed. It must be idempotent: the same
	// CID may be pinned again for a later version.
	Pin(ctx context.Context, feed ipns.Name, c cid.Cid) error
	// Unpin drops the pin feed holds on c. Pins that others hold on c (the
	// user, another feed) must stay: label the pins with the feed name, or
	// count references.
	Unpin(ctx context.Context, feed ipns.Name, c cid.Cid) error
}

// Exchange carries catch-up requests to peers: node/ opens a stream of its
// catch-up protocol (e.g. /weft/feed/latest/1.0.0), writes the request,
// reads at most MaxResponseSize bytes of response, and on the other side
// answers with Manager.HandleRequest.
type Exchange interface {
	// TopicPeers returns the peers currently known on topic (pubsub's
	// ListPeers), in any order.
	TopicPeers(topic string) []peer.ID
	// Request sends req to p and returns p's response.
	Request(ctx context.Context, p peer.ID, req []byte) ([]byte, error)
}

// Fetcher speaks the libp2p fetch protocol (FetchProtocolID): node/ opens
// a stream to p, writes req delimited (WriteDelimited), reads at most
// MaxFetchResponseSize bytes of delimited response and returns it; on the
// other side it answers with Manager.HandleFetch.
type Fetcher interface {
	Fetch(ctx context.Context, p peer.ID, req []byte) ([]byte, error)
}

// KV persists feed state: which feeds are followed and owned, the newest
// record held and pinned for each, and the last sequence number used for
// each owned key. node/ backs it with the datastore; keys are short strings
// beginning with "/feed/".
type KV interface {
	// Get returns the value stored under key; found is false if there is none.
	Get(ctx context.Context, key string) (value []byte, found bool, err error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
}

// Clock tells the time. Validity is judged and retry backoff measured with
// it, so tests can drive both.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
