package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"go.opentelemetry.io/otel/attribute"

	"github.com/weft-p2p/weft/protocol/exchange"
)

// native runs weft's own block exchange (protocol/exchange) beside Bitswap:
// a Server answering other weft nodes from the store, and fetches that ask
// weft peers for whole DAGs (or byte ranges) on one stream each, falling
// back to Bitswap for whatever they could not get, and for peers that only
// speak Bitswap.
type native struct {
	n   *Node
	srv *exchange.Server

	// What fetches received through the native protocol.
	blocks, bytes, fetches, badBlocks, badPeers atomic.Int64
}

func newNative(n *Node) (*native, error) {
	srv, err := exchange.NewServer(exchange.ServerConfig{
		Blocks:            n.store.Blockstore(),
		Buffers:           n.store.Buffers(),
		MaxStreams:        n.cfg.Content.NativeMaxStreams,
		MaxStreamsPerPeer: n.cfg.Content.NativeStreamsPerPeer,
		WriteTimeout:      n.cfg.Content.NativeWriteTimeout.D(),
		Logger:            n.log.With("subsystem", "exchange"),
		Tracer:            n.exchangeTracer(),
	})
	if err != nil {
		return nil, fmt.Errorf("start exchange server: %w", err)
	}
	x := &native{n: n, srv: srv}
	n.net.Host.SetStreamHandler(exchange.ProtocolID, func(s network.Stream) {
		srv.Handle(s, s.Conn().RemotePeer())
	})
	return x, nil
}

func (x *native) close() {
	x.n.net.Host.RemoveStreamHandler(exchange.ProtocolID)
	x.srv.Close()
}

// touchingBlocks pushes the operation's idle timeout back on every batch
// written, so a long native fetch that keeps making progress is never cut,
// and tells a streaming reader of the operation (op.arrivals) what arrived.
type touchingBlocks struct {
	exchange.Blocks
	o *op
}

func (t touchingBlocks) PutMany(ctx context.Context, bs []blocks.Block) error {
	err := t.Blocks.PutMany(ctx, bs)
	if err == nil {
		t.o.touch()
		if t.o.arrivals != nil {
			t.o.arrivals.put(bs)
		}
	}
	return err
}

// streams opens exchange streams over the host.
type streams struct{ n *Node }

// A limited (relayed) connection is allowed: behind NATs it may be the only
// one there is until hole punching replaces it, and the relay's own data
// limit bounds what goes through it.
func (s streams) NewStream(ctx context.Context, p peer.ID) (exchange.Stream, error) {
	ctx = network.WithAllowLimitedConn(ctx, "weft exchange")
	return s.n.net.Host.NewStream(ctx, p, exchange.ProtocolID)
}

// nativePeers lists connected peers that speak the native protocol, the
// ones in prefer first.
func (x *native) nativePeers(prefer []peer.ID) []peer.ID {
	h := x.n.net.Host
	seen := map[peer.ID]bool{}
	var out []peer.ID
	add := func(p peer.ID) {
		if seen[p] || p == h.ID() {
			return
		}
		seen[p] = true
		if ps, err := h.Peerstore().SupportsProtocols(p, exchange.ProtocolID); err == nil && len(ps) > 0 {
			out = append(out, p)
		}
	}
	for _, p := range prefer {
		add(p)
	}
	for _, p := range h.Network().Peers() {
		add(p)
	}
	return out
}

// nativeBatch is how many providers one Fetcher.Fetch call is given (and
// its MaxProviders). Several, so one fetch draws from several holders at
// once; a few at a time, so a pass over a large swarm moves on quickly when
// the peers asked lack the file (they are fetching it too). Two Fetcher
// behaviours once made fetch-swarm-30 (29 nodes fetching one file at once)
// hang until the idle timeout: providers in use that all answered Missing
// waited for ever while the holder went unasked (a Missing answer now
// brings in a spare provider), and a provider that had sent only the small
// root looked fast and preempted the holder again and again (preemption
// now needs a provider that delivered a few MiB). TestSwarmFetchAtOnce
// covers both.
const nativeBatch = 4

// nativeRetries is how many more passes over the peers a native fetch
// makes after a pass that brought nothing, nativeBackoff apart (doubling):
// in a swarm fetching the same content at once, a peer that lacked it a
// moment ago, or refused a stream while busy, has it or room soon after. A
// pass that brought blocks is followed by another at once.
const (
	nativeRetries = 2
	nativeBackoff = 500 * time.Millisecond
)

