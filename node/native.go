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
		Blocks: n.store.Blockstore(),
		Logger: n.log.With("subsystem", "exchange"),
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
// written, so a long native fetch that keeps making progress is never cut.
type touchingBlocks struct {
	exchange.Blocks
	o *op
}

func (t touchingBlocks) PutMany(ctx context.Context, bs []blocks.Block) error {
	err := t.Blocks.PutMany(ctx, bs)
	if err == nil {
		t.o.touch()
	}
	return err
}

// streams opens exchange streams over the host.
type streams struct{ n *Node }

func (s streams) NewStream(ctx context.Context, p peer.ID) (exchange.Stream, error) {
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

// fetch tries to make the scope under root local through the native
// protocol: first from connected weft peers, then from weft peers the DHT
// names as providers. It returns nil when everything is held; otherwise the
// caller falls back to Bitswap, which only fetches what is still missing.
func (x *native) fetch(o *op, root cid.Cid, scope exchange.Scope) error {
	if !x.n.cfg.Content.Native {
		return errors.New("native exchange disabled")
	}
	f, err := exchange.NewFetcher(exchange.Config{
		Blocks:  touchingBlocks{o.sess.Blockstore(), o},
		Streams: streams{x.n},
		Logger:  x.n.log.With("subsystem", "exchange"),
		// The store copies small blocks into Badger and writes large ones
		// out before PutMany returns.
		PutCopies: true,
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
	try := func(ps []peer.ID) error {
		if len(ps) == 0 {
			return exchange.ErrNoProviders
		}
		_, err := f.Fetch(o.ctx, root, scope, ps)
		if err == nil {
			o.touch()
		}
		return err
	}
	err = try(x.nativePeers(nil))
	if err == nil || o.ctx.Err() != nil {
		return err
	}
	// Ask the DHT who provides root, connect to them, and try the weft
	// peers among them.
	ctx, cancel := context.WithTimeout(o.ctx, 5*time.Second)
	defer cancel()
	var found []peer.ID
	for ai := range x.n.net.DHT.FindProvidersAsync(ctx, root, 8) {
		if ai.ID == x.n.net.Host.ID() {
			continue
		}
		if x.n.net.Host.Network().Connectedness(ai.ID) != network.Connected {
			if err := x.n.net.Host.Connect(ctx, ai); err != nil {
				continue
			}
		}
		found = append(found, ai.ID)
	}
	if len(found) == 0 {
		return err
	}
	// Identify must have run for the protocol check; Connect waits for it.
	return try(x.nativePeers(found))
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
