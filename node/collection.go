package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockservice"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"go.opentelemetry.io/otel/attribute"

	"github.com/weft-p2p/weft/protocol/collection"
	"github.com/weft-p2p/weft/store"
)

// This file runs the collections the node is a member of: the loop doc.go
// of protocol/collection describes, wired to gossipsub, Bitswap and the
// store. collection_api.go holds the operations and the HTTP API.
//
// Per collection the node keeps:
//   - a gossipsub topic, CollectionTopic(ID), carrying heartbeats, heads
//     announcements and heads requests, with a validator that drops
//     malformed messages before they are forwarded; and the direct heads
//     exchange on streams (collection_direct.go) for joins;
//   - the collection's own blocks (descriptor, deltas, snapshots), pinned
//     directly with the name "collection-block:ID";
//   - the items allocated to it, pinned recursively with the name
//     "collection:ID". A pin with any other name (the user's own, or
//     another collection's) is never removed by a collection; an item the
//     user pinned already counts as held;
//   - a record in the datastore (ID, local name, leaving) so that a
//     restart rejoins it.
//
// Goroutines: one loop per node (collections.loop) that ticks every
// collection.tick_interval, or at once when kicked; per collection one
// reader of the topic, at most one Sync at a time, and one goroutine per
// pin or unpin (collection.pin_concurrency of them work at once). Every
// one stops on leave or Close, and Close waits for them.

// CollectionTopic is the gossipsub topic of a collection.
func CollectionTopic(id cid.Cid) string { return "/weft/collection/1/" + id.String() }

// CollectionItemPinName is the pin name of the items a collection holds on
// this node.
func CollectionItemPinName(id cid.Cid) string { return "collection:" + id.String() }

// CollectionBlockPinName is the pin name of a collection's own blocks.
func CollectionBlockPinName(id cid.Cid) string { return "collection-block:" + id.String() }

const collectionDSPrefix = "/weft/collection/joined/"

func collectionDSKey(id cid.Cid) datastore.Key {
	return datastore.NewKey(collectionDSPrefix + id.String())
}

// Errors of the collection operations.
var (
	// ErrNoCollection: the node is not a member of the named collection.
	ErrNoCollection = errors.New("no such collection")
	// ErrCollectionName: the local name is taken or not usable.
	ErrCollectionName = errors.New("bad collection name")
)

// CollectionConfig times the collections this node is a member of. A zero
// field means its default (so a config.toml written before the section
// existed works unchanged).
type CollectionConfig struct {
	TickInterval        Duration `toml:"tick_interval" comment:"How often each collection's loop runs (clock, pins to make or release, fetches). 0: 1s."`
	HeartbeatInterval   Duration `toml:"heartbeat_interval" comment:"How often this member publishes a signed heartbeat on each collection's topic. 0: 10s."`
	HeartbeatRate       int      `toml:"heartbeat_rate" comment:"Heartbeats per second a member takes from one collection at most: with more than heartbeat_rate x heartbeat_interval members, each heartbeats every members/heartbeat_rate seconds and says so, and suspect_after and grace_period stretch to match. 0: 20."`
	SuspectAfter        Duration `toml:"suspect_after" comment:"A member unheard this long no longer counts as a copy (its items show under-replicated). 0: 3 x heartbeat_interval."`
	GracePeriod         Duration `toml:"grace_period" comment:"A member unheard this long loses its allocation and its items move to others. Members of a collection should agree on it. 0: 60s."`
	RebroadcastInterval Duration `toml:"rebroadcast_interval" comment:"How often a collection's heads are announced even when unchanged. 0: 30s."`
	SnapshotThreshold   int      `toml:"snapshot_threshold" comment:"Deltas kept since the last snapshot at which a writer folds them into a new one. 0: 1000."`
	GCDelay             Duration `toml:"gc_delay" comment:"How long deltas folded into a snapshot stay pinned, for members still fetching them. 0: 10m."`
	PinRetry            Duration `toml:"pin_retry" comment:"Wait before an item pin that failed is tried again. 0: 30s."`
	FetchTimeout        Duration `toml:"fetch_timeout" comment:"A fetch of collection blocks (deltas, snapshots, the descriptor on join) gives up when no block arrives for this long. 0: 30s."`
	PinConcurrency      int      `toml:"pin_concurrency" comment:"Item pins and unpins carried out at once, over all collections. 0: 8."`
	MaxClaims           int      `toml:"max_claims" comment:"Blocks one member's heads announcements may have this node fetch at once; a block not fetched within 4 x fetch_timeout halves that member's budget. 0: 256."`
	AnswerInterval      Duration `toml:"answer_interval" comment:"A heads request from one member is answered at most this often. Requests from non-members are never answered. 0: 2s."`
	AnswerDelay         Duration `toml:"answer_delay" comment:"Longest random wait before answering a heads request; an identical answer from another member meanwhile cancels it. 0: 500ms."`
}

