package exchange

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"
)

// Config configures a Fetcher. Optional fields' zero values are the
// defaults noted beside them; NewFetcher refuses inconsistent settings.
type Config struct {
	// Blocks is where the fetch looks for what is held and writes what
	// arrives (required). node/ passes an operation's store.Session
	// blockstore, so the blocks are GC roots until the operation ends.
	Blocks Blocks
	// Streams opens streams to providers (required).
	Streams Streams
	// MaxBuffered bounds the bytes of blocks a fetch holds in memory:
	// read but not yet written (0: 32 MiB; at least MaxBlockSize). Reading
	// from providers waits while the store catches up.
	MaxBuffered int64
	// BatchBytes is the most block bytes written in one PutMany (0: 8 MiB).
	// A batch is written as soon as no further verified block is waiting,
	// so small content is never delayed to fill one.
	BatchBytes int
	// UnitBytes is the work handed to one provider at a time when several
	// serve a fetch (0: 16 MiB): the smaller, the faster work moves away
	// from a slow provider, the more requests.
	UnitBytes uint64
	// MaxProviders bounds the providers a fetch uses at once (0: 8); the
	// others replace those that fail.
	MaxProviders int
	// StreamsPerProvider is how many streams a fetch opens to each provider
	// (0: 3), each carrying its own requests for a part of the DAG, so that
	// the provider's reads, both sides' hashing and the writes of one part
	// overlap those of the others even when a single provider serves the
	// whole fetch. 1 keeps one stream and one request per provider.
	StreamsPerProvider int
	// StallTimeout gives up on a provider that sends nothing for this long
	// while a request is outstanding, or whose stream takes this long to
	// open (0: 15s). Its unfinished work goes to the other providers.
	StallTimeout time.Duration
	// MaxPending bounds the blocks pending in one walk (0:
	// DefaultMaxPending); a wider DAG fails the fetch with ErrTooLarge.
	MaxPending int
	// PutCopies says that Blocks.PutMany keeps no reference to a block's
	// data once it returns (it copies it or writes it out, as a disk store
	// does), so the Fetcher may reuse the buffers blocks arrive in. Leave it
	// off for a store that keeps the slices it is given (an in-memory one).
	PutCopies bool
	// Buffers gives the buffers blocks are read into when PutCopies is set
	// (nil: pools on the Go heap).
	Buffers Buffers
	// Logger receives the package's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Tracer, if set, records a client span for every request sent (a
	// child of the span in Fetch's context) and carries its context to the
	// provider in Request.Trace.
	Tracer trace.Tracer
}

