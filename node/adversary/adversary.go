// Package adversary is a malicious weft peer for tests and testnets: a
// libp2p host with a gossipsub router of its own that joins a swarm and
// speaks weft's protocols badly on purpose. It floods collection topics
// with junk heads and heads requests, joins a collection as a member that
// lies, gossips invalid feed records, holds native-exchange streams open
// while reading them slowly, and floods the DHT.
//
// It exists so that the defences against issue 22's attacks are tested
// against one attacker, the same in CI (node's tests) and on a testnet
// (`weft adversary`, the testnet's attack step). Every attack is bounded
// in count and ends with its context; Close stops what is left.
package adversary

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/protocol/collection"
	"github.com/weft-p2p/weft/protocol/exchange"
	"github.com/weft-p2p/weft/protocol/feed"
)

// Options configure a Peer. The zero value listens on a random TCP port
// of 127.0.0.1 in a public swarm, with a fresh key.
type Options struct {
	// Listen lists the multiaddrs to listen on (default
	// /ip4/127.0.0.1/tcp/0).
	Listen []string
	// PSK joins a private swarm (the swarm.key's key); nil: public.
	PSK pnet.PSK
	// Key is the peer's identity (default: a fresh Ed25519 key).
	Key crypto.PrivKey
	// MaxMessageSize is gossipsub's message size limit (default 1 MiB,
	// weft's pubsub.max_message_size).
	MaxMessageSize int
}

// Peer is a malicious peer. Its methods may be called from any goroutine.
type Peer struct {
	h   host.Host
	ps  *pubsub.PubSub
	key crypto.PrivKey
	out *sendCounter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	topics map[string]*pubsub.Topic
	subs   map[string]*pubsub.Subscription
	dhts   []*dht.IpfsDHT
}

// New starts a Peer. Its gossipsub signs messages (as weft requires) but
// scores no one, flood-publishes to every peer on a topic whether or not
// they keep it in their mesh (it ignores being pruned, as an attacker
// would), and queues a whole flood rather than dropping it.
func New(ctx context.Context, o Options) (*Peer, error) {
	if len(o.Listen) == 0 {
		o.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if o.Key == nil {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("adversary key: %w", err)
		}
		o.Key = k
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 1 << 20
	}
	opts := []libp2p.Option{
		libp2p.Identity(o.Key),
		libp2p.ListenAddrStrings(o.Listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	}
	if o.PSK != nil {
		opts = append(opts, libp2p.PrivateNetwork(o.PSK))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("adversary host: %w", err)
	}
	p := &Peer{h: h, key: o.Key, out: newSendCounter(), topics: map[string]*pubsub.Topic{}, subs: map[string]*pubsub.Subscription{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.ps, err = pubsub.NewGossipSub(p.ctx, h,
		pubsub.WithMessageSigning(true),
		pubsub.WithStrictSignatureVerification(true),
		pubsub.WithMaxMessageSize(o.MaxMessageSize),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(4096),
		pubsub.WithRawTracer(p.out))
	if err != nil {
		p.cancel()
		h.Close()
		return nil, fmt.Errorf("adversary gossipsub: %w", err)
	}
	return p, nil
}

// Close stops every attack still running and the host.
func (p *Peer) Close() error {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	for _, s := range p.subs {
		s.Cancel()
	}
	for _, d := range p.dhts {
		d.Close()
	}
	p.mu.Unlock()
	return p.h.Close()
}

// DHT starts a DHT client on the peer's host speaking the DHT protocol
// with prefix (node.LocalDHTPrefix, or a private swarm's prefix): what it
// provides or asks goes to the peers it is connected to. Close stops it.
func (p *Peer) DHT(prefix protocol.ID) (*dht.IpfsDHT, error) {
	d, err := dht.New(p.h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(prefix))
	if err != nil {
		return nil, fmt.Errorf("adversary DHT: %w", err)
	}
	p.mu.Lock()
	p.dhts = append(p.dhts, d)
	p.mu.Unlock()
	return d, nil
}

// ID returns the peer's ID.
func (p *Peer) ID() peer.ID { return p.h.ID() }

// Host returns the peer's libp2p host.
func (p *Peer) Host() host.Host { return p.h }

// PubSub returns the peer's gossipsub router.
func (p *Peer) PubSub() *pubsub.PubSub { return p.ps }

// Connect dials a peer.
func (p *Peer) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if err := p.h.Connect(ctx, ai); err != nil {
		return fmt.Errorf("adversary connect to %s: %w", ai.ID, err)
	}
	return nil
}

func (p *Peer) topic(name string) (*pubsub.Topic, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.topics[name]; ok {
		return t, nil
	}
	t, err := p.ps.Join(name)
	if err != nil {
		return nil, fmt.Errorf("adversary join %s: %w", name, err)
	}
	p.topics[name] = t
	return t, nil
}

// Subscribe subscribes to a topic (so that its victims take the peer into
// their mesh). Subscribing twice returns the same subscription.
func (p *Peer) Subscribe(topic string) (*pubsub.Subscription, error) {
	t, err := p.topic(topic)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.subs[topic]; ok {
		return s, nil
	}
	s, err := t.Subscribe()
	if err != nil {
		return nil, fmt.Errorf("adversary subscribe %s: %w", topic, err)
	}
	p.subs[topic] = s
	// Drain it: a full subscription buffer would slow the router.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			if _, err := s.Next(p.ctx); err != nil {
				return
			}
		}
	}()
	return s, nil
}