// DefaultCollectionConfig returns the defaults of CollectionConfig. The
// protocol's settings are collection.DefaultConfig's (defined there, once);
// the others are the node's own.
func DefaultCollectionConfig() CollectionConfig {
	p := collection.DefaultConfig()
	return CollectionConfig{
		TickInterval:        Duration(time.Second),
		HeartbeatInterval:   Duration(p.HeartbeatInterval),
		HeartbeatRate:       p.HeartbeatRate,
		SuspectAfter:        Duration(p.SuspectAfter),
		GracePeriod:         Duration(p.GracePeriod),
		RebroadcastInterval: Duration(p.RebroadcastInterval),
		SnapshotThreshold:   p.SnapshotThreshold,
		GCDelay:             Duration(p.GCDelay),
		PinRetry:            Duration(p.PinRetry),
		FetchTimeout:        Duration(30 * time.Second),
		PinConcurrency:      8,
		MaxClaims:           p.MaxClaims,
		AnswerInterval:      Duration(p.AnswerInterval),
		AnswerDelay:         Duration(p.AnswerDelay),
	}
}

func (c CollectionConfig) withDefaults() CollectionConfig {
	d := DefaultCollectionConfig()
	set := func(v *Duration, def Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&c.TickInterval, d.TickInterval)
	set(&c.HeartbeatInterval, d.HeartbeatInterval)
	set(&c.SuspectAfter, 3*c.HeartbeatInterval)
	set(&c.GracePeriod, d.GracePeriod)
	set(&c.RebroadcastInterval, d.RebroadcastInterval)
	set(&c.GCDelay, d.GCDelay)
	set(&c.PinRetry, d.PinRetry)
	set(&c.FetchTimeout, d.FetchTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.HeartbeatRate == 0 {
		c.HeartbeatRate = d.HeartbeatRate
	}
	if c.PinConcurrency == 0 {
		c.PinConcurrency = d.PinConcurrency
	}
	if c.MaxClaims == 0 {
		c.MaxClaims = d.MaxClaims
	}
	set(&c.AnswerInterval, d.AnswerInterval)
	set(&c.AnswerDelay, d.AnswerDelay)
	return c
}

// protocol returns the protocol's view of the settings.
func (c CollectionConfig) protocol() collection.Config {
	c = c.withDefaults()
	return collection.Config{
		HeartbeatInterval:   c.HeartbeatInterval.D(),
		HeartbeatRate:       c.HeartbeatRate,
		SuspectAfter:        c.SuspectAfter.D(),
		GracePeriod:         c.GracePeriod.D(),
		RebroadcastInterval: c.RebroadcastInterval.D(),
		SnapshotThreshold:   c.SnapshotThreshold,
		GCDelay:             c.GCDelay.D(),
		PinRetry:            c.PinRetry.D(),
		MaxClaims:           c.MaxClaims,
		ClaimTimeout:        4 * c.FetchTimeout.D(),
		AnswerInterval:      c.AnswerInterval.D(),
		AnswerDelay:         c.AnswerDelay.D(),
		// The topic's messages reach Authorize and HandleMessage through
		// gossipsub, which verifies each one's signature by its author
		// (p2p: strict signature verification).
		SenderSigned: true,
	}
}

// validate returns every problem of the section, keyed like Config.Validate.
func (c CollectionConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("collection.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	for _, f := range []struct {
		key string
		v   Duration
	}{
		{"tick_interval", c.TickInterval}, {"heartbeat_interval", c.HeartbeatInterval},
		{"suspect_after", c.SuspectAfter}, {"grace_period", c.GracePeriod},
		{"rebroadcast_interval", c.RebroadcastInterval}, {"gc_delay", c.GCDelay},
		{"pin_retry", c.PinRetry}, {"fetch_timeout", c.FetchTimeout},
		{"answer_interval", c.AnswerInterval}, {"answer_delay", c.AnswerDelay},
	} {
		if f.v < 0 {
			bad(f.key, "must not be negative")
		}
	}
	if c.SnapshotThreshold < 0 {
		bad("snapshot_threshold", "must not be negative")
	}
	if c.PinConcurrency < 0 {
		bad("pin_concurrency", "must not be negative")
	}
	if c.HeartbeatRate < 0 {
		bad("heartbeat_rate", "must not be negative")
	}
	if c.MaxClaims < 0 {
		bad("max_claims", "must not be negative")
	}
	if len(errs) > 0 {
		return errs
	}
	if err := c.protocol().Validate(); err != nil {
		// The protocol names its fields; say which keys they are.
		msg := strings.NewReplacer("SuspectAfter", "suspect_after", "HeartbeatInterval", "heartbeat_interval",
			"GracePeriod", "grace_period").Replace(err.Error())
		errs = append(errs, fmt.Errorf("collection: %s", msg))
	}
	return errs
}

// joinedRecord is what the datastore keeps of a joined collection.
type joinedRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Leaving bool      `json:"leaving,omitempty"`
	Joined  time.Time `json:"joined"`
}