func (c *Config) setDefaults() {
	if c.MaxBuffered == 0 {
		c.MaxBuffered = 32 << 20
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 8 << 20
	}
	if c.UnitBytes == 0 {
		c.UnitBytes = 16 << 20
	}
	if c.MaxProviders == 0 {
		c.MaxProviders = 8
	}
	if c.StreamsPerProvider == 0 {
		c.StreamsPerProvider = 3
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 15 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Buffers == nil {
		c.Buffers = heapBuffers{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.Blocks == nil:
		return fmt.Errorf("%w: Blocks is required", ErrInvalidConfig)
	case c.Streams == nil:
		return fmt.Errorf("%w: Streams is required", ErrInvalidConfig)
	case c.MaxBuffered < MaxBlockSize:
		return fmt.Errorf("%w: MaxBuffered %d below MaxBlockSize %d", ErrInvalidConfig, c.MaxBuffered, MaxBlockSize)
	case c.BatchBytes < 0, c.MaxProviders < 0, c.MaxPending < 0, c.StreamsPerProvider < 0:
		return fmt.Errorf("%w: negative BatchBytes, MaxProviders, MaxPending or StreamsPerProvider", ErrInvalidConfig)
	case c.StallTimeout < 0:
		return fmt.Errorf("%w: negative StallTimeout", ErrInvalidConfig)
	}
	return nil
}

// Stats describes one fetch.
type Stats struct {
	// Held is how many blocks of the scope were found held before asking.
	Held int64
	// Blocks and Bytes are what arrived, was verified and was written.
	Blocks, Bytes int64
	// Requests is the number of requests sent, over all providers.
	Requests int64
	// Peers has an entry for every provider that was asked for something.
	Peers map[peer.ID]PeerStats
}

// PeerStats is one provider's part in a fetch.
type PeerStats struct {
	Blocks, Bytes int64 // blocks it sent that were verified and kept
	Missing       int64 // blocks it said it lacks
	Requests      int64
	// Busy is the time its requests were outstanding; Bytes/Busy is its
	// rate, which decides when it is preempted.
	Busy time.Duration
	// Preempted counts requests cut short because it was much slower than
	// a provider left without work; their rest went to that provider.
	Preempted int64
	// Err is why the fetch stopped using it (nil if it did not fail).
	Err *PeerError
}

// Totals counts what a Fetcher has fetched since it was made.
type Totals struct {
	Fetches int64
	Blocks  int64 // blocks verified and written
	Bytes   int64 // block bytes verified and written
	// BadBlocks counts blocks refused because they did not match their
	// CID; BadPeers counts providers dropped for ErrBadBlock or ErrProtocol.
	BadBlocks, BadPeers int64
}

// Fetcher fetches DAGs from providers speaking the exchange protocol. It
// holds no goroutines between calls: every one Fetch starts has ended when
// it returns. Its methods are safe for concurrent use; concurrent fetches
// share nothing but the Config's Blocks and Streams.
type Fetcher struct {
	cfg                                     Config
	fetches, nBlocks, nBytes, bad, badPeers atomic.Int64
}

// NewFetcher returns a Fetcher for cfg.
func NewFetcher(cfg Config) (*Fetcher, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Fetcher{cfg: cfg}, nil
}

// Totals returns the Fetcher's counters.
func (f *Fetcher) Totals() Totals {
	return Totals{Fetches: f.fetches.Load(), Blocks: f.nBlocks.Load(), Bytes: f.nBytes.Load(),
		BadBlocks: f.bad.Load(), BadPeers: f.badPeers.Load()}
}

// Fetch makes every block of scope under root held in Config.Blocks,
// asking providers for what is missing. It first walks what is held, so
// only the missing subtrees are requested; then it splits them among the
// providers (see Config.UnitBytes), verifies every block against the CID
// the walk expects, and writes verified blocks in batches.
//
// A provider that sends a bad block or breaks the protocol is dropped at
// once, as is one that fails or stalls; its unfinished work goes to the
// others, and nothing it delivered is asked for again. Fetch returns nil
// when every block is held, even if some providers failed (see
// Stats.Peers). Otherwise it returns a *FetchError (ErrIncomplete, with
// the providers' *PeerErrors), the context's error, or the store's; the
// blocks that did arrive stay written, so a later fetch resumes.
func (f *Fetcher) Fetch(ctx context.Context, root cid.Cid, scope Scope, providers []peer.ID) (Stats, error) {
	f.fetches.Add(1)
	if !root.Defined() {
		return Stats{}, errors.New("exchange: fetch of an undefined CID")
	}
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, root); err != nil {
		return Stats{}, fmt.Errorf("exchange: fetch %s: %w", root, err)
	}
	if err := scope.validate(); err != nil {
		return Stats{}, err
	}
	missing, unverifiable, held, err := f.frontier(ctx, item{c: root, scope: scope})
	st := Stats{Held: held}
	if err != nil {
		return st, fmt.Errorf("exchange: walk held blocks of %s: %w", root, err)
	}
	if len(missing) == 0 && len(unverifiable) == 0 {
		return st, nil
	}
	r := newRun(ctx, f, dedupe(providers))
	r.lost = unverifiable
	if len(missing) > 0 {
		if len(r.spare) == 0 {
			return st, fmt.Errorf("%w: %d blocks of %s missing", ErrNoProviders, len(missing), root)
		}
		r.queue = missing
		r.start()
	}
	return r.finish(st)
}

func dedupe(ps []peer.ID) []peer.ID {
	seen := make(map[peer.ID]struct{}, len(ps))
	out := make([]peer.ID, 0, len(ps))
	for _, p := range ps {
		if _, ok := seen[p]; !ok && p != "" {
			seen[p] = struct{}{}
			out = append(out, p)
		}
	}
	return out
}

// frontier walks scope through the held blocks and returns, in walk order,
// the wants whose blocks are missing, those no one can deliver verifiably
// (a hash verifcid refuses), and the number of blocks held.
func (f *Fetcher) frontier(ctx context.Context, root item) (missing, unverifiable []item, held int64, err error) {
	wk := newWalk([]item{root}, f.cfg.MaxPending)
	for {
		// The store may ignore ctx: check it per block, so a fetch whose
		// request ended stops walking even a large held DAG.
		if err := ctx.Err(); err != nil {
			return nil, nil, 0, err
		}
		it, ok, err := wk.next()
		if err != nil {
			return nil, nil, 0, err
		}
		if !ok {
			break
		}
		if it.c.Type() == cid.DagProtobuf && it.scope.Kind != ScopeBlock {
			blk, err := f.cfg.Blocks.Get(ctx, it.c)
			if ipld.IsNotFound(err) {
				missing = append(missing, it)
				continue
			}
			if err != nil {
				return nil, nil, 0, err
			}
			held++
			if err := wk.expand(it, blk.RawData()); err != nil {
				return nil, nil, 0, err
			}
			continue
		}
		has, err := f.cfg.Blocks.Has(ctx, it.c)
		if err != nil {
			return nil, nil, 0, err
		}
		if has {
			held++
		} else {
			missing = append(missing, it)
		}
	}
	return missing, wk.skipped, held, nil
}

// verifiable reports whether a block under c can be checked: boxo's
// default allowlist of hash functions and digest sizes, as Bitswap uses.
func verifiable(c cid.Cid) bool {
	return verifcid.ValidateCid(verifcid.DefaultAllowlist, c) == nil
}

// verify checks data against c.
func verify(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("%w: hash: %v", ErrBadBlock, err)
	}
	if !bytes.Equal(got.Hash(), c.Hash()) {
		return ErrBadBlock
	}
	return nil
}

