package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/protocol/exchange"
	"github.com/weft-p2p/weft/protocol/unixfs"
	"github.com/weft-p2p/weft/store"
)

// ErrFetchTimeout says no provider sent a needed block in time.
var ErrFetchTimeout = errors.New("fetch timed out")

// ErrTooManyEntries and ErrTooDeep refuse a get whose tree would be larger
// than content.max_get_entries or nest deeper than any path can.
var (
	ErrTooManyEntries = errors.New("too many entries")
	ErrTooDeep        = errors.New("too deep")
)

// content joins the store, Bitswap and the DHT into the node's content
// operations: add, fetch, pin, provide.
type content struct {
	n     *Node
	x     *p2p.Bitswap
	bserv blockservice.BlockService
	dag   ipld.DAGService

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// ops counts content operations in flight (adds, fetches, pins,
	// reads, exports): each ends when its request does.
	ops atomic.Int64
}

// ContentOpsInFlight is the number of content operations running now (the
// weft_content_ops_in_flight gauge). An operation ends when it completes or
// its request's context ends, a departed API client's included.
func (n *Node) ContentOpsInFlight() int64 { return n.content.ops.Load() }

func newContent(n *Node) *content {
	c := &content{n: n}
	c.x = n.net.StartBitswap(n.store.Blockstore(), p2p.BitswapConfig{ServerIdle: n.cfg.Content.BitswapServerIdle.D()})
	c.bserv = blockservice.New(n.store.Blockstore(), c.x)
	c.dag = merkledag.NewDAGService(c.bserv)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.reprovideLoop()
	}()
	return c
}

// close stops the provider loop and waits for announcements in flight.
func (c *content) close() {
	c.cancel()
	c.wg.Wait()
}

// sessionDAG reads through one Bitswap session (so a fetch learns which
// peers have the DAG and asks them first) and writes through a store
// session's blockstore (so GC keeps what the operation wrote until it ends).
type sessionDAG struct {
	get ipld.NodeGetter
	add ipld.DAGService
}

func (s *sessionDAG) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) { return s.get.Get(ctx, c) }
func (s *sessionDAG) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	return s.get.GetMany(ctx, cs)
}
func (s *sessionDAG) Add(ctx context.Context, nd ipld.Node) error { return s.add.Add(ctx, nd) }
func (s *sessionDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	return s.add.AddMany(ctx, nds)
}
func (s *sessionDAG) Remove(ctx context.Context, c cid.Cid) error { return s.add.Remove(ctx, c) }
func (s *sessionDAG) RemoveMany(ctx context.Context, cs []cid.Cid) error {
	return s.add.RemoveMany(ctx, cs)
}

// op is one content operation: a store session that keeps its blocks from
// GC, a DAG that fetches through Bitswap, and an idle timeout that fails
// the operation when no block arrives for Content.FetchTimeout.
type op struct {
	c      *content
	sess   *store.Session
	dag    ipld.DAGService
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	idle   time.Duration
	// arrivals, when set before a native fetch starts, hears of every
	// block the fetch writes (streaming reads, arrivals.go).
	arrivals *arrivals
}

func (c *content) newOp(parent context.Context) *op {
	c.ops.Add(1)
	o := &op{c: c, sess: c.n.store.NewSession(), idle: c.n.cfg.Content.FetchTimeout.D()}
	o.ctx, o.cancel = context.WithCancelCause(parent)
	o.timer = time.AfterFunc(o.idle, func() {
		o.cancel(fmt.Errorf("%w: no provider sent a block for %v", ErrFetchTimeout, o.idle))
	})
	bs := blockservice.New(o.sess.Blockstore(), c.x)
	base := merkledag.NewDAGService(bs)
	o.dag = &sessionDAG{get: &touchGetter{merkledag.NewSession(o.ctx, base), o}, add: base}
	return o
}

// touch records progress, pushing the idle timeout back.
func (o *op) touch() { o.timer.Reset(o.idle) }

// err turns a failure into the operation's cause (timeout, store full).
func (o *op) err(err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(o.ctx); cause != nil && !errors.Is(err, cause) && o.ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", cause, err)
	}
	return err
}

func (o *op) close() {
	o.timer.Stop()
	o.cancel(nil)
	o.sess.Close()
	o.c.ops.Add(-1)
}

// touchGetter pushes the op's idle timeout back on every block read.
type touchGetter struct {
	ipld.NodeGetter
	o *op
}

func (t *touchGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	nd, err := t.NodeGetter.Get(ctx, c)
	if err == nil {
		t.o.touch()
		t.o.sess.Hold(c)
	}
	return nd, err
}