// collections is the node's set of joined collections and their loop.
type collections struct {
	n    *Node
	log  *slog.Logger     // subsystem "collection"
	cfg  CollectionConfig // with defaults
	pcfg collection.Config

	mu     sync.Mutex // guards byID and every member's name and leaving
	byID   map[string]*member
	opMu   sync.Mutex // serialises create, join and leave
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}
	pinSem chan struct{}

	auth authCounters // collection_auth.go
}

// member is this node's membership of one collection.
type member struct {
	cs        *collections
	c         *collection.Collection
	id        cid.Cid
	topicName string
	topic     *pubsub.Topic
	sub       *pubsub.Subscription

	name      string // guarded by cs.mu
	leaving   bool   // guarded by cs.mu
	finishing bool   // guarded by cs.mu: finishLeave started

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // reader, sync, pins

	stepMu  sync.Mutex // held by step and by stop
	stopped bool

	// Loop state, touched only under stepMu.
	nextBeat, nextAnn, nextCheck time.Time
	nextRequest                  time.Time
	lastHeads                    string
	peers                        map[peer.ID]struct{}

	heardMu sync.Mutex
	heard   map[peer.ID]time.Time // last message from each peer, under heardMu

	// The join's direct asks (collection_direct.go); done, until and asked
	// under stepMu.
	join struct {
		done               bool
		until              time.Time
		asked              map[peer.ID]struct{}
		answered, inflight atomic.Int32
	}

	answer   chan time.Duration // collection_auth.go: answers to schedule
	reported collection.Stats   // the protocol's counts already added to cs.auth; under stepMu

	fetch    fetches
	checking atomic.Bool // checkPins runs
	request  atomic.Bool // publish a HeadsRequest at the next step

	stats struct {
		badMessages, syncs, syncErrors, pins, pinFailures, unpins, snapshots atomic.Uint64
		requests, directAsks, directFailures                                 atomic.Uint64
		mu                                                                   sync.Mutex
		lastSyncErr, lastPinErr                                              string
	}
}

func newCollections(n *Node) *collections {
	cfg := n.cfg.Collection.withDefaults()
	cs := &collections{
		n:      n,
		log:    n.log.With("subsystem", "collection"),
		cfg:    cfg,
		pcfg:   cfg.protocol(),
		byID:   map[string]*member{},
		kick:   make(chan struct{}, 1),
		pinSem: make(chan struct{}, cfg.PinConcurrency),
	}
	cs.ctx, cs.cancel = context.WithCancel(context.Background())
	return cs
}

// startCollections rejoins the collections recorded in the datastore and
// starts the loop. A collection that cannot be reopened is logged and
// skipped (its record stays for the next start).
func startCollections(ctx context.Context, n *Node) *collections {
	cs := newCollections(n)
	n.net.Host.SetStreamHandler(collection.HeadsProtocolID, cs.serveHeads)
	recs, err := cs.records(ctx)
	if err != nil {
		cs.log.Error("collections: read joined collections", "err", err)
	}
	if len(recs) > 0 {
		byName, err := cs.pinsByName(ctx)
		if err != nil {
			cs.log.Error("collections: list pins", "err", err)
		}
		for _, rec := range recs {
			id, err := cid.Decode(rec.ID)
			if err != nil {
				cs.log.Error("collections: bad record", "id", rec.ID, "err", err)
				continue
			}
			desc, err := cs.localDescriptor(ctx, id)
			if err != nil {
				cs.log.Error("collections: rejoin", "id", id, "err", err)
				continue
			}
			if _, err := cs.open(ctx, desc, rec, byName); err != nil {
				cs.log.Error("collections: rejoin", "id", id, "err", err)
			}
		}
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		cs.loop()
	}()
	return cs
}

// close stops the loop and every collection, and waits for their
// goroutines. Memberships stay recorded: a restart rejoins them.
func (cs *collections) close() {
	cs.n.net.Host.RemoveStreamHandler(collection.HeadsProtocolID)
	cs.cancel()
	cs.wg.Wait()
	for _, m := range cs.list() {
		m.stop()
	}
}

func (cs *collections) records(ctx context.Context) ([]joinedRecord, error) {
	res, err := cs.n.store.Datastore().Query(ctx, query.Query{Prefix: collectionDSPrefix})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []joinedRecord
	for r := range res.Next() {
		if r.Error != nil {
			return out, r.Error
		}
		var rec joinedRecord
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			cs.log.Error("collections: bad record", "key", r.Key, "err", err)
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}

func (cs *collections) saveRecord(ctx context.Context, id cid.Cid, rec joinedRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := cs.n.store.Datastore().Put(ctx, collectionDSKey(id), b); err != nil {
		return fmt.Errorf("record collection %s: %w", id, err)
	}
	return nil
}

// pinsByName groups the pins by name.
func (cs *collections) pinsByName(ctx context.Context) (map[string][]cid.Cid, error) {
	pins, err := cs.n.store.Pins().List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]cid.Cid{}
	for _, p := range pins {
		if strings.HasPrefix(p.Name, "collection") {
			out[p.Name] = append(out[p.Name], p.Cid)
		}
	}
	return out, nil
}