// run is one Fetch in progress: a queue of wants in walk order, worker
// goroutines pulling units of work from it (one per lane: a stream to a
// provider, StreamsPerProvider of them per provider), and one writer
// goroutine. Fetch owns all of them and waits for them in finish.
type run struct {
	f      *Fetcher
	cfg    *Config
	ctx    context.Context
	cancel context.CancelCauseFunc
	sem    *semaphore.Weighted
	out    chan blocks.Block
	wg     sync.WaitGroup // workers
	wdone  chan struct{}  // writer

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []item               // wants not yet handed out, in walk order
	busy    int                  // units handed out, not given back
	live    map[peer.ID]bool     // providers working or waiting for work
	working map[peer.ID]int      // each provider's workers running
	lanes   int                  // workers per provider
	spare   []peer.ID            // providers not started yet
	lacks   map[string][]peer.ID // want key -> providers that said Missing
	lost    []item               // wants no provider delivered
	peers   map[peer.ID]*PeerStats
	done    bool
	fatal   error
	nReqs   int64
	written struct{ blocks, bytes int64 } // by the writer; read after it ends
	stopCtx func() bool
	writing bool             // the writer was started
	flights map[lane]*flight // requests outstanding
	doneCh  chan struct{}    // closed when done is set
	handoff map[lane][]item  // a preempted request's rest, for its heir
}

// flight is one outstanding request, watched for preemption.
type flight struct {
	start     time.Time
	bytes     atomic.Int64
	preempted atomic.Bool
	heir      lane // who preempted it, and gets its rest; under run.mu
	reset     func()
}

// Preemption: a provider left without work takes over the request of one
// at least preemptRatio times slower than itself, once that request has
// run for preemptAfter. Idle workers look every preemptCheck. A provider
// must have delivered preemptMinBytes (or a unit, if smaller) before its
// rate counts: one that sent
// a small block and lacked the rest would otherwise look fast beside a
// provider whose first large blocks are still on their way, preempt it
// again and again, and take work it cannot do.
const (
	preemptRatio    = 4
	preemptAfter    = 500 * time.Millisecond
	preemptCheck    = 100 * time.Millisecond
	preemptMinBytes = 4 << 20
)

