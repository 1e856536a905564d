package p2p

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ipfs/boxo/bitswap"
	bsmsg "github.com/ipfs/boxo/bitswap/message"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Exchange is Bitswap on this host, plus the accounting weft adds to it:
// which peers sent blocks nobody asked for (a block's CID is computed from
// the bytes received, so a peer that answers a want with the wrong bytes
// produces a block under some other CID, which is dropped, never stored,
// and counted against that peer).
type Exchange struct {
	*bitswap.Bitswap
	bs blockstore.Blockstore

	mu        sync.Mutex
	bad       map[peer.ID]int
	badBlocks atomic.Int64
	badLimit  int
	onBad     func(peer.ID, cid.Cid)
	network   *Network
}

// ExchangeConfig configures StartExchange.
type ExchangeConfig struct {
	// BadPeerLimit is how many unrequested blocks a peer may send before it
	// is disconnected (default 3).
	BadPeerLimit int
	// OnBadBlock, if set, is called for every rejected block (for metrics).
	OnBadBlock func(from peer.ID, c cid.Cid)
}

// StartExchange starts Bitswap over bs, finding providers through the DHT.
// It stops when the Network closes.
func (n *Network) StartExchange(bs blockstore.Blockstore, cfg ExchangeConfig) *Exchange {
	if cfg.BadPeerLimit <= 0 {
		cfg.BadPeerLimit = 3
	}
	x := &Exchange{bs: bs, bad: map[peer.ID]int{}, badLimit: cfg.BadPeerLimit, onBad: cfg.OnBadBlock, network: n}
	net := bsnet.NewFromIpfsHost(n.Host)
	x.Bitswap = bitswap.New(n.ctx, net, n.DHT, bs,
		bitswap.WithTracer(x),
	)
	n.exchange = x
	return x
}

// MessageReceived implements bitswap's tracer: it checks every received
// block against the wantlist.
func (x *Exchange) MessageReceived(p peer.ID, msg bsmsg.BitSwapMessage) {
	blks := msg.Blocks()
	if len(blks) == 0 {
		return
	}
	wanted := map[cid.Cid]struct{}{}
	for _, c := range x.Bitswap.GetWantlist() {
		wanted[c] = struct{}{}
	}
	for _, b := range blks {
		if _, ok := wanted[b.Cid()]; ok {
			continue
		}
		if has, _ := x.bs.Has(context.Background(), b.Cid()); has {
			continue // a late duplicate of a block we already got
		}
		x.markBad(p, b.Cid())
	}
}

// MessageSent implements bitswap's tracer.
func (x *Exchange) MessageSent(peer.ID, bsmsg.BitSwapMessage) {}

func (x *Exchange) markBad(p peer.ID, c cid.Cid) {
	x.badBlocks.Add(1)
	x.mu.Lock()
	x.bad[p]++
	over := x.bad[p] >= x.badLimit
	x.mu.Unlock()
	if x.onBad != nil {
		x.onBad(p, c)
	}
	x.network.cfg.Logger.Warn("exchange: rejected a block that matches no wanted CID", "peer", p, "cid", c)
	if over {
		x.network.Host.Network().ClosePeer(p)
	}
}

// BadPeers returns how many rejected blocks each misbehaving peer sent.
func (x *Exchange) BadPeers() map[peer.ID]int {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[peer.ID]int, len(x.bad))
	for p, n := range x.bad {
		out[p] = n
	}
	return out
}

// BadBlocks is the number of rejected blocks.
func (x *Exchange) BadBlocks() int64 { return x.badBlocks.Load() }

// Exchange returns the Exchange StartExchange started, or nil before then.
func (n *Network) Exchange() *Exchange { return n.exchange }