// localDescriptor reads a joined collection's descriptor from the store.
func (cs *collections) localDescriptor(ctx context.Context, id cid.Cid) (*collection.Descriptor, error) {
	b, err := cs.n.store.Blockstore().Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read descriptor %s: %w", id, err)
	}
	return decodeDescriptor(id, b.RawData())
}

func decodeDescriptor(id cid.Cid, data []byte) (*collection.Descriptor, error) {
	desc, err := collection.DecodeDescriptor(data)
	if err != nil {
		return nil, fmt.Errorf("collection %s: descriptor: %w", id, err)
	}
	if !desc.ID().Equals(id) {
		return nil, fmt.Errorf("collection %s: descriptor hashes to %s", id, desc.ID())
	}
	return desc, nil
}

func (cs *collections) list() []*member {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]*member, 0, len(cs.byID))
	for _, m := range cs.byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// poke runs the loop soon, without waiting for the next tick.
func (cs *collections) poke() {
	select {
	case cs.kick <- struct{}{}:
	default:
	}
}

// open starts a membership: the replica, loaded from the blocks this node
// pins for it, the topic, and the reader. byName is the pin set by name
// (nil for a collection new to this node).
func (cs *collections) open(ctx context.Context, desc *collection.Descriptor, rec joinedRecord, byName map[string][]cid.Cid) (*member, error) {
	n := cs.n
	id := desc.ID()
	c, err := collection.New(desc, n.repo.Identity, cs.pcfg, time.Now())
	if err != nil {
		return nil, err
	}
	m := &member{cs: cs, c: c, id: id, topicName: CollectionTopic(id), name: rec.Name, leaving: rec.Leaving,
		peers: map[peer.ID]struct{}{}, heard: map[peer.ID]time.Time{}, answer: make(chan time.Duration, 1),
		fetch: fetches{inflight: map[string]struct{}{}, failed: map[string]failedFetch{}}}
	// The collection's blocks, in any order; the descriptor is not one.
	bstore := n.store.Blockstore()
	for _, bc := range byName[CollectionBlockPinName(id)] {
		if bc.Equals(id) {
			continue
		}
		b, err := bstore.Get(ctx, bc)
		if err != nil {
			cs.log.Warn("collection: pinned block missing", "collection", id, "block", bc, "err", err)
			continue
		}
		if _, err := c.AddBlock(b); err != nil {
			cs.log.Warn("collection: stored block refused", "collection", id, "block", bc, "err", err)
		}
	}
	// Unpin what the replica no longer keeps: garbage whose timer the
	// restart lost, and blocks it refused or found covered.
	live := map[string]bool{id.KeyString(): true}
	for _, bc := range c.Blocks() {
		live[bc.KeyString()] = true
	}
	c.TakeGarbage()
	var stale []cid.Cid
	for _, bc := range byName[CollectionBlockPinName(id)] {
		if !live[bc.KeyString()] {
			stale = append(stale, bc)
		}
	}
	m.ctx, m.cancel = context.WithCancel(cs.ctx)
	m.dropBlocks(stale)
	c.RestorePins(byName[CollectionItemPinName(id)])
	if rec.Leaving {
		c.Leave()
	}

	if err := n.net.PubSub.RegisterTopicValidator(m.topicName, m.validate); err != nil {
		m.cancel()
		return nil, fmt.Errorf("collection %s: topic validator: %w", id, err)
	}
	m.topic, err = n.topic(m.topicName)
	if err == nil {
		m.sub, err = m.topic.Subscribe(pubsub.WithBufferSize(4096))
	}
	if err != nil {
		_ = n.net.PubSub.UnregisterTopicValidator(m.topicName)
		m.cancel()
		return nil, fmt.Errorf("collection %s: subscribe: %w", id, err)
	}
	// Ask a few topic peers for their heads directly, as they appear.
	m.join.until = time.Now().Add(joinAskFor)
	m.join.asked = map[peer.ID]struct{}{}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.read()
	}()
	go func() {
		defer m.wg.Done()
		m.answerLoop()
	}()
	cs.mu.Lock()
	cs.byID[id.KeyString()] = m
	cs.mu.Unlock()
	cs.poke()
	return m, nil
}

// stop ends the membership's goroutines and waits for them. It does not
// touch the datastore or the pins.
func (m *member) stop() {
	m.stepMu.Lock()
	if m.stopped {
		m.stepMu.Unlock()
		return
	}
	m.stopped = true
	m.cancel()
	m.stepMu.Unlock()
	m.sub.Cancel()
	m.wg.Wait()
	_ = m.cs.n.net.PubSub.UnregisterTopicValidator(m.topicName)
}

