package feed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
)

// FollowOptions say how a feed is followed.
type FollowOptions struct {
	// Pin fetches and pins each new version. Without it the follower only
	// keeps the newest record (for resolving and for answering catch-ups).
	Pin bool
	// KeepHistory leaves every pinned version pinned; without it a version
	// is unpinned once the next one is pinned, and on Unfollow.
	KeepHistory bool
}

// FeedInfo describes a tracked feed, for `weft feed ls`.
type FeedInfo struct {
	Name      ipns.Name
	Owned     bool
	Following bool
	Options   FollowOptions
	// Held is the newest valid record seen (zero if none).
	Held Record
	// Pinned is the newest version whose content is pinned (zero if none,
	// and always zero without Options.Pin).
	Pinned Record
	// FetchingSeq is the sequence number being fetched, if Fetching.
	Fetching    bool
	FetchingSeq uint64
	// PinErr is the last fetch error, until a later version is pinned.
	PinErr error
	// DHT is how the last DHT put of an owned feed went (zero: none tried
	// yet); DHTSeq and DHTAt are the newest sequence number the DHT took,
	// and when. DHTPending says a put is queued, running or waiting to be
	// retried.
	DHT        DHTPut
	DHTSeq     uint64
	DHTAt      time.Time
	DHTPending bool
}

// Manager holds the state of every feed this node follows or owns.
//
// Concurrency contract: every method is safe to call from any goroutine.
// HandleMessage, HandleRequest, TopicValidator's function, Counters, List,
// Feed and Tick never block on I/O (they verify signatures and take a short
// lock): gossipsub validator goroutines and stream handlers call them.
// Publish, Follow, Unfollow, CatchUp, CatchUpAll and Resolve block on the
// network or the store and honour their context. Fetching and pinning run
// on goroutines the Manager owns, one per feed with work; Close stops them
// and waits.
type Manager struct {
	cfg   Config
	clock Clock
	log   *slog.Logger

	ctx    context.Context // ends at Close; parent of fetches
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	sem    chan struct{} // bounds fetches across feeds

	pubMu sync.Mutex // serializes Publish, so sequence numbers never repeat
	idxMu sync.Mutex // serializes index writes

	mu       sync.Mutex
	closed   bool
	feeds    map[string]*feedState // by string(name.Peer())
	catching map[string]*catchCall // catch-ups in flight, by name

	c counters
}

// feedState is one feed. All fields are guarded by Manager.mu.
type feedState struct {
	name   ipns.Name
	owned  bool
	follow *FollowOptions // nil when not following
	gen    uint64         // bumped when follow changes; a fetch of an older gen is void

	held   *Record
	pinned *Record

	want     *Record            // newest version to fetch next
	retry    *Record            // failed version, tried again by Tick
	fetching *Record            // version being fetched
	cancel   context.CancelFunc // cancels the fetch of fetching
	unpins   []Record           // unpins to run before the next fetch

	failures  int
	nextRetry time.Time
	pinErr    error

	dht dhtState // owned feeds: the background DHT put

	dhtAsked time.Time // when a catch-up or refresh last asked the DHT for the name

	dirtyHeld, dirtyPinned bool
	waiters                []chan struct{} // closed once the worker has run the jobs queued before them
	running                bool            // a worker goroutine owns the jobs
}

func (st *feedState) tracked() bool { return st.owned || st.follow != nil }

func (st *feedState) pinning() bool { return st.follow != nil && st.follow.Pin }

func nameKey(name ipns.Name) string { return string(name.Peer()) }

// New returns a Manager for cfg, restoring the feeds recorded in cfg.Store,
// joining their topics and resuming fetches that had not finished.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:      cfg,
		clock:    cfg.Clock,
		log:      cfg.Logger.With("component", "feed"),
		sem:      make(chan struct{}, cfg.MaxConcurrentFetches),
		feeds:    make(map[string]*feedState),
		catching: make(map[string]*catchCall),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.load(ctx); err != nil {
		m.cancel()
		return nil, err
	}
	var errs []error
	for _, name := range m.trackedNames() {
		if err := m.join(name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.Close()
		return nil, err
	}
	if cfg.ResolveInterval > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.resolveLoop(cfg.ResolveInterval)
		}()
	}
	return m, nil
}

// resolveLoop runs RefreshAll every interval until Close.
func (m *Manager) resolveLoop(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if err := m.RefreshAll(m.ctx); err != nil && m.ctx.Err() == nil {
				m.log.Debug("scheduled resolve", "err", err)
			}
		}
	}
}