func newRun(ctx context.Context, f *Fetcher, providers []peer.ID) *run {
	r := &run{
		f:       f,
		cfg:     &f.cfg,
		sem:     semaphore.NewWeighted(f.cfg.MaxBuffered),
		out:     make(chan blocks.Block, 256),
		wdone:   make(chan struct{}),
		working: make(map[peer.ID]int),
		live:    make(map[peer.ID]bool),
		spare:   providers,
		lacks:   make(map[string][]peer.ID),
		peers:   make(map[peer.ID]*PeerStats),
		flights: make(map[lane]*flight),
		doneCh:  make(chan struct{}),
		handoff: make(map[lane][]item),
		lanes:   f.cfg.StreamsPerProvider,
	}
	r.ctx, r.cancel = context.WithCancelCause(ctx)
	r.cond = sync.NewCond(&r.mu)
	r.stopCtx = context.AfterFunc(r.ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	return r
}

// start launches the writer and the first MaxProviders workers.
func (r *run) start() {
	r.writing = true
	go r.writeLoop()
	if len(r.spare)*r.lanes > 1 {
		r.wg.Add(1)
		go func() { // wakes idle workers to look for a slow request to take over
			defer r.wg.Done()
			t := time.NewTicker(preemptCheck)
			defer t.Stop()
			for {
				select {
				case <-r.ctx.Done():
					return
				case <-r.doneCh:
					return
				case <-t.C:
				}
				r.mu.Lock()
				r.cond.Broadcast()
				r.mu.Unlock()
			}
		}()
	}
	r.mu.Lock()
	for len(r.live) < r.cfg.MaxProviders && len(r.spare) > 0 {
		r.startWorkerLocked()
	}
	r.mu.Unlock()
}

// lane is one worker's stream to a provider: the provider and the
// number of the stream.
type lane struct {
	p peer.ID
	n int
}

func (l lane) none() bool { return l.p == "" }

// startWorkerLocked starts the workers of the next spare provider.
func (r *run) startWorkerLocked() {
	p := r.spare[0]
	r.spare = r.spare[1:]
	r.live[p] = true
	r.working[p] += r.lanes
	for n := range r.lanes {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.worker(lane{p, n})
		}()
	}
}

// finish waits for the workers and the writer and makes the outcome.
func (r *run) finish(st Stats) (Stats, error) {
	r.wg.Wait()
	if r.writing {
		close(r.out)
		<-r.wdone
	}
	r.stopCtx()
	defer r.cancel(nil)
	st.Blocks, st.Bytes = r.written.blocks, r.written.bytes
	st.Requests = r.nReqs
	st.Peers = make(map[peer.ID]PeerStats, len(r.peers))
	var perrs []*PeerError
	for p, ps := range r.peers {
		st.Peers[p] = *ps
		if ps.Err != nil {
			perrs = append(perrs, ps.Err)
		}
	}
	if r.fatal != nil {
		return st, r.fatal
	}
	if err := context.Cause(r.ctx); err != nil {
		return st, err
	}
	if len(r.lost) > 0 || len(r.queue) > 0 {
		all := append(append([]item(nil), r.lost...), r.queue...)
		return st, &FetchError{Missing: len(all), First: all[0].c, Peers: perrs}
	}
	return st, nil
}

// fail stops the whole fetch (a store error, a DAG too wide).
func (r *run) fail(err error) {
	r.mu.Lock()
	if r.fatal == nil {
		r.fatal = err
	}
	r.mu.Unlock()
	r.cancel(err)
}

// peerStats returns p's entry; r.mu must be held.
func (r *run) peerStatsLocked(p peer.ID) *PeerStats {
	ps := r.peers[p]
	if ps == nil {
		ps = &PeerStats{}
		r.peers[p] = ps
	}
	return ps
}

// take waits for work p can do and hands it out: the wants at the front of
// the queue that p has not said it lacks, and the byte limit of the
// request. With one provider left that is everything; with more, about
// UnitBytes by the parents' link sizes, and the limit makes the provider
// stop there even when the sizes are wrong or unknown. It returns nil when
// the fetch is over.
func (r *run) take(l lane) ([]item, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := l.p
	for {
		if r.done || r.ctx.Err() != nil || !r.live[p] {
			return nil, 0
		}
		one := len(r.live) == 1 && len(r.spare) == 0 && r.lanes == 1
		if h := r.handoff[l]; len(h) > 0 {
			// What l preempted is l's, as a queue of its own: the slow
			// provider must not take it back.
			delete(r.handoff, l)
			r.queue = append(h, r.queue...)
		}
		var unit, rest []item
		var sum, size uint64
		for i, it := range r.queue {
			full := len(unit) >= MaxWants || size+uint64(len(it.c.KeyString()))+32 > MaxRequestSize
			if !full && !one && len(unit) > 0 && (it.est == 0 || sum+it.est > r.cfg.UnitBytes) {
				full = true
			}
			if full {
				rest = append(rest, r.queue[i:]...)
				break
			}
			if r.lacksLocked(it, p) {
				rest = append(rest, it)
				continue
			}
			unit = append(unit, it)
			sum += it.est
			size += uint64(len(it.c.KeyString())) + 32
		}
		if len(unit) > 0 {
			r.queue = rest
			r.busy++
			var limit uint64
			if !one {
				limit = r.cfg.UnitBytes
			}
			return unit, limit
		}
		r.preemptLocked(l)
		r.cond.Wait()
	}
}