// read hands every topic message to the replica and publishes its replies.
func (m *member) read() {
	self := m.cs.n.ID()
	for {
		msg, err := m.sub.Next(m.ctx)
		if err != nil {
			return
		}
		from := msg.GetFrom()
		if from == self {
			continue
		}
		// The first message from a peer after a silence proves the path
		// from it works again (gossipsub may drop what is published to a
		// peer in its first second back): ask for heads now, so that its
		// answer, which takes that path, brings what was missed. A peer
		// never heard before is not asked: a newcomer asks the members
		// (its join), and whatever it holds that they lack it announces.
		now := time.Now()
		m.heardMu.Lock()
		last, ok := m.heard[from]
		m.heard[from] = now
		m.heardMu.Unlock()
		if ok && now.Sub(last) > m.c.Silence() {
			m.request.Store(true)
			m.cs.poke()
		}
		if len(msg.Data) > 0 && msg.Data[0] == collection.KindHeartbeat {
			continue // the validator took it (it makes its sender a member)
		}
		m.c.Advance(now)
		reply, err := m.c.HandleMessage(from, msg.Data)
		if err != nil {
			if !errors.Is(err, collection.ErrRateLimited) {
				m.stats.badMessages.Add(1)
			}
			m.cs.log.Debug("collection: message refused", "collection", m.id, "from", from, "err", err)
			continue
		}
		if reply.Answer {
			m.scheduleAnswer(reply.Delay)
		}
		if len(msg.Data) > 0 && msg.Data[0] == collection.KindHeads {
			m.cs.poke() // fetch what it names now, not at the next tick
		}
	}
}

func (m *member) publish(data []byte) {
	if err := m.topic.Publish(m.ctx, data); err != nil && m.ctx.Err() == nil {
		m.cs.log.Debug("collection: publish", "collection", m.id, "err", err)
	}
}

// loop runs every collection each tick_interval, and at once when kicked
// (a heads message arrived, a write or a sync finished). A kicked step
// only announces heads and starts fetches; the tick also advances the
// replica's clock, heartbeats, pins and unpins.
//
// With no collection the ticker is stopped, so an idle node without
// collections does not wake for them; adding one pokes the loop.
func (cs *collections) loop() {
	t := &lazyTicker{every: cs.cfg.TickInterval.D()}
	defer t.Stop()
	for {
		tick := t.C(cs.count() > 0)
		full := false
		select {
		case <-cs.ctx.Done():
			return
		case <-tick:
			full = true
		case <-cs.kick:
		}
		now := time.Now()
		for _, m := range cs.list() {
			m.step(now, full)
		}
	}
}

// count is the number of collections this node is a member of.
func (cs *collections) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.byID)
}

func (m *member) step(now time.Time, full bool) {
	m.stepMu.Lock()
	defer m.stepMu.Unlock()
	if m.stopped {
		return
	}
	cs, c := m.cs, m.c
	var cur []peer.ID // the topic's peers, asked of gossipsub once a step
	if full {
		c.Tick(now)
		m.reportAuth()
		// A member back on the topic after a silence may have heads we
		// lack (it reconnected after a partition): ask it directly at
		// once rather than wait for its rebroadcast. A peer new to us is
		// a newcomer: it asks us (askJoin).
		cur = cs.n.net.PubSub.ListPeers(m.topicName)
		silence := c.Silence()
		next := make(map[peer.ID]struct{}, len(cur))
		for _, p := range cur {
			next[p] = struct{}{}
			if _, ok := m.peers[p]; ok {
				continue
			}
			m.heardMu.Lock()
			last, heard := m.heard[p]
			m.heardMu.Unlock()
			if heard && now.Sub(last) > silence {
				m.ask(p, false)
			}
		}
		m.peers = next
	}
	if !m.join.done {
		if !full {
			cur = cs.n.net.PubSub.ListPeers(m.topicName)
		}
		m.askJoin(now, cur)
	}
	// The first heartbeat goes out at once, before any request or heads:
	// members take heads and requests only from members they heard.
	first := m.nextBeat.IsZero()
	if (full || first) && !now.Before(m.nextBeat) {
		if first {
			m.nextRequest = now.Add(100 * time.Millisecond)
		}
		if hb, err := c.Heartbeat(); err == nil {
			m.publish(hb)
		} else {
			cs.log.Warn("collection: heartbeat", "collection", m.id, "err", err)
		}
		m.nextBeat = now.Add(c.HeartbeatEvery())
	}
	// A request or an announcement another member just sent alike is not
	// sent again (RequestHeard, HeadsHeard): with every member asking when
	// it hears a member again after a silence, and announcing the heads
	// each write gives it, the topic carried a message per member for each.
	if !now.Before(m.nextRequest) && m.request.Swap(false) {
		if !c.RequestHeard() {
			m.publish(c.HeadsRequest())
			m.stats.requests.Add(1)
		}
		m.nextRequest = now.Add(250 * time.Millisecond)
	}
	// Empty heads claim nothing: a newcomer with no state stays silent.
	if h := c.Heads(); !first && !c.HeadsEmpty() && (string(h) != m.lastHeads || !now.Before(m.nextAnn)) {
		if !c.HeadsHeard() {
			m.publish(h)
		}
		m.lastHeads = string(h)
		m.nextAnn = now.Add(cs.cfg.RebroadcastInterval.D())
	}
	m.startSync(now)
	if !full {
		return
	}
	if c.ShouldSnapshot() {
		if _, err := m.snapshot(m.ctx); err != nil {
			cs.log.Warn("collection: snapshot", "collection", m.id, "err", err)
		}
	}
	for _, a := range c.Plan() {
		m.startAction(a)
	}
	if g := c.TakeGarbage(); len(g) > 0 {
		m.dropBlocks(g)
	}
	if !now.Before(m.nextCheck) && m.checking.CompareAndSwap(false, true) {
		m.nextCheck = now.Add(cs.cfg.RebroadcastInterval.D())
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer m.checking.Store(false)
			m.checkPins()
		}()
	}
	if c.Released() {
		cs.mu.Lock()
		finish := m.leaving && !m.finishing
		m.finishing = m.finishing || finish
		cs.mu.Unlock()
		if finish {
			// Outside the step: finishing waits for this member's goroutines.
			cs.wg.Add(1)
			go func() {
				defer cs.wg.Done()
				cs.finishLeave(m)
				cs.log.Info("collection: left", "collection", m.id)
			}()
		}
	}
}