// Close stops fetching and waits for the Manager's goroutines. It runs
// once; later calls return nil.
func (m *Manager) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		for _, st := range m.feeds {
			if st.cancel != nil {
				st.cancel()
			}
		}
		m.mu.Unlock()
		m.cancel()
		m.wg.Wait()
		m.flushDirty()
	})
	return nil
}

// flushDirty persists the held and pinned records that changed in memory
// but whose worker stopped, at Close, before it wrote them: a record taken
// just before Close is still the one held after a restart.
func (m *Manager) flushDirty() {
	type write struct {
		key   string
		value []byte // nil: delete
	}
	var ws []write
	m.mu.Lock()
	for _, st := range m.feeds {
		if st.dirtyHeld && st.held != nil && st.tracked() {
			ws = append(ws, write{recordKey(st.name), st.held.Raw})
		}
		if st.dirtyPinned {
			var v []byte
			if st.pinned != nil {
				v = st.pinned.Raw
			}
			ws = append(ws, write{pinnedKey(st.name), v})
		}
		st.dirtyHeld, st.dirtyPinned = false, false
	}
	m.mu.Unlock()
	for _, w := range ws {
		if w.value != nil {
			m.put(w.key, w.value)
		} else {
			m.del(w.key)
		}
	}
}

// Counters returns a snapshot of the counters.
func (m *Manager) Counters() Counters { return m.c.snapshot() }

// Len is the number of feeds the manager tracks (followed or owned): Tick
// has nothing to do while it is 0.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.feeds)
}

// HandleMessage decides on data, a record received for name from peer from
// (on name's topic or otherwise), and applies it if it is valid and newer
// than the record held: the held record advances at once and, for a pinning
// follow, a fetch of its content is started (see the package doc). It never
// blocks on I/O; it is meant to run inside the gossipsub validator. The
// cheap checks come first: a record whose (not yet verified) sequence
// number is not above the held one is ignored as ErrStale without a
// signature check, so replays cost a decoding only.
func (m *Manager) HandleMessage(name ipns.Name, from peer.ID, data []byte) Decision {
	return m.handle(name, from, data)
}

func (m *Manager) handle(name ipns.Name, from peer.ID, data []byte) Decision {
	m.mu.Lock()
	st := m.feeds[nameKey(name)]
	if st == nil || !st.tracked() {
		m.mu.Unlock()
		m.c.count(ErrUnknownFeed)
		return Decision{Verdict: Ignore, Err: ErrUnknownFeed}
	}
	if st.held != nil && bytes.Equal(st.held.Raw, data) {
		rec := *st.held
		m.mu.Unlock()
		if from != "" && from == m.cfg.Self {
			// Our own publish, validated by gossipsub after Publish applied
			// it; Publish does not count it as received.
			return Decision{Verdict: Accept, Record: rec}
		}
		m.c.count(ErrDuplicate)
		return Decision{Verdict: Ignore, Record: rec, Err: ErrDuplicate}
	}
	m.mu.Unlock()

	// The cheap checks come before the signature's: a flood of garbage or
	// of replayed old records costs a decoding each, not a verification.
	u, err := parse(name, data, MaxRecordSize)
	if err == nil && len(data) > m.cfg.MaxRecordSize {
		// Over this node's limit but within the IPNS one: a peer with a
		// larger limit forwards it in good faith, so it is not to blame.
		err = fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), m.cfg.MaxRecordSize)
		m.c.count(err)
		return Decision{Verdict: Ignore, Err: err}
	}
	if err != nil {
		m.c.count(err)
		return Decision{Verdict: verdictOf(err), Err: err}
	}
	m.mu.Lock()
	var heldSeq uint64
	stale := st.held != nil && u.seq <= st.held.Seq
	if stale {
		heldSeq = st.held.Seq
	}
	m.mu.Unlock()
	if stale {
		// Ignored, not rejected: an honest peer forwards a record that
		// lost a race to a newer one. Whether its signature holds does not
		// matter, since it would not be applied either way.
		err := fmt.Errorf("%w: seq %d, holding %d (signature not checked)", ErrStale, u.seq, heldSeq)
		m.c.count(err)
		m.c.staleUnverified.Add(1)
		return Decision{Verdict: Ignore, Err: err}
	}
	return m.verifyApply(u)
}