// preemptLocked cuts short the slowest request of another provider if it
// is preemptRatio times slower than l's provider has been. Its rest comes
// back to the queue, for l.
func (r *run) preemptLocked(l lane) {
	p := l.p
	ps := r.peers[p]
	if ps == nil || ps.Bytes < min(preemptMinBytes, int64(r.cfg.UnitBytes)) || ps.Busy <= 0 || r.busy == 0 {
		return
	}
	mine := float64(ps.Bytes) / ps.Busy.Seconds()
	now := time.Now()
	var slow *flight
	var slowest float64
	for q, fl := range r.flights {
		el := now.Sub(fl.start)
		if q.p == p || fl.preempted.Load() || el < preemptAfter {
			continue
		}
		rate := float64(fl.bytes.Load()) / el.Seconds()
		if rate*preemptRatio < mine && (slow == nil || rate < slowest) {
			slow, slowest = fl, rate
		}
	}
	if slow != nil {
		slow.heir = l
		slow.preempted.Store(true)
		slow.reset()
	}
}

func (r *run) lacksLocked(it item, p peer.ID) bool {
	if len(r.lacks) == 0 {
		return false
	}
	for _, q := range r.lacks[it.key()] {
		if q == p {
			return true
		}
	}
	return false
}

// giveBack returns a unit's outcome: the wants p did not deliver (rest,
// in walk order) and those it said it lacks, and p's failure if any. The
// rest of a preempted request goes to heir, the lane that preempted it.
func (r *run) giveBack(l lane, rest, missing []item, perr *PeerError, heir lane) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := l.p
	r.busy--
	for _, it := range missing {
		k := it.key()
		r.lacks[k] = append(r.lacks[k], p)
	}
	if len(missing) > 0 && len(r.spare) > 0 && r.ctx.Err() == nil {
		// What p lacks may be with a provider not asked yet: ask one more
		// (the providers in use may all lack it, and would wait for ever).
		r.startWorkerLocked()
	}
	if !heir.none() && r.live[heir.p] && len(rest) > 0 {
		r.handoff[heir] = append(r.handoff[heir], rest...)
		rest = nil
	}
	if len(missing)+len(rest) > 0 {
		q := make([]item, 0, len(missing)+len(rest)+len(r.queue))
		q = append(append(append(q, missing...), rest...), r.queue...)
		r.queue = q
	}
	if perr != nil {
		r.working[p]-- // the worker ends
		// A provider that refused one stream as busy (it serves one
		// requester a few at once) goes on over its other workers.
		if !errors.Is(perr, ErrBusy) || r.working[p] == 0 {
			r.dropLocked(p, perr)
		}
	}
	r.settleLocked()
}

// dropLocked stops using p and starts a spare provider in its place.
func (r *run) dropLocked(p peer.ID, perr *PeerError) {
	if !r.live[p] {
		return
	}
	delete(r.live, p)
	for l, h := range r.handoff {
		if l.p == p {
			delete(r.handoff, l)
			r.queue = append(h, r.queue...)
		}
	}
	r.peerStatsLocked(p).Err = perr
	if perr.Bad() {
		r.f.badPeers.Add(1)
	}
	if errors.Is(perr, ErrBadBlock) {
		r.f.bad.Add(1)
	}
	if r.ctx.Err() == nil {
		r.cfg.Logger.Debug("exchange: dropping provider", "peer", p, "err", perr)
		if len(r.spare) > 0 {
			r.startWorkerLocked()
		}
	}
}

// settleLocked moves wants no live provider can deliver to lost, and ends
// the fetch when nothing is left to do.
func (r *run) settleLocked() {
	if len(r.live) == 0 && len(r.spare) == 0 {
		r.lost = append(r.lost, r.queue...)
		r.queue = nil
	} else if len(r.spare) == 0 && len(r.lacks) > 0 {
		kept := r.queue[:0]
		for _, it := range r.queue {
			all := true
			for p := range r.live {
				if !r.lacksLocked(it, p) {
					all = false
					break
				}
			}
			if all {
				r.lost = append(r.lost, it)
			} else {
				kept = append(kept, it)
			}
		}
		clear(r.queue[len(kept):])
		r.queue = kept
	}
	if len(r.queue) == 0 && len(r.handoff) == 0 && r.busy == 0 && !r.done {
		r.done = true
		close(r.doneCh)
	}
	r.cond.Broadcast()
}