// maxSyncs bounds the Syncs one collection runs at once.
const maxSyncs = 4

// fetches is what the member's Syncs ask of the block exchange: the blocks
// in flight, and the blocks no one sent, each with the time it may be
// asked again. A block is in at most one Sync's request at a time, so a
// block no one has (a head a peer announced and then lost, or made up)
// delays nothing else: later Syncs fetch around it, and it is asked again
// only after a back-off (fetch_timeout, doubling up to 5 minutes).
type fetches struct {
	mu       sync.Mutex
	running  int
	inflight map[string]struct{}
	failed   map[string]failedFetch
}

type failedFetch struct {
	until time.Time
	tries int
}

// shouldSync reports whether a new Sync would ask for something: a missing
// block neither in flight nor backing off, with fewer than maxSyncs
// running.
func (f *fetches) shouldSync(missing []cid.Cid, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running >= maxSyncs || len(missing) == 0 {
		return false
	}
	if len(f.failed) > 4*len(missing)+64 { // forget blocks no longer wanted
		want := make(map[string]struct{}, len(missing))
		for _, c := range missing {
			want[c.KeyString()] = struct{}{}
		}
		for k := range f.failed {
			if _, ok := want[k]; !ok {
				delete(f.failed, k)
			}
		}
	}
	for _, c := range missing {
		k := c.KeyString()
		if _, ok := f.inflight[k]; ok {
			continue
		}
		if r, ok := f.failed[k]; ok && now.Before(r.until) {
			continue
		}
		return true
	}
	return false
}

// claim returns the cids this Sync may ask for and marks them in flight.
func (f *fetches) claim(cids []cid.Cid, now time.Time) []cid.Cid {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := cids[:0:0]
	for _, c := range cids {
		k := c.KeyString()
		if _, ok := f.inflight[k]; ok {
			continue
		}
		if r, ok := f.failed[k]; ok && now.Before(r.until) {
			continue
		}
		f.inflight[k] = struct{}{}
		out = append(out, c)
	}
	return out
}

// release ends a request: blocks not received back off. It returns how
// many were not received.
func (f *fetches) release(asked []cid.Cid, got map[string]bool, base time.Duration, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	missed := 0
	for _, c := range asked {
		k := c.KeyString()
		delete(f.inflight, k)
		if got[k] {
			delete(f.failed, k)
			continue
		}
		missed++
		r := f.failed[k]
		r.tries++
		wait := base << min(r.tries-1, 16)
		if wait > 5*time.Minute || wait <= 0 {
			wait = 5 * time.Minute
		}
		r.until = now.Add(wait)
		f.failed[k] = r
	}
	return missed
}

// startSync fetches what the replica is missing in a new Sync, when that
// would ask for anything.
func (m *member) startSync(now time.Time) {
	f := &m.fetch
	if !f.shouldSync(m.c.Missing(), now) {
		return
	}
	f.mu.Lock()
	f.running++
	f.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.sync()
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
		m.cs.poke()
	}()
}