// offer validates data as a record of name and applies it, counting the
// outcome.
func (m *Manager) offer(name ipns.Name, data []byte) Decision {
	u, err := parse(name, data, m.cfg.MaxRecordSize)
	if err != nil {
		m.c.count(err)
		return Decision{Verdict: verdictOf(err), Err: err}
	}
	return m.verifyApply(u)
}

// verifyApply verifies u and applies it, counting the outcome.
func (m *Manager) verifyApply(u unverified) Decision {
	rec, err := m.verify(u)
	if err != nil {
		m.c.count(err)
		return Decision{Verdict: verdictOf(err), Err: err}
	}
	d := m.apply(rec)
	m.c.count(d.Err)
	return d
}

// verify checks u's signature (and the rest), counting the check.
func (m *Manager) verify(u unverified) (Record, error) {
	m.c.signatureChecks.Add(1)
	return u.verify(m.clock.Now(), true)
}

// apply makes rec, already validated, the held record if it is newer.
func (m *Manager) apply(rec Record) Decision {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.feeds[nameKey(rec.Name)]
	switch {
	case st == nil || !st.tracked():
		return Decision{Verdict: Ignore, Record: rec, Err: ErrUnknownFeed}
	case st.held != nil && bytes.Equal(st.held.Raw, rec.Raw):
		return Decision{Verdict: Ignore, Record: rec, Err: ErrDuplicate}
	case st.held != nil && rec.Seq <= st.held.Seq:
		return Decision{Verdict: Ignore, Record: rec,
			Err: fmt.Errorf("%w: seq %d, holding %d", ErrStale, rec.Seq, st.held.Seq)}
	}
	st.held = &rec
	st.dirtyHeld = true
	if st.pinning() {
		m.wantLocked(st, &rec)
	}
	m.kickLocked(st)
	return Decision{Verdict: Accept, Record: rec}
}

// wantLocked makes rec the next version to fetch, abandoning an older fetch
// in flight.
func (m *Manager) wantLocked(st *feedState, rec *Record) {
	st.want, st.retry = rec, nil
	if st.fetching != nil && st.fetching.Seq < rec.Seq && st.cancel != nil {
		st.cancel()
	}
}

// Follow starts following name with opts, or changes the options of a
// follow. It records the follow, joins the feed's topic, and catches up
// (for up to about twice Config.CatchUpTimeout), returning when the
// catch-up ends or ctx does; finding no record yet is not an error, and a
// catch-up that outlasts ctx goes on in the background. Following with Pin
// needs Config.Pinner.
func (m *Manager) Follow(ctx context.Context, name ipns.Name, opts FollowOptions) error {
	caught, err := m.StartFollow(ctx, name, opts)
	if err != nil {
		return err
	}
	select {
	case <-caught:
	case <-ctx.Done():
	}
	return nil
}