func (t *touchGetter) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	in := t.NodeGetter.GetMany(ctx, cs)
	out := make(chan *ipld.NodeOption, len(cs))
	go func() {
		defer close(out)
		for no := range in {
			if no.Err == nil {
				t.o.touch()
				t.o.sess.Hold(no.Node.Cid())
			}
			out <- no
		}
	}()
	return out
}

// AddResult is the outcome of an add.
type AddResult struct {
	Root cid.Cid
}

// Add imports a file or directory tree, pins the root (recursively, unless
// pin is false), and announces it to the DHT. events receives progress and
// one EventAdded per file and directory.
func (n *Node) Add(ctx context.Context, nd files.Node, opts unixfs.Options, pin bool, name string, events func(unixfs.Event)) (root cid.Cid, err error) {
	ctx, span := n.startSpan(ctx, "weft.add", attribute.Bool("pin", pin))
	defer func() {
		if root.Defined() {
			span.SetAttributes(attribute.String("cid", root.String()))
		}
		endSpan(span, err)
	}()
	o := n.content.newOp(ctx)
	defer o.close()
	o.timer.Stop() // an add reads from the caller, not from peers
	// Adds write straight to the store session: no Bitswap notification
	// per block (no peer can want blocks whose CIDs it cannot know yet) and
	// no existence check before each write (the store skips what it has).
	writer := merkledag.NewDAGService(blockservice.New(o.sess.Blockstore(), nil, blockservice.WriteThrough(true)))
	batch := ipld.NewBufferedDAG(o.ctx, writer)
	root, err = unixfs.AddNode(o.ctx, batch, nd, opts, events)
	if err != nil {
		return cid.Undef, n.explainStoreErr(fmt.Errorf("add: %w", err))
	}
	if err := batch.Commit(); err != nil {
		return cid.Undef, n.explainStoreErr(fmt.Errorf("add: write blocks: %w", err))
	}
	if pin {
		if err := n.store.Pins().Add(ctx, root, store.Recursive, name); err != nil {
			return cid.Undef, fmt.Errorf("pin %s: %w", root, err)
		}
	}
	n.content.provideAsync(ctx, root)
	return root, nil
}

// explainStoreErr makes a store-full failure say what to do.
func (n *Node) explainStoreErr(err error) error {
	if errors.Is(err, store.ErrStoreFull) {
		return &httpError{507, err}
	}
	return err
}

// Fetch makes every block of the DAG under root local, fetching what is
// missing from the swarm, many blocks at a time.
func (n *Node) Fetch(ctx context.Context, root cid.Cid) error {
	o := n.content.newOp(ctx)
	defer o.close()
	return n.fetch(o, root)
}

func (n *Node) fetch(o *op, root cid.Cid) (err error) {
	ctx, span := n.startSpan(o.ctx, "weft.fetch", attribute.String("cid", root.String()))
	defer func() { endSpan(span, err) }()
	// The native exchange first (one stream per weft provider, no per-block
	// round trip); Bitswap then fetches whatever is still missing, from
	// any IPFS peer.
	if err := n.native.fetch(ctx, o, root, exchange.DAG()); err == nil {
		return nil
	}
	bctx, bspan := n.startSpan(ctx, "weft.fetch.bitswap", attribute.String("cid", root.String()))
	err = merkledag.FetchGraph(bctx, root, o.dag, merkledag.Concurrency(32))
	endSpan(bspan, err)
	if err != nil {
		return n.explainStoreErr(o.err(fmt.Errorf("fetch %s: %w", root, err)))
	}
	return nil
}

// Pin fetches the DAG under c (if needed) and pins it recursively, or just
// the block with recursive false.
func (n *Node) Pin(ctx context.Context, c cid.Cid, recursive bool, name string) error {
	o := n.content.newOp(ctx)
	defer o.close()
	mode := store.Direct
	if recursive {
		mode = store.Recursive
		if err := n.fetch(o, c); err != nil {
			return err
		}
	} else if _, err := o.dag.Get(o.ctx, c); err != nil {
		return o.err(fmt.Errorf("fetch %s: %w", c, err))
	}
	if err := n.store.Pins().Add(ctx, c, mode, name); err != nil {
		return fmt.Errorf("pin %s: %w", c, err)
	}
	n.content.provideAsync(ctx, c)
	return nil
}

// Unpin removes c's pin.
func (n *Node) Unpin(ctx context.Context, c cid.Cid) error {
	if err := n.store.Pins().Remove(ctx, c); err != nil {
		return fmt.Errorf("unpin %s: %w", c, err)
	}
	return nil
}

// readOp runs fn with a DAG that fetches missing blocks from the swarm.
func (n *Node) readOp(ctx context.Context, fn func(o *op) error) error {
	o := n.content.newOp(ctx)
	defer o.close()
	return o.err(fn(o))
}