// sync runs Sync over the blockservice. Blocks are written through a store
// session, so GC keeps them until the live ones are pinned.
func (m *member) sync() {
	n := m.cs.n
	sess := n.store.NewSession()
	defer sess.Close()
	bs := blockservice.New(sess.Blockstore(), n.content.x)
	idle := m.cs.cfg.FetchTimeout.D()
	getter := collection.BlockGetterFunc(func(ctx context.Context, cids []cid.Cid) <-chan blocks.Block {
		ask := m.fetch.claim(cids, time.Now())
		if len(ask) == 0 {
			ch := make(chan blocks.Block)
			close(ch)
			return ch
		}
		return getManyIdle(ctx, bs, ask, idle, func(got map[string]bool) {
			if missed := m.fetch.release(ask, got, idle, time.Now()); missed > 0 && m.ctx.Err() == nil {
				m.stats.syncErrors.Add(1)
				msg := fmt.Sprintf("%d of %d blocks not received within %v (asked again later)", missed, len(ask), idle)
				m.stats.mu.Lock()
				m.stats.lastSyncErr = msg
				m.stats.mu.Unlock()
				m.cs.log.Debug("collection: fetch", "collection", m.id, "err", msg)
			}
		})
	})
	ctx, span := n.startSpan(m.ctx, "weft.collection.sync", attribute.String("collection", m.id.String()),
		attribute.Int("missing", len(m.c.Missing())))
	res, _ := m.c.Sync(ctx, getter) // what it could not fetch is counted above
	span.SetAttributes(attribute.Int("kept", len(res.Keep)), attribute.Int("rejected", len(res.Rejected)))
	span.End()
	m.stats.syncs.Add(1)
	m.keepBlocks(sess, res.Keep)
	for _, r := range res.Rejected {
		m.cs.log.Info("collection: block rejected", "collection", m.id, "block", r.Cid, "err", r.Err)
	}
}

// getManyIdle asks the blockservice for cids at once and gives up when no
// block arrived for idle (BlockGetter requires a bound). done is called
// with the CIDs received, before the channel closes.
func getManyIdle(ctx context.Context, bs blockservice.BlockGetter, cids []cid.Cid, idle time.Duration, done func(got map[string]bool)) <-chan blocks.Block {
	ctx, cancel := context.WithCancel(ctx)
	in := bs.GetBlocks(ctx, cids)
	out := make(chan blocks.Block, 64)
	go func() {
		got := make(map[string]bool, len(cids))
		defer close(out)
		defer func() { done(got) }()
		defer cancel()
		t := time.NewTimer(idle)
		defer t.Stop()
		for {
			select {
			case b, ok := <-in:
				if !ok {
					return
				}
				got[b.Cid().KeyString()] = true
				out <- b // the reader (Sync) drains the channel
				t.Reset(idle)
			case <-t.C:
				cancel()
				for range in {
				}
				return
			}
		}
	}()
	return out
}

// keepBlocks pins collection blocks the replica keeps live. sess, if not
// nil, is the session that wrote them (it protects them until pinned).
func (m *member) keepBlocks(sess *store.Session, ids []cid.Cid) {
	if len(ids) == 0 {
		return
	}
	if sess != nil {
		sess.Hold(ids...)
	}
	name := CollectionBlockPinName(m.id)
	pins := m.cs.n.store.Pins()
	for _, id := range ids {
		if err := pins.Add(context.Background(), id, store.Direct, name); err != nil {
			m.cs.log.Warn("collection: pin block", "collection", m.id, "block", id, "err", err)
		}
	}
}

// dropBlocks unpins collection blocks the replica no longer keeps (pins of
// another name stay).
func (m *member) dropBlocks(ids []cid.Cid) {
	name := CollectionBlockPinName(m.id)
	pins := m.cs.n.store.Pins()
	for _, id := range ids {
		if id.Equals(m.id) {
			continue
		}
		p, err := pins.Get(context.Background(), id)
		if err != nil || p.Name != name {
			continue
		}
		if err := pins.Remove(context.Background(), id); err != nil && !errors.Is(err, store.ErrNotPinned) {
			m.cs.log.Warn("collection: unpin block", "collection", m.id, "block", id, "err", err)
		}
	}
}

// storeBlocks writes and pins the blocks of a local write or snapshot.
func (m *member) storeBlocks(ctx context.Context, bs []blocks.Block) error {
	if len(bs) == 0 {
		return nil
	}
	sess := m.cs.n.store.NewSession()
	defer sess.Close()
	if err := sess.Blockstore().PutMany(ctx, bs); err != nil {
		return m.cs.n.explainStoreErr(fmt.Errorf("store collection blocks: %w", err))
	}
	ids := make([]cid.Cid, len(bs))
	for i, b := range bs {
		ids[i] = b.Cid()
	}
	m.keepBlocks(sess, ids)
	m.cs.poke() // announce the new heads
	return nil
}

// snapshot folds the replica into a snapshot and stores it. Called with
// stepMu held or from the API (Snapshot itself is safe either way).
func (m *member) snapshot(ctx context.Context) ([]blocks.Block, error) {
	bs, err := m.c.Snapshot()
	if err != nil {
		return nil, err
	}
	if len(bs) > 0 {
		m.stats.snapshots.Add(1)
	}
	return bs, m.storeBlocks(ctx, bs)
}

