package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"go.opentelemetry.io/otel/attribute"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/feed"
	"github.com/weft-p2p/weft/store"
)

// FeedProtocol is the libp2p protocol of feed catch-up requests.
const FeedProtocol = protocol.ID("/weft/feed/latest/1.0.0")

// KeysDir holds the named feed keys of a repo, one file per key (0600).
const KeysDir = "keys"

// SelfKey names the node's own identity key.
const SelfKey = "self"

// keyNameRE is compiled on first use, not at package init, which every CLI
// command would pay for.
var keyNameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
})

// feeds wires the feed logic of protocol/feed to gossipsub, the DHT, the
// exchange and the store.
type feeds struct {
	n   *Node
	m   *feed.Manager
	mu  sync.Mutex
	sub map[string]*pubsub.Subscription

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
	// tracked wakes the loop when a feed is followed or published, so that
	// it starts ticking (it does not tick while there is no feed).
	tracked chan struct{}
}

func newFeeds(n *Node) (*feeds, error) {
	f := &feeds{n: n, sub: map[string]*pubsub.Subscription{}, kick: make(chan struct{}, 1), tracked: make(chan struct{}, 1)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	n.net.Host.SetStreamHandler(FeedProtocol, f.handleStream)
	n.net.Host.SetStreamHandler(feed.FetchProtocolID, f.handleFetchStream)
	m, err := feed.New(f.ctx, feed.Config{
		Self:            n.net.Host.ID(),
		Topics:          f,
		Router:          dhtRouter{n},
		Pinner:          f,
		Exchange:        f,
		Fetcher:         f,
		Store:           kvStore{ds: n.store.Datastore(), prefix: "/weft"},
		MaxRecordSize:   int(n.cfg.Feed.MaxRecordSize),
		FetchTimeout:    n.cfg.Content.FetchTimeout.D() * 10,
		RetryMin:        n.cfg.Feed.RetryMin.D(),
		CatchUpTimeout:  n.cfg.Feed.CatchUpTimeout.D(),
		ResolveInterval: n.cfg.Feed.resolveInterval(),
		Logger:          n.log.With("subsystem", "feed"),
		Tracer:          n.exchangeTracer(),
	})
	if err != nil {
		n.net.Host.RemoveStreamHandler(FeedProtocol)
		n.net.Host.RemoveStreamHandler(feed.FetchProtocolID)
		f.cancel()
		return nil, fmt.Errorf("start feeds: %w", err)
	}
	f.m = m
	// Catch up whenever a peer connects: it may hold records published
	// while this node was away.
	n.net.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.loop()
	}()
	return f, nil
}

// loop ticks the manager (retries) while it tracks a feed, and catches up
// after new connections. A node with no feed does not wake for it.
func (f *feeds) loop() {
	t := &lazyTicker{every: f.n.cfg.Feed.TickInterval.D()}
	defer t.Stop()
	for {
		tick := t.C(f.m.Len() > 0)
		select {
		case <-f.ctx.Done():
			return
		case <-f.tracked:
		case <-tick:
			f.m.Tick()
		case <-f.kick:
			// Let identify and the topic subscriptions settle first.
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := f.m.CatchUpAll(f.ctx); err != nil && f.ctx.Err() == nil {
				f.n.log.Debug("feed catch-up", "err", err)
			}
		}
	}
}

// tracking tells the loop that a feed may have been added.
func (f *feeds) tracking() {
	select {
	case f.tracked <- struct{}{}:
	default:
	}
}

func (f *feeds) close() {
	f.cancel()
	f.wg.Wait()
	if err := f.m.Close(); err != nil {
		f.n.log.Warn("close feeds", "err", err)
	}
	f.n.net.Host.RemoveStreamHandler(FeedProtocol)
	f.n.net.Host.RemoveStreamHandler(feed.FetchProtocolID)
	f.mu.Lock()
	for _, s := range f.sub {
		s.Cancel()
	}
	f.mu.Unlock()
}