// worker serves the fetch from l's provider until there is no work left
// for it or the provider fails.
func (r *run) worker(l lane) {
	var c *conn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for {
		unit, limit := r.take(l)
		if unit == nil {
			r.mu.Lock()
			r.working[l.p]--
			r.mu.Unlock()
			return
		}
		if c == nil {
			var err error
			if c, err = r.dial(l); err != nil {
				r.giveBack(l, unit, nil, &PeerError{Peer: l.p, Err: fmt.Errorf("open stream: %w", err)}, lane{})
				return
			}
		}
		rest, missing, perr, heir := r.request(c, unit, limit)
		r.giveBack(l, rest, missing, perr, heir)
		if perr != nil || !heir.none() {
			c.reset() // a preempted provider gets a fresh stream next time
			c = nil
		}
		if perr != nil {
			return
		}
	}
}

// conn is a worker's stream to its provider.
type conn struct {
	l    lane
	p    peer.ID
	st   Stream
	br   *bufio.Reader
	dog  *watchdog
	stop func() bool
}

func (r *run) dial(l lane) (*conn, error) {
	p := l.p
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.StallTimeout)
	defer cancel()
	st, err := r.cfg.Streams.NewStream(ctx, p)
	if err != nil {
		if cause := context.Cause(r.ctx); cause != nil {
			return nil, cause
		}
		return nil, err
	}
	c := &conn{l: l, p: p, st: st}
	c.dog = newWatchdog(r.cfg.StallTimeout, func() { _ = st.Reset() })
	c.dog.pause() // running only while a request is outstanding
	c.br = bufio.NewReaderSize(&kickReader{st, c.dog}, 64<<10)
	c.stop = context.AfterFunc(r.ctx, func() { _ = st.Reset() })
	return c, nil
}

func (c *conn) close() {
	c.stop()
	c.dog.stop()
	_ = c.st.Close()
}

func (c *conn) reset() {
	c.stop()
	c.dog.stop()
	_ = c.st.Reset()
}

// request sends one request for unit and reads its answer. It returns the
// wants not delivered, in walk order, those p lacks, and p's failure, if
// any.
//
// Two goroutines share the work, so that hashing overlaps reading: the
// caller's reads frames and follows the walk; a verifier checks and
// commits blocks in order. A block with children (a dag-pb node) is
// verified by the reader before the walk follows its links, so the walk
// never rests on unverified bytes; a leaf changes nothing in the walk, so
// the reader passes it on unverified and reads on. At the first leaf that
// fails, the verifier stops the reader and discards what came after it.
func (r *run) request(c *conn, unit []item, limit uint64) (rest, missing []item, perr *PeerError, heir lane) {
	req := Request{Wants: make([]Want, len(unit)), Limit: limit}
	for i, it := range unit {
		req.Wants[i] = it.want()
	}
	fl := &flight{start: time.Now(), reset: func() { _ = c.st.Reset() }}
	r.mu.Lock()
	r.nReqs++
	r.peerStatsLocked(c.p).Requests++
	r.flights[c.l] = fl
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.flights, c.l)
		ps := r.peerStatsLocked(c.p)
		ps.Busy += time.Since(fl.start)
		if fl.preempted.Load() && perr == nil {
			ps.Preempted++
			heir = fl.heir
		}
		r.mu.Unlock()
	}()

	var got verdict // for the span
	if tr := r.cfg.Tracer; tr != nil {
		_, span := tr.Start(r.ctx, "weft.exchange.request", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("peer", c.p.String()), attribute.Int("wants", len(unit)),
				attribute.Int64("limit", int64(limit))))
		req.Trace = traceParent(trace.ContextWithSpan(r.ctx, span))
		defer func() {
			span.SetAttributes(attribute.Int("rest", len(rest)), attribute.Int("missing", len(missing)),
				attribute.Int64("blocks", got.blocks), attribute.Int64("bytes", got.bytes))
			if perr != nil {
				span.RecordError(perr)
				span.SetStatus(codes.Error, perr.Error())
			}
			span.End()
		}()
	}
	c.dog.resume()
	defer c.dog.pause()
	if err := WriteRequest(c.st, req); err != nil {
		if fl.preempted.Load() {
			return unit, nil, nil, lane{}
		}
		return unit, nil, r.peerErr(c, cid.Undef, fmt.Errorf("send request: %w", err)), lane{}
	}
	events := make(chan event, 64)
	stop := make(chan struct{})
	res := make(chan verdict, 1)
	go func() { res <- r.verifyLoop(c, fl, events, stop) }()
	rest, perr = r.readLoop(c, unit, events, stop)
	v := <-res
	got = v
	if v.bad != nil {
		return append(v.rest, rest...), v.missing, v.bad, lane{}
	}
	if fl.preempted.Load() && perr != nil {
		return rest, v.missing, nil, lane{}
	}
	if perr == nil && len(rest) > 0 && v.blocks == 0 && len(v.missing) == 0 {
		perr = r.peerErr(c, rest[0].c, fmt.Errorf("%w: ended a request without sending anything", ErrRefused))
	}
	return rest, v.missing, perr, lane{}
}