// fetch tries to make the scope under root local through the native
// protocol: from connected weft peers, one after the other, then from
// weft peers the DHT names as providers (first) and the connected ones
// again. It returns nil when everything is held; otherwise the caller falls
// back to Bitswap, which only fetches what is still missing.
func (x *native) fetch(ctx context.Context, o *op, root cid.Cid, scope exchange.Scope) (err error) {
	if !x.n.cfg.Content.Native {
		return errors.New("native exchange disabled")
	}
	ctx, span := x.n.startSpan(ctx, "weft.fetch.native", attribute.String("cid", root.String()),
		attribute.String("scope", scope.Kind.String()))
	defer func() { endSpan(span, err) }()
	log := x.n.log.With("subsystem", "exchange")
	f, err := exchange.NewFetcher(exchange.Config{
		Blocks:       touchingBlocks{o.sess.Blockstore(), o},
		Streams:      streams{x.n},
		MaxProviders: nativeBatch,
		Logger:       log,
		// The store copies small blocks into Badger and writes large ones
		// out before PutMany returns.
		PutCopies: true,
		Buffers:   x.n.store.Buffers(),
		Tracer:    x.n.exchangeTracer(),
	})
	if err != nil {
		return err
	}
	defer func() {
		t := f.Totals()
		x.fetches.Add(t.Fetches)
		x.blocks.Add(t.Blocks)
		x.bytes.Add(t.Bytes)
		x.badBlocks.Add(t.BadBlocks)
		x.badPeers.Add(t.BadPeers)
	}()
	// pass asks ps, nativeBatch at a time, until one call gets everything;
	// it reports whether any call brought blocks.
	pass := func(ps []peer.ID) (progress bool, err error) {
		if len(ps) == 0 {
			return false, exchange.ErrNoProviders
		}
		for len(ps) > 0 {
			batch := ps[:min(nativeBatch, len(ps))]
			ps = ps[len(batch):]
			var st exchange.Stats
			start := time.Now()
			st, err = f.Fetch(ctx, root, scope, batch)
			progress = progress || st.Blocks > 0
			if err == nil {
				o.touch()
				log.Debug("native fetch: done", "cid", root, "peers", batch, "blocks", st.Blocks,
					"requests", st.Requests, "took", time.Since(start))
				return progress, nil
			}
			if o.ctx.Err() != nil {
				return progress, err
			}
			log.Debug("native fetch: these peers could not deliver everything", "cid", root,
				"peers", batch, "blocks", st.Blocks, "took", time.Since(start), "err", err)
		}
		return progress, err
	}
	var found []peer.ID
	looked := false
	idle, wait := 0, nativeBackoff
	for {
		peers := x.nativePeers(found)
		progress, err := pass(peers)
		if err == nil || o.ctx.Err() != nil {
			return err
		}
		if !looked {
			// Ask the DHT who provides root, connect to them, and ask the
			// weft peers among them first from now on.
			looked = true
			found = x.dhtProviders(ctx, root)
			if len(found) > 0 {
				continue
			}
		}
		if progress {
			idle, wait = 0, nativeBackoff
			continue
		}
		if idle++; idle > nativeRetries || len(peers) == 0 {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-o.ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// dhtProviders asks the DHT for up to 8 providers of root (for at most 5 s)
// and connects to them; Connect waits for identify, which the protocol
// check in nativePeers needs.
func (x *native) dhtProviders(ctx context.Context, root cid.Cid) (found []peer.ID) {
	ctx, span := x.n.startSpan(ctx, "weft.fetch.find_providers", attribute.String("cid", root.String()))
	defer func() {
		span.SetAttributes(attribute.Int("providers", len(found)))
		span.End()
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h := x.n.net.Host
	for ai := range x.n.net.DHT.FindProvidersAsync(ctx, root, 8) {
		if ai.ID == h.ID() {
			continue
		}
		if h.Network().Connectedness(ai.ID) != network.Connected {
			if err := h.Connect(ctx, ai); err != nil {
				continue
			}
		}
		found = append(found, ai.ID)
	}
	return found
}

// NativeStats reports what the native exchange moved.
type NativeStats struct {
	Fetches, Blocks, Bytes, BadBlocks, BadPeers int64
	Served                                      exchange.ServerStats
}

// NativeStats reports the native exchange's counters.
func (n *Node) NativeStats() NativeStats {
	x := n.native
	return NativeStats{Fetches: x.fetches.Load(), Blocks: x.blocks.Load(), Bytes: x.bytes.Load(),
		BadBlocks: x.badBlocks.Load(), BadPeers: x.badPeers.Load(), Served: x.srv.Stats()}
}