// Join implements feed.Topics: it joins the topic with the manager's
// validator (which applies records) and drains the subscription.
func (f *feeds) Join(topic string, validate pubsub.ValidatorEx) error {
	t, err := f.n.topic(topic)
	if err != nil {
		return err
	}
	if err := f.n.net.PubSub.RegisterTopicValidator(topic, validate); err != nil {
		return fmt.Errorf("register validator for %s: %w", topic, err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	f.mu.Lock()
	f.sub[topic] = sub
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			if _, err := sub.Next(f.ctx); err != nil {
				return
			}
		}
	}()
	return nil
}

// Leave implements feed.Topics.
func (f *feeds) Leave(topic string) error {
	f.mu.Lock()
	sub := f.sub[topic]
	delete(f.sub, topic)
	f.mu.Unlock()
	if sub != nil {
		sub.Cancel()
	}
	return f.n.net.PubSub.UnregisterTopicValidator(topic)
}

// Publish implements feed.Topics.
func (f *feeds) Publish(ctx context.Context, topic string, data []byte) error {
	t, err := f.n.topic(topic)
	if err != nil {
		return err
	}
	return t.Publish(ctx, data)
}

func feedPinName(name ipns.Name) string { return "feed:" + name.String() }

// Pin implements feed.Pinner: fetch and pin, labelled with the feed. Its
// span, weft.feed.pin, is a feed delivery on a follower: a new version's
// fetch (and its requests to the providers) below it.
func (f *feeds) Pin(ctx context.Context, name ipns.Name, c cid.Cid) (err error) {
	ctx, span := f.n.startSpan(ctx, "weft.feed.pin", attribute.String("feed", name.String()), attribute.String("cid", c.String()))
	defer func() { endSpan(span, err) }()
	return f.n.Pin(ctx, c, true, feedPinName(name))
}

// Unpin implements feed.Pinner; it leaves pins it did not make.
func (f *feeds) Unpin(ctx context.Context, name ipns.Name, c cid.Cid) error {
	p, err := f.n.store.Pins().Get(ctx, c)
	if errors.Is(err, store.ErrNotPinned) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Name != feedPinName(name) {
		return nil
	}
	return f.n.Unpin(ctx, c)
}

// TopicPeers implements feed.Exchange.
func (f *feeds) TopicPeers(topic string) []peer.ID { return f.n.net.PubSub.ListPeers(topic) }

// Request implements feed.Exchange: one request, one response per stream.
// Feed records are small: a limited (relayed) connection may carry them.
func (f *feeds) Request(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	s, err := f.n.net.Host.NewStream(network.WithAllowLimitedConn(ctx, "weft feed"), p, FeedProtocol)
	if err != nil {
		return nil, fmt.Errorf("open feed stream to %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if _, err := s.Write(req); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send feed request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, err
	}
	resp, err := io.ReadAll(io.LimitReader(s, int64(feed.MaxResponseSize)+1))
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("read feed response: %w", err)
	}
	if len(resp) > feed.MaxResponseSize {
		s.Reset()
		return nil, fmt.Errorf("feed response from %s over %d bytes", p, feed.MaxResponseSize)
	}
	return resp, nil
}

func (f *feeds) handleStream(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := io.ReadAll(io.LimitReader(s, int64(feed.MaxRequestSize)+1))
	if err != nil || len(req) > feed.MaxRequestSize {
		s.Reset()
		return
	}
	resp, err := f.m.HandleRequest(s.Conn().RemotePeer(), req)
	if err != nil {
		s.Reset()
		return
	}
	_, _ = s.Write(resp)
}

// Fetch implements feed.Fetcher: one delimited request and one delimited
// response on a stream of the libp2p fetch protocol (Kubo's IPNS over
// pubsub).
func (f *feeds) Fetch(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	s, err := f.n.net.Host.NewStream(network.WithAllowLimitedConn(ctx, "weft feed"), p, feed.FetchProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open fetch stream to %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := feed.WriteDelimited(s, req); err != nil {
		s.Reset()
		return nil, fmt.Errorf("send fetch request: %w", err)
	}
	_ = s.CloseWrite()
	resp, err := feed.ReadDelimited(bufio.NewReader(s), feed.MaxFetchResponseSize)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("read fetch response from %s: %w", p, err)
	}
	return resp, nil
}