// Cat streams the file at c to w, from offset for length bytes (length < 0:
// to the end).
func (n *Node) Cat(ctx context.Context, c cid.Cid, offset, length int64, w io.Writer, onSize func(size uint64)) error {
	return n.readOp(ctx, func(o *op) error {
		// Fetch the bytes asked for natively if a weft peer has them; the
		// reader below then finds them local (or falls back to Bitswap).
		scope := exchange.DAG()
		if offset > 0 || length >= 0 {
			l := uint64(exchange.ToEnd)
			if length >= 0 {
				l = uint64(length)
			}
			scope = exchange.Scope{Kind: exchange.ScopeRange, Offset: uint64(offset), Length: l}
		}
		// The reader starts at once and waits for each block the fetch
		// has not written yet (arrivals.go), so the bytes go out while
		// the rest arrive.
		fctx, stop := context.WithCancel(o.ctx)
		o.arrivals = newArrivals()
		fetched := make(chan struct{})
		go func() {
			defer close(fetched)
			defer o.arrivals.end()
			_ = n.native.fetch(fctx, o, c, scope)
		}()
		defer func() { stop(); <-fetched }()
		dag := &sessionDAG{get: &touchGetter{newArrivingGetter(o, o.arrivals), o}, add: o.dag}
		r, err := unixfs.Cat(o.ctx, dag, c)
		if err != nil {
			return err
		}
		defer r.Close()
		if onSize != nil {
			onSize(r.Size())
		}
		if offset > 0 {
			if _, err := r.Seek(offset, io.SeekStart); err != nil {
				return fmt.Errorf("seek to %d: %w", offset, err)
			}
		}
		var src io.Reader = r
		if length >= 0 {
			src = io.LimitReader(r, length)
		}
		_, err = io.Copy(w, src)
		return err
	})
}

// Providers asks the DHT for up to max providers of c.
func (n *Node) Providers(ctx context.Context, c cid.Cid, max int) ([]peer.AddrInfo, error) {
	start := time.Now()
	var out []peer.AddrInfo
	for ai := range n.net.DHT.FindProvidersAsync(ctx, c, max) {
		out = append(out, ai)
	}
	if err := ctx.Err(); err != nil && len(out) == 0 {
		n.metrics.observeDHT("find_providers", start, err)
		return nil, fmt.Errorf("find providers of %s: %w", c, err)
	}
	n.metrics.observeDHT("find_providers", start, nil)
	return out, nil
}

// provideAsync announces c to the DHT in the background (and every block
// below it with Content.ProvideAll). Its span joins the trace of from (the
// add or pin that asked for it); it runs until the node closes, not until
// from ends.
func (c *content) provideAsync(from context.Context, root cid.Cid) {
	ctx := trace.ContextWithSpanContext(c.ctx, trace.SpanContextFromContext(from))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.provide(ctx, root)
	}()
}

func (c *content) provide(ctx context.Context, root cid.Cid) {
	ctx, span := c.n.startSpan(ctx, "weft.provide", attribute.String("cid", root.String()))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	keys := []cid.Cid{root}
	if c.n.cfg.Content.ProvideAll {
		local := merkledag.NewDAGService(blockservice.New(c.n.store.Blockstore(), nil))
		keys = keys[:0]
		_ = walkOnce(ctx, local, root, func(nd ipld.Node) error {
			keys = append(keys, nd.Cid())
			return nil
		})
	}
	for _, k := range keys {
		start := time.Now()
		err := c.n.net.DHT.Provide(ctx, k, true)
		c.n.metrics.observeDHT("provide", start, err)
		if err != nil {
			c.n.log.Debug("provide failed", "cid", k, "err", err)
			endSpan(span, err)
			return
		}
	}
}

// reprovideLoop announces every pinned root again each ReprovideInterval,
// so provider records never expire while the node holds the data.
func (c *content) reprovideLoop() {
	iv := c.n.cfg.Content.ReprovideInterval.D()
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		pins, err := c.n.store.Pins().List(c.ctx)
		if err != nil {
			c.n.log.Warn("reprovide: list pins", "err", err)
			continue
		}
		for _, p := range pins {
			if c.ctx.Err() != nil {
				return
			}
			c.provide(c.ctx, p.Cid)
		}
	}
}

// Ls lists the directory at c, fetching what is missing.
func (n *Node) Ls(ctx context.Context, c cid.Cid) ([]unixfs.Entry, error) {
	var out []unixfs.Entry
	err := n.readOp(ctx, func(o *op) error {
		var err error
		out, err = unixfs.Ls(o.ctx, o.dag, c)
		return err
	})
	return out, err
}