// TopicPeers lists the peers the peer sees on a topic.
func (p *Peer) TopicPeers(topic string) []peer.ID { return p.ps.ListPeers(topic) }

// WaitTopicPeers waits until the peer sees every one of ids on topic.
func (p *Peer) WaitTopicPeers(ctx context.Context, topic string, ids ...peer.ID) error {
	for {
		seen := map[peer.ID]bool{}
		for _, q := range p.ps.ListPeers(topic) {
			seen[q] = true
		}
		all := true
		for _, id := range ids {
			all = all && seen[id]
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("adversary: waiting for %d peers on %s: %w", len(ids), topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Publish publishes data on topic (joining it if need be).
func (p *Peer) Publish(ctx context.Context, topic string, data []byte) error {
	t, err := p.topic(topic)
	if err != nil {
		return err
	}
	if err := t.Publish(ctx, data); err != nil {
		return fmt.Errorf("adversary publish on %s: %w", topic, err)
	}
	return nil
}

// Flood publishes n messages made by msg on topic, at most rate a second
// (0: as fast as gossipsub takes them). It stops early when ctx ends.
func (p *Peer) Flood(ctx context.Context, topic string, n int, rate float64, msg func(i int) []byte) error {
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
	}
	for i := range n {
		if tick != nil && i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
		if err := p.Publish(ctx, topic, msg(i)); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

// SentTo returns how many published messages the peer sent to q, and how
// many its queue to q dropped.
func (p *Peer) SentTo(q peer.ID) (sent, dropped int) { return p.out.get(q) }

// RandomCID returns the CID of a random raw block no one has.
func RandomCID() cid.Cid {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	sum, _ := mh.Sum(b, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, sum)
}

// JunkHeadsMessage returns a well-formed heads message for coll naming
// heads random heads no one has (at most collection.MaxHeads), each said
// to be written by author.
func JunkHeadsMessage(coll cid.Cid, author peer.ID, heads int) []byte {
	h := collection.Heads{Collection: coll}
	for i := range min(heads, collection.MaxHeads) {
		h.Heads = append(h.Heads, collection.Link{Cid: RandomCID(), Author: author, Seq: uint64(i + 1)})
	}
	// The wire format wants heads sorted by CID.
	sort.Slice(h.Heads, func(i, j int) bool { return h.Heads[i].Cid.KeyString() < h.Heads[j].Cid.KeyString() })
	return h.Encode()
}

// JunkHeads publishes n heads messages on coll's topic, each naming
// headsPerMsg random heads, at most rate a second (0: no limit): the
// attack that froze a collection's wanted set (issue 22, item 1).
func (p *Peer) JunkHeads(ctx context.Context, coll cid.Cid, n, headsPerMsg int, rate float64) error {
	topic := node.CollectionTopic(coll)
	if err := p.Flood(ctx, topic, n, rate, func(int) []byte { return JunkHeadsMessage(coll, p.ID(), headsPerMsg) }); err != nil {
		return fmt.Errorf("junk heads: %w", err)
	}
	return nil
}

// HeadsRequestFlood publishes n heads requests with random digests on
// coll's topic, at most rate a second (0: no limit): the amplification
// attack of issue 22, item 2.
func (p *Peer) HeadsRequestFlood(ctx context.Context, coll cid.Cid, n int, rate float64) error {
	topic := node.CollectionTopic(coll)
	err := p.Flood(ctx, topic, n, rate, func(int) []byte {
		q := collection.HeadsRequest{Collection: coll}
		_, _ = rand.Read(q.Digest[:])
		return q.Encode()
	})
	if err != nil {
		return fmt.Errorf("heads request flood: %w", err)
	}
	return nil
}

// JoinCollection makes the peer a member of coll that lies: it publishes
// a signed heartbeat at once and then every interval until ctx ends or
// the peer closes, claiming to hold nothing. With leaving set its
// heartbeats say it is leaving, so that members allocate it nothing and
// only its other messages are tested.
func (p *Peer) JoinCollection(ctx context.Context, coll cid.Cid, interval time.Duration, leaving bool) error {
	topic := node.CollectionTopic(coll)
	if _, err := p.Subscribe(topic); err != nil {
		return err
	}
	beat := func() error {
		h := &collection.Heartbeat{Collection: coll, Time: uint64(time.Now().UnixNano()), Leaving: leaving}
		if err := h.Sign(p.key); err != nil {
			return err
		}
		return p.Publish(ctx, topic, h.Encode())
	}
	if err := beat(); err != nil {
		return fmt.Errorf("join collection: %w", err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.ctx.Done():
				return
			case <-t.C:
				_ = beat()
			}
		}
	}()
	return nil
}

// InvalidFeedRecords returns n feed records for the feed name that every
// honest node rejects: half random bytes, half well-formed records with
// ever higher sequence numbers pointing at value, signed by a key that is
// not the feed's (each costs its victims a signature check).
func InvalidFeedRecords(name string, value cid.Cid, n int) ([][]byte, error) {
	forger, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	fn, err := feed.ParseName(name)
	if err != nil {
		return nil, fmt.Errorf("feed name: %w", err)
	}
	out := make([][]byte, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = make([]byte, 64+i%200)
			_, _ = rand.Read(out[i])
			continue
		}
		rec, err := feed.NewRecord(forger, path.FromCid(value), uint64(1_000_000+i), time.Hour, time.Now())
		if err != nil {
			return nil, err
		}
		if _, err := feed.Validate(fn, rec, time.Now()); err == nil {
			return nil, errors.New("a forged feed record validates")
		}
		out[i] = rec
	}
	return out, nil
}

// FeedTopic returns the gossipsub topic of the feed name.
func FeedTopic(name string) (string, error) {
	fn, err := feed.ParseName(name)
	if err != nil {
		return "", fmt.Errorf("feed name: %w", err)
	}
	return feed.Topic(fn), nil
}

// SlowExchange asks victim for root's whole DAG over the native exchange
// on streams streams at once, and reads each answer at 1 KiB every 10 s,
// opening a stream again whenever one is cut off or refused: the
// slot-hogging attack of issue 22, item 4. It returns at once; the
// streams end with ctx or Close.
func (p *Peer) SlowExchange(ctx context.Context, victim peer.ID, root cid.Cid, streams int) {
	for range streams {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil && p.ctx.Err() == nil {
				p.slowRequest(ctx, victim, root)
				select { // a refused or cut stream is opened again, a little later
				case <-ctx.Done():
				case <-p.ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
}

func (p *Peer) slowRequest(ctx context.Context, victim peer.ID, root cid.Cid) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnClose := context.AfterFunc(p.ctx, cancel)
	defer stopOnClose()
	st, err := p.h.NewStream(ctx, victim, exchange.ProtocolID)
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	defer st.Reset()
	if err := exchange.WriteRequest(st, exchange.Request{Wants: []exchange.Want{{Cid: root, Scope: exchange.DAG()}}}); err != nil {
		return
	}
	buf := make([]byte, 1<<10)
	for {
		if _, err := io.ReadFull(st, buf); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}