// handleFetchStream answers a fetch request for an IPNS record.
func (f *feeds) handleFetchStream(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := feed.ReadDelimited(bufio.NewReader(io.LimitReader(s, feed.MaxFetchRequestSize+16)), feed.MaxFetchRequestSize)
	if err != nil {
		s.Reset()
		return
	}
	resp, err := f.m.HandleFetch(s.Conn().RemotePeer(), req)
	if err != nil {
		s.Reset()
		return
	}
	if err := feed.WriteDelimited(s, resp); err != nil {
		s.Reset()
	}
}

// FetchIPNSRecord asks p for its record of name over the libp2p fetch
// protocol, as Kubo's IPNS over pubsub does, and returns the raw answer
// decoded but not validated (status and data).
func (n *Node) FetchIPNSRecord(ctx context.Context, p peer.ID, name ipns.Name) (feed.FetchResponse, error) {
	b, err := n.feeds.Fetch(ctx, p, feed.FetchRequest{Identifier: feed.RoutingKey(name)}.Marshal())
	if err != nil {
		return feed.FetchResponse{}, err
	}
	return feed.DecodeFetchResponse(b)
}

// dhtRouter puts and gets IPNS records in the DHT.
type dhtRouter struct{ n *Node }

func (d dhtRouter) PutValue(ctx context.Context, key string, value []byte) error {
	return d.n.net.DHT.PutValue(ctx, key, value)
}

func (d dhtRouter) GetValue(ctx context.Context, key string) ([]byte, error) {
	return d.n.net.DHT.GetValue(ctx, key)
}

// kvStore backs feed.KV with the store's datastore.
type kvStore struct {
	ds     datastore.Batching
	prefix string
}