// startAction carries out one pin or unpin of Plan in the background and
// reports it.
func (m *member) startAction(a collection.Action) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case m.cs.pinSem <- struct{}{}:
		case <-m.ctx.Done():
			return // closing: the replica goes with it
		}
		defer func() { <-m.cs.pinSem }()
		switch a.Kind {
		case collection.ActionPin:
			err := m.pinItem(a.Item)
			if err != nil {
				m.stats.pinFailures.Add(1)
				m.stats.mu.Lock()
				m.stats.lastPinErr = err.Error()
				m.stats.mu.Unlock()
				m.cs.log.Debug("collection: pin", "collection", m.id, "item", a.Item, "err", err)
			} else {
				m.stats.pins.Add(1)
			}
			m.c.PinDone(a.Item, err)
		case collection.ActionUnpin:
			err := m.unpinItem(a.Item)
			if err == nil {
				m.stats.unpins.Add(1)
			}
			m.c.UnpinDone(a.Item, err)
		}
	}()
}

// pinItem fetches an item and pins it recursively for the collection. An
// item already pinned recursively (by the user, or for another collection)
// counts as held and keeps its pin; a direct pin is made recursive under
// its own name.
func (m *member) pinItem(item cid.Cid) (err error) {
	n := m.cs.n
	// A repair: the replica's plan gave this node an item to hold.
	ctx, span := n.startSpan(m.ctx, "weft.collection.repair", attribute.String("collection", m.id.String()),
		attribute.String("item", item.String()))
	defer func() { endSpan(span, err) }()
	p, err := n.store.Pins().Get(ctx, item)
	name := CollectionItemPinName(m.id)
	switch {
	case err == nil && p.Mode == store.Recursive:
		return nil
	case err == nil:
		name = p.Name
	case !errors.Is(err, store.ErrNotPinned):
		return err
	}
	return n.Pin(ctx, item, true, name)
}

// unpinItem releases an item the collection no longer wants here: only a
// pin this collection made goes, and if another collection this node is a
// member of holds the item, the pin passes to it instead.
func (m *member) unpinItem(item cid.Cid) error {
	n := m.cs.n
	ctx := context.Background() // an unpin is short; finish it even when closing
	p, err := n.store.Pins().Get(ctx, item)
	if errors.Is(err, store.ErrNotPinned) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Name != CollectionItemPinName(m.id) {
		return nil
	}
	if o := m.cs.otherHolder(m, item); o != nil {
		return n.store.Pins().Add(ctx, item, store.Recursive, CollectionItemPinName(o.id))
	}
	return n.Unpin(ctx, item)
}

// otherHolder returns another joined collection that allocates item to
// this node, if any.
func (cs *collections) otherHolder(m *member, item cid.Cid) *member {
	self := cs.n.ID()
	for _, o := range cs.list() {
		if o == m || !o.c.Has(item) {
			continue
		}
		for _, h := range o.c.HoldersOf(item) {
			if h == self {
				return o
			}
		}
	}
	return nil
}

// checkPins forgets items the replica believes pinned whose pin is gone
// (someone ran `weft pin rm`): Plan then pins them again if they are still
// allocated here. The replica's list is read before the store's, so a pin
// that completes meanwhile is not taken for a lost one.
func (m *member) checkPins() {
	held := m.c.Pinned()
	if len(held) == 0 {
		return
	}
	pins, err := m.cs.n.store.Pins().List(m.ctx)
	if err != nil {
		return
	}
	have := make(map[string]struct{}, len(pins))
	for _, p := range pins {
		have[p.Cid.KeyString()] = struct{}{}
	}
	for _, it := range held {
		if _, ok := have[it.KeyString()]; !ok {
			m.cs.log.Info("collection: item pin removed behind its back; pinning again if allocated", "collection", m.id, "item", it)
			m.c.UnpinDone(it, nil)
		}
	}
}

// finishLeave ends a membership: the goroutines stop, the collection's
// pins go (those of its name only) and the record is deleted.
func (cs *collections) finishLeave(m *member) {
	cs.mu.Lock()
	if cs.byID[m.id.KeyString()] == m {
		delete(cs.byID, m.id.KeyString())
	}
	cs.mu.Unlock()
	m.stop()
	ctx := context.Background()
	byName, err := cs.pinsByName(ctx)
	if err != nil {
		cs.log.Warn("collection: leave: list pins", "collection", m.id, "err", err)
	}
	for _, it := range byName[CollectionItemPinName(m.id)] {
		if err := m.unpinItem(it); err != nil {
			cs.log.Warn("collection: leave: unpin", "collection", m.id, "item", it, "err", err)
		}
	}
	m.dropBlocks(byName[CollectionBlockPinName(m.id)])
	if p, err := cs.n.store.Pins().Get(ctx, m.id); err == nil && p.Name == CollectionBlockPinName(m.id) {
		if err := cs.n.store.Pins().Remove(ctx, m.id); err != nil && !errors.Is(err, store.ErrNotPinned) {
			cs.log.Warn("collection: leave: unpin descriptor", "collection", m.id, "err", err)
		}
	}
	if err := cs.n.store.Datastore().Delete(ctx, collectionDSKey(m.id)); err != nil {
		cs.log.Warn("collection: leave: delete record", "collection", m.id, "err", err)
	}
}