// event is one frame's outcome, passed from the reader to the verifier in
// stream order: a block (verified already if it has children), or a want
// the provider lacks (data nil).
type event struct {
	it       item
	data     []byte
	verified bool
	reserved int
}

// verdict is the verifier's account of a request.
type verdict struct {
	missing       []item
	blocks, bytes int64
	// bad is set when a block failed; rest is then that block's want and
	// those of every event after it, which were discarded.
	bad  *PeerError
	rest []item
}

// readLoop reads the answer to one request, following the walk, and
// closes events when done. It returns the wants it did not read, in walk
// order, and p's failure, if any.
func (r *run) readLoop(c *conn, unit []item, events chan<- event, stop <-chan struct{}) (rest []item, perr *PeerError) {
	defer close(events)
	wk := newWalk(unit, r.cfg.MaxPending)
	defer func() {
		if len(wk.skipped) > 0 {
			r.mu.Lock()
			r.lost = append(r.lost, wk.skipped...)
			r.mu.Unlock()
		}
	}()
	var kids []item
	for {
		it, ok, err := wk.next()
		if err != nil {
			r.fail(err)
			return nil, nil
		}
		var pending *item
		if ok {
			pending = &it
		}
		reserved := 0
		var got []byte
		fr, err := ReadFrameBuf(c.br, func(n int) ([]byte, error) {
			if !ok {
				return nil, fmt.Errorf("%w: a block after the walk ended", ErrProtocol)
			}
			c.dog.pause()
			err := r.sem.Acquire(r.ctx, int64(n))
			c.dog.resume()
			if err != nil {
				return nil, context.Cause(r.ctx)
			}
			reserved = n
			if r.cfg.PutCopies {
				got = r.cfg.Buffers.Get(n)
				return got, nil
			}
			return make([]byte, n), nil
		})
		if err != nil {
			if reserved > 0 {
				r.sem.Release(int64(reserved))
			}
			r.drop(got)
			select {
			case <-stop:
				return wk.remaining(pending), nil // the verifier reports why
			default:
			}
			if cause := context.Cause(r.ctx); cause != nil {
				return wk.remaining(pending), nil
			}
			switch {
			case c.dog.fired.Load():
				err = fmt.Errorf("%w: nothing for %v", ErrStalled, r.cfg.StallTimeout)
			case errors.Is(err, ErrMalformed):
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return wk.remaining(pending), r.peerErr(c, it.c, err)
		}
		ev := event{it: it}
		switch fr.Type {
		case FrameBlock:
			ev.data, ev.reserved = fr.Data, reserved
			kids = children(kids[:0], it, fr.Data)
			if len(kids) > 0 {
				if err := verify(it.c, fr.Data); err != nil {
					r.sem.Release(int64(reserved))
					r.drop(fr.Data)
					// Blocks before this one may still be in the verifier;
					// it reports the first bad one, which is this one
					// unless an earlier leaf was bad too.
					if r.send(events, stop, event{it: it, reserved: -1}) {
						return wk.remaining(nil), nil
					}
					return wk.remaining(&it), nil
				}
				ev.verified = true
				if err := wk.push(it, kids); err != nil {
					r.sem.Release(int64(reserved))
					r.drop(fr.Data)
					r.fail(err)
					return nil, nil
				}
			}
		case FrameMissing:
			if !ok || !fr.Cid.Equals(it.c) {
				return wk.remaining(pending), r.peerErr(c, it.c, fmt.Errorf("%w: missing frame for %s", ErrProtocol, fr.Cid))
			}
		case FrameEnd:
			return wk.remaining(pending), nil
		case FrameError:
			refused := ErrRefused
			if fr.Code == CodeBusy {
				refused = ErrBusy
			}
			return wk.remaining(pending), r.peerErr(c, it.c, fmt.Errorf("%w: code %d: %s", refused, fr.Code, fr.Message))
		}
		if !r.send(events, stop, ev) {
			if ev.reserved > 0 {
				r.sem.Release(int64(ev.reserved))
			}
			r.drop(ev.data)
			return wk.remaining(&it), nil
		}
	}
}

// drop gives back the buffer of a block that was written or discarded,
// when the fetch reads blocks into reused buffers.
func (r *run) drop(data []byte) {
	if r.cfg.PutCopies && data != nil {
		r.cfg.Buffers.Put(data)
	}
}

// send passes ev to the verifier unless it has stopped.
func (r *run) send(events chan<- event, stop <-chan struct{}, ev event) bool {
	select {
	case events <- ev:
		return true
	case <-stop:
		return false
	}
}

// verifyLoop checks and commits the reader's events in order until events
// is closed. At the first bad block it closes stop, resets the stream and
// discards the rest.
func (r *run) verifyLoop(c *conn, fl *flight, events <-chan event, stop chan<- struct{}) verdict {
	var v verdict
	for ev := range events {
		if v.bad != nil {
			v.rest = append(v.rest, ev.it)
			if ev.reserved > 0 {
				r.sem.Release(int64(ev.reserved))
			}
			r.drop(ev.data)
			continue
		}
		if ev.data == nil && ev.reserved == 0 {
			v.missing = append(v.missing, ev.it)
			continue
		}
		bad := ev.reserved < 0 // the reader found it bad
		if !bad && !ev.verified {
			bad = verify(ev.it.c, ev.data) != nil
		}
		if bad {
			v.bad = r.peerErr(c, ev.it.c, ErrBadBlock)
			v.rest = append(v.rest, ev.it)
			if ev.reserved > 0 {
				r.sem.Release(int64(ev.reserved))
			}
			r.drop(ev.data)
			close(stop)
			_ = c.st.Reset()
			continue
		}
		blk, _ := blocks.NewBlockWithCid(ev.data, ev.it.c) // errors only with u.Debug on, and the hash matched
		select {
		case r.out <- blk:
			v.blocks++
			v.bytes += int64(len(ev.data))
			fl.bytes.Add(int64(len(ev.data)))
		case <-r.ctx.Done():
			r.sem.Release(int64(ev.reserved))
			r.drop(ev.data)
			v.rest = append(v.rest, ev.it) // not committed
		}
	}
	r.mu.Lock()
	ps := r.peerStatsLocked(c.p)
	ps.Blocks += v.blocks
	ps.Bytes += v.bytes
	ps.Missing += int64(len(v.missing))
	r.mu.Unlock()
	return v
}

func (r *run) peerErr(c *conn, at cid.Cid, err error) *PeerError {
	return &PeerError{Peer: c.p, Cid: at, Err: err}
}

// writeLoop writes verified blocks in batches: it takes whatever is
// waiting, up to BatchBytes, and writes it at once, so a lone block is
// written without delay and a fast stream fills large batches while the
// previous one is being written.
func (r *run) writeLoop() {
	defer close(r.wdone)
	batch := make([]blocks.Block, 0, 64)
	var failed bool
	for {
		blk, ok := <-r.out
		if !ok {
			return
		}
		batch = append(batch[:0], blk)
		size := len(blk.RawData())
		closed := false
	fill:
		for size < r.cfg.BatchBytes {
			select {
			case blk, ok := <-r.out:
				if !ok {
					closed = true
					break fill
				}
				batch = append(batch, blk)
				size += len(blk.RawData())
			default:
				break fill
			}
		}
		if !failed {
			err := r.cfg.Blocks.PutMany(r.ctx, batch)
			if err != nil {
				failed = true
				if r.ctx.Err() == nil {
					r.fail(fmt.Errorf("exchange: store blocks: %w", err))
				}
			} else {
				r.written.blocks += int64(len(batch))
				r.written.bytes += int64(size)
				r.f.nBlocks.Add(int64(len(batch)))
				r.f.nBytes.Add(int64(size))
			}
		}
		for _, blk := range batch {
			r.drop(blk.RawData())
		}
		r.sem.Release(int64(size))
		clear(batch)
		if closed {
			return
		}
	}
}