// StartFollow is Follow without the wait: it records the follow and joins
// the feed's topic, starts the catch-up on a goroutine the Manager owns
// (Close ends it), and returns a channel closed when that catch-up ends.
func (m *Manager) StartFollow(ctx context.Context, name ipns.Name, opts FollowOptions) (<-chan struct{}, error) {
	if opts.Pin && m.cfg.Pinner == nil {
		return nil, fmt.Errorf("feed: follow %s with pin: no Pinner configured", name)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	key := nameKey(name)
	st := m.feeds[key]
	if st == nil {
		st = &feedState{name: name}
		m.feeds[key] = st
	}
	newly := !st.tracked()
	old := st.follow
	if old == nil || *old != opts {
		m.refollowLocked(st, &opts)
	}
	m.mu.Unlock()

	if err := m.saveIndex(ctx); err != nil {
		return nil, err
	}
	if newly {
		if err := m.join(name); err != nil {
			return nil, err
		}
	}
	caught := make(chan struct{})
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	m.wg.Add(1) // under mu, with closed false: Close has not begun to wait
	go func() {
		defer m.wg.Done()
		defer close(caught)
		if _, err := m.CatchUp(m.ctx, name); err != nil && !errors.Is(err, ErrNotFound) && m.ctx.Err() == nil {
			m.log.Info("catch-up after follow failed", "feed", name.String(), "err", err)
		}
	}()
	return caught, nil
}

// refollowLocked replaces st's follow options (nil: unfollow), unpinning
// and fetching as the change requires.
func (m *Manager) refollowLocked(st *feedState, opts *FollowOptions) {
	old := st.follow
	st.follow = opts
	st.gen++
	if st.cancel != nil {
		st.cancel()
	}
	st.want, st.retry, st.pinErr, st.failures = nil, nil, nil, 0
	wasPinning := old != nil && old.Pin
	nowPinning := opts != nil && opts.Pin
	if wasPinning && !nowPinning {
		if st.pinned != nil && !old.KeepHistory {
			st.unpins = append(st.unpins, *st.pinned)
		}
		st.pinned = nil
		st.dirtyPinned = true
	}
	if nowPinning && st.held != nil && (st.pinned == nil || st.pinned.Seq < st.held.Seq) {
		st.want = st.held
	}
	m.kickLocked(st)
}

// Unfollow stops following name. Unless the follow kept history, the
// pinned version is unpinned before Unfollow returns; with KeepHistory
// every version stays pinned. A feed this node owns stays tracked (and its
// topic joined); others are forgotten.
func (m *Manager) Unfollow(ctx context.Context, name ipns.Name) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	st := m.feeds[nameKey(name)]
	if st == nil || st.follow == nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s is not followed", ErrUnknownFeed, name)
	}
	m.refollowLocked(st, nil)
	owned := st.owned
	done := make(chan struct{})
	st.waiters = append(st.waiters, done)
	m.kickLocked(st)
	m.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("feed: unfollow %s: %w", name, ctx.Err())
	case <-m.ctx.Done():
		return ErrClosed
	}
	if err := m.saveIndex(ctx); err != nil {
		return err
	}
	if owned {
		return nil
	}
	var errs []error
	if m.cfg.Store != nil {
		for _, k := range []string{recordKey(name), pinnedKey(name)} {
			if err := m.cfg.Store.Delete(ctx, k); err != nil {
				errs = append(errs, fmt.Errorf("feed: unfollow %s: delete %s: %w", name, k, err))
			}
		}
	}
	if m.cfg.Topics != nil {
		for _, topic := range []string{Topic(name), IPNSTopic(name)} {
			if err := m.cfg.Topics.Leave(topic); err != nil {
				errs = append(errs, fmt.Errorf("feed: unfollow %s: leave topic %s: %w", name, topic, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Tick retries failed fetches whose backoff has passed. node/ calls it
// periodically (every few seconds is plenty); it does not block.
func (m *Manager) Tick() {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.feeds {
		if st.retry != nil && st.want == nil && st.fetching == nil && !now.Before(st.nextRetry) {
			st.want, st.retry = st.retry, nil
			m.kickLocked(st)
		}
		m.retryDHTLocked(st, now)
	}
}

// Feed describes one tracked feed.
func (m *Manager) Feed(name ipns.Name) (FeedInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.feeds[nameKey(name)]
	if st == nil || !st.tracked() {
		return FeedInfo{}, false
	}
	return st.info(), true
}

// List describes every tracked feed, sorted by name.
func (m *Manager) List() []FeedInfo {
	m.mu.Lock()
	out := make([]FeedInfo, 0, len(m.feeds))
	for _, st := range m.feeds {
		if st.tracked() {
			out = append(out, st.info())
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name.String() < out[j].Name.String() })
	return out
}

func (st *feedState) info() FeedInfo {
	fi := FeedInfo{Name: st.name, Owned: st.owned, Following: st.follow != nil, PinErr: st.pinErr}
	if st.follow != nil {
		fi.Options = *st.follow
	}
	if st.held != nil {
		fi.Held = *st.held
	}
	if st.pinned != nil {
		fi.Pinned = *st.pinned
	}
	if st.fetching != nil {
		fi.Fetching, fi.FetchingSeq = true, st.fetching.Seq
	}
	fi.DHT, fi.DHTSeq, fi.DHTAt = st.dht.last, st.dht.okSeq, st.dht.okAt
	fi.DHTPending = st.dht.running || st.dht.next != nil || st.dht.retry != nil
	return fi
}

func (m *Manager) trackedNames() []ipns.Name {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []ipns.Name
	for _, st := range m.feeds {
		if st.tracked() {
			names = append(names, st.name)
		}
	}
	return names
}

func (m *Manager) join(name ipns.Name) error {
	if m.cfg.Topics == nil {
		return nil
	}
	// weft's own topic, and the one Kubo publishes and listens on: records
	// are the same bare IPNS records on both, validated alike.
	for _, topic := range []string{Topic(name), IPNSTopic(name)} {
		if err := m.cfg.Topics.Join(topic, m.TopicValidator(name)); err != nil {
			return fmt.Errorf("feed: join topic %s of %s: %w", topic, name, err)
		}
	}
	return nil
}
