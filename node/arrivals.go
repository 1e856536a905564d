package node

import (
	"bytes"
	"context"
	"sync"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Streaming reads. A cat does not wait for the native fetch of its bytes to
// finish before it starts writing them out: the fetch runs beside the
// reader, and the reader, on a block it does not hold yet, waits for the
// fetch to write it (arrivals) instead of asking Bitswap for it. Only
// blocks the fetch wrote to the store, after verifying each against its
// CID, are read; once the fetch has ended (done or failed), a block still
// missing is asked for through the operation's DAG (Bitswap), as before.
//
// The store writes large blocks past the page cache (store/direct.go), so
// reading one back right after it was written would go to the disk: a copy
// of each raw leaf written is kept for the reader, up to arrivalsHeld
// bytes, and handed over once (the reader asks for each leaf once, in
// order). A leaf that did not fit is read from the store.

// arrivalsHeld bounds the leaves kept in memory for one streaming read.
const arrivalsHeld = 32 << 20

// arrivals tells readers when a native fetch writes the blocks they wait
// for, and when the fetch ends.
type arrivals struct {
	mu      sync.Mutex
	waiting map[cid.Cid]chan struct{}
	held    map[cid.Cid][]byte // copies of raw leaves written, not yet read
	size    int                // bytes in held
	ended   bool
	done    chan struct{} // closed when the fetch ends
}

func newArrivals() *arrivals {
	return &arrivals{waiting: map[cid.Cid]chan struct{}{}, held: map[cid.Cid][]byte{}, done: make(chan struct{})}
}

// put keeps copies of the raw leaves among bs (written to the store, so
// verified) while they fit, and wakes the readers waiting for any of bs.
// bs's buffers are reused once it returns.
func (a *arrivals) put(bs []blocks.Block) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range bs {
		c := b.Cid()
		if d := b.RawData(); c.Prefix().Codec == cid.Raw && a.size+len(d) <= arrivalsHeld {
			if _, dup := a.held[c]; !dup {
				a.held[c] = bytes.Clone(d)
				a.size += len(d)
			}
		}
		if ch, ok := a.waiting[c]; ok {
			close(ch)
			delete(a.waiting, c)
		}
	}
}

// take hands over the copy of c, if one is held.
func (a *arrivals) take(c cid.Cid) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d, ok := a.held[c]
	if ok {
		delete(a.held, c)
		a.size -= len(d)
	}
	return d, ok
}

// end says the fetch is over: no more blocks will arrive through it.
func (a *arrivals) end() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ended {
		a.ended = true
		close(a.done)
	}
}

// wait returns a channel closed when c is written, or ok false when the
// fetch has ended already.
func (a *arrivals) wait(c cid.Cid) (ch <-chan struct{}, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return nil, false
	}
	w, found := a.waiting[c]
	if !found {
		w = make(chan struct{})
		a.waiting[c] = w
	}
	return w, true
}

// arrivingGetter reads blocks from the operation's store session; a block
// not there yet is waited for while the fetch runs, and asked for through
// fallback (the operation's DAG, with Bitswap) once it has ended.
type arrivingGetter struct {
	local    ipld.NodeGetter // the session's blockstore alone
	bs       blockstore.Blockstore
	arr      *arrivals
	fallback ipld.NodeGetter
}

func newArrivingGetter(o *op, arr *arrivals) *arrivingGetter {
	bs := o.sess.Blockstore()
	return &arrivingGetter{
		local:    merkledag.NewDAGService(blockservice.New(bs, nil)),
		bs:       bs,
		arr:      arr,
		fallback: o.dag,
	}
}

func (g *arrivingGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	for {
		if d, ok := g.arr.take(c); ok {
			blk, err := blocks.NewBlockWithCid(d, c) // d was verified against c before it was written
			if err != nil {
				return nil, err
			}
			return merkledag.DecodeRawBlock(blk)
		}
		nd, err := g.local.Get(ctx, c)
		if err == nil || !ipld.IsNotFound(err) {
			return nd, err
		}
		ch, ok := g.arr.wait(c)
		if !ok {
			return g.fallback.Get(ctx, c)
		}
		// It may have been written between the read and the wait.
		if has, err := g.bs.Has(ctx, c); err == nil && has {
			continue
		}
		select {
		case <-ch:
		case <-g.arr.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// GetMany gets cs one after the other, in order (the order a file's reader
// asks for them, and the order the fetch brings them), until ctx ends.
func (g *arrivingGetter) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	go func() {
		defer close(out)
		for _, c := range cs {
			nd, err := g.Get(ctx, c)
			out <- &ipld.NodeOption{Node: nd, Err: err} // buffered for all of cs
			if err != nil {
				return
			}
		}
	}()
	return out
}