func (k kvStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := k.ds.Get(ctx, datastore.NewKey(k.prefix+key))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

func (k kvStore) Put(ctx context.Context, key string, value []byte) error {
	return k.ds.Put(ctx, datastore.NewKey(k.prefix+key), value)
}

func (k kvStore) Delete(ctx context.Context, key string) error {
	return k.ds.Delete(ctx, datastore.NewKey(k.prefix+key))
}

// Key returns the private key called name: "self" is the node's identity,
// anything else a key made with GenKey.
func (n *Node) Key(name string) (crypto.PrivKey, error) {
	if name == "" || name == SelfKey {
		return n.repo.Identity, nil
	}
	if !keyNameRE().MatchString(name) {
		return nil, badRequest("bad key name %q (letters, digits, . _ -)", clip(name))
	}
	b, err := readSecret(filepath.Join(n.repo.Path, KeysDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, notFound("no key %q: make it with 'weft key gen %s'", name, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", name, err)
	}
	sk, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("decode key %s: %w", name, err)
	}
	return sk, nil
}

// GenKey makes a new Ed25519 feed key called name.
func (n *Node) GenKey(name string) (api.Key, error) {
	if name == SelfKey || !keyNameRE().MatchString(name) {
		return api.Key{}, badRequest("bad key name %q (letters, digits, . _ -; not %q)", clip(name), SelfKey)
	}
	dir := filepath.Join(n.repo.Path, KeysDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Key{}, fmt.Errorf("create keys dir: %w", err)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil {
		return api.Key{}, &httpError{http.StatusConflict, fmt.Errorf("key %q exists", name)}
	}
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return api.Key{}, fmt.Errorf("generate key: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return api.Key{}, err
	}
	if err := writeFileAtomic(p, b, 0o600); err != nil {
		return api.Key{}, err
	}
	return keyInfo(name, sk)
}

func keyInfo(name string, sk crypto.PrivKey) (api.Key, error) {
	fn, err := feed.NameFromKey(sk.GetPublic())
	if err != nil {
		return api.Key{}, err
	}
	return api.Key{Name: name, Feed: fn.String()}, nil
}

// Keys lists self and the named keys.
func (n *Node) Keys() ([]api.Key, error) {
	self, err := keyInfo(SelfKey, n.repo.Identity)
	if err != nil {
		return nil, err
	}
	out := []api.Key{self}
	ents, err := os.ReadDir(filepath.Join(n.repo.Path, KeysDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	for _, e := range ents {
		if !keyNameRE().MatchString(e.Name()) {
			continue
		}
		sk, err := n.Key(e.Name())
		if err != nil {
			return nil, err
		}
		k, err := keyInfo(e.Name(), sk)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Name < out[1+j].Name })
	return out, nil
}

// PublishFeed publishes c as the next version of the feed of key.
func (n *Node) PublishFeed(ctx context.Context, key string, c cid.Cid) (_ api.FeedRecord, err error) {
	ctx, span := n.startSpan(ctx, "weft.feed.publish", attribute.String("cid", c.String()))
	defer func() { endSpan(span, err) }()
	sk, err := n.Key(key)
	if err != nil {
		return api.FeedRecord{}, err
	}
	began := time.Now()
	rec, err := n.feeds.m.Publish(ctx, sk, path.FromCid(c))
	n.feeds.tracking()
	if err != nil {
		return api.FeedRecord{}, fmt.Errorf("publish: %w", err)
	}
	span.SetAttributes(attribute.String("feed", rec.Name.String()), attribute.Int64("seq", int64(rec.Seq)))
	ri := recordInfo(rec)
	ri.Published = began
	return ri, nil
}

func recordInfo(r feed.Record) api.FeedRecord {
	if r.IsZero() {
		return api.FeedRecord{}
	}
	return api.FeedRecord{Name: r.Name.String(), Seq: r.Seq, CID: r.CID().String(), EOL: r.EOL}
}

func parseFeedName(s string) (ipns.Name, error) {
	name, err := feed.ParseName(s)
	if err != nil {
		return ipns.Name{}, badRequest("bad feed name %q: %v", clip(s), err)
	}
	return name, nil
}

// FollowFeed follows a feed (fetching and pinning each version with pin).
// With wait it returns after the first catch-up (or when ctx ends), else
// as soon as the follow is recorded and the topic joined.
func (n *Node) FollowFeed(ctx context.Context, s string, opts feed.FollowOptions, wait bool) (err error) {
	ctx, span := n.startSpan(ctx, "weft.feed.follow", attribute.String("feed", s), attribute.Bool("pin", opts.Pin))
	defer func() { endSpan(span, err) }()
	name, err := parseFeedName(s)
	if err != nil {
		return err
	}
	defer n.feeds.tracking()
	if !wait {
		_, err = n.feeds.m.StartFollow(ctx, name, opts)
		return err
	}
	return n.feeds.m.Follow(ctx, name, opts)
}

// Feeds lists the feeds this node follows or owns.
func (n *Node) Feeds() []api.Feed {
	out := []api.Feed{}
	for _, fi := range n.feeds.m.List() {
		f := api.Feed{Name: fi.Name.String(), Owned: fi.Owned, Following: fi.Following,
			Pin: fi.Options.Pin, KeepHistory: fi.Options.KeepHistory,
			Held: recordInfo(fi.Held), Pinned: recordInfo(fi.Pinned), Fetching: fi.Fetching}
		if fi.PinErr != nil {
			f.Error = fi.PinErr.Error()
		}
		if fi.Owned && (fi.DHTPending || fi.DHT.Seq > 0) {
			f.DHT = &api.FeedDHT{Seq: fi.DHTSeq, At: fi.DHTAt, LastSeq: fi.DHT.Seq, LastAt: fi.DHT.At, Pending: fi.DHTPending}
			if fi.DHT.Err != nil {
				f.DHT.LastError = fi.DHT.Err.Error()
			}
		}
		out = append(out, f)
	}
	return out
}

// FeedCounters are the feed validation and pin counters.
func (n *Node) FeedCounters() feed.Counters { return n.feeds.m.Counters() }

// HandleFeedRecord runs a record through the same validation as one
// received on the feed's topic from an unknown peer, and returns the
// decision (operators use it through tests and tools to check a record).
func (n *Node) HandleFeedRecord(name ipns.Name, data []byte) feed.Decision {
	return n.feeds.m.HandleMessage(name, "", data)
}

// feedRendezvous is p2p.Config.Rendezvous: a feed's weft topic is found
// through its IPNS topic's DHT rendezvous (the one Kubo advertises), since
// every weft follower joins both; other topics keep their own.
func feedRendezvous(topic string) string {
	if name, err := feed.NameFromTopic(topic); err == nil {
		return feed.IPNSTopic(name)
	}
	return topic
}
