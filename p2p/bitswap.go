package p2p

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/client"
	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bsiface "github.com/ipfs/boxo/bitswap/network"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/bitswap/server"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Bitswap is boxo's Bitswap on this host (not protocol/exchange, weft's
// native exchange), plus the accounting weft adds to it:
// which peers sent blocks nobody asked for (a block's CID is computed from
// the bytes received, so a peer that answers a want with the wrong bytes
// produces a block under some other CID, which is dropped, never stored,
// and counted against that peer).
type Bitswap struct {
	*bitswap.Bitswap

	mu        sync.Mutex
	bad       map[peer.ID]int
	badBlocks atomic.Int64
	badLimit  int
	onBad     func(peer.ID, cid.Cid)
	network   *Network
	asked     *askedSet
	server    *lazyServer
}

// BitswapConfig configures StartBitswap.
type BitswapConfig struct {
	// BadPeerLimit is how many unrequested blocks a peer may send before it
	// is disconnected (default 3).
	BadPeerLimit int
	// OnBadBlock, if set, is called for every rejected block (for metrics).
	OnBadBlock func(from peer.ID, c cid.Cid)
	// ServerIdle is how long the Bitswap server (what answers other peers'
	// wants) keeps running after the last message from any peer (default
	// 5m; peers repeat the wants they still have every minute). It starts
	// again at the next message. While it runs its decision engine wakes
	// ten times a second.
	ServerIdle time.Duration
}

// StartBitswap starts Bitswap over bs, finding providers through the DHT.
// It stops when the Network closes.
func (n *Network) StartBitswap(bs blockstore.Blockstore, cfg BitswapConfig) *Bitswap {
	if cfg.BadPeerLimit <= 0 {
		cfg.BadPeerLimit = 3
	}
	if cfg.ServerIdle <= 0 {
		cfg.ServerIdle = 5 * time.Minute
	}
	x := &Bitswap{bad: map[peer.ID]int{}, badLimit: cfg.BadPeerLimit, onBad: cfg.OnBadBlock, network: n, asked: newAskedSet()}
	n.Host.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(net network.Network, c network.Conn) {
			if net.Connectedness(c.RemotePeer()) != network.Connected {
				x.asked.forget(c.RemotePeer())
			}
		},
	})
	inner := bsnet.NewFromIpfsHost(n.Host)
	var serverOpts []server.Option
	if w := n.cfg.BitswapWorkers; w > 0 {
		serverOpts = append(serverOpts, server.EngineBlockstoreWorkerCount(w), server.TaskWorkerCount(w))
	}
	x.server = &lazyServer{ctx: n.ctx, net: inner, bs: bs, opts: serverOpts, idle: cfg.ServerIdle}
	net := &recordingNet{BitSwapNetwork: inner, asked: x.asked, also: x.server}
	opts := []bitswap.Option{
		bitswap.WithTracer(x),
		// boxo's own server would run from the start; lazyServer runs it
		// only while peers ask for blocks.
		bitswap.WithServerEnabled(false),
		bitswap.WithClientOption(client.WithBlockReceivedNotifier(x.server)),
	}
	x.Bitswap = bitswap.New(n.ctx, net, n.DHT, bs, opts...)
	n.bitswap = x
	return x
}

// MessageReceived implements bitswap's tracer: a block counts against its
// sender unless its CID was asked of that peer recently. A peer that
// answers a want with the wrong bytes produces a block under a CID nobody
// asked it for; an honest peer whose blocks arrive after we cancelled the
// want sent a CID we did ask for, and is not blamed.
func (x *Bitswap) MessageReceived(p peer.ID, msg bsmsg.BitSwapMessage) {
	for _, b := range msg.Blocks() {
		if !x.asked.was(p, b.Cid()) {
			x.markBad(p, b.Cid())
		}
	}
}

// MessageSent implements bitswap's tracer (only its server reports here).
func (x *Bitswap) MessageSent(peer.ID, bsmsg.BitSwapMessage) {}

// recordingNet wraps the Bitswap network to record the CIDs asked of each
// peer: Bitswap's client reports no sent messages to a tracer, so the
// wants are taken where they leave.
type recordingNet struct {
	bsiface.BitSwapNetwork
	asked *askedSet
	also  bsiface.Receiver // receives what Bitswap's own receiver does
}

// Start adds the lazy server to the receivers boxo's Bitswap registers.
func (r *recordingNet) Start(rs ...bsiface.Receiver) {
	r.BitSwapNetwork.Start(append(rs, r.also)...)
}

func (r *recordingNet) SendMessage(ctx context.Context, p peer.ID, msg bsmsg.BitSwapMessage) error {
	r.asked.record(p, msg)
	return r.BitSwapNetwork.SendMessage(ctx, p, msg)
}

func (r *recordingNet) NewMessageSender(ctx context.Context, p peer.ID, opts *bsiface.MessageSenderOpts) (bsiface.MessageSender, error) {
	ms, err := r.BitSwapNetwork.NewMessageSender(ctx, p, opts)
	if err != nil {
		return nil, err
	}
	return &recordingSender{MessageSender: ms, p: p, asked: r.asked}, nil
}

type recordingSender struct {
	bsiface.MessageSender
	p     peer.ID
	asked *askedSet
}

func (s *recordingSender) SendMsg(ctx context.Context, msg bsmsg.BitSwapMessage) error {
	s.asked.record(s.p, msg)
	return s.MessageSender.SendMsg(ctx, msg)
}

// record notes the wants (not cancels) of an outgoing message.
func (a *askedSet) record(p peer.ID, msg bsmsg.BitSwapMessage) {
	var cids []cid.Cid
	for _, e := range msg.Wantlist() {
		if !e.Cancel {
			cids = append(cids, e.Cid)
		}
	}
	if len(cids) > 0 {
		a.add(p, cids)
	}
}

// askedSet remembers which CIDs were asked of which peer, in two
// generations that rotate every askedWindow, so memory stays bounded by the
// wants sent in the last two windows. A peer's entries go when it
// disconnects.
type askedSet struct {
	mu       sync.Mutex
	cur, old map[peer.ID]map[cid.Cid]struct{}
	rotated  time.Time
}

const askedWindow = 2 * time.Minute

func newAskedSet() *askedSet {
	return &askedSet{cur: map[peer.ID]map[cid.Cid]struct{}{}, old: map[peer.ID]map[cid.Cid]struct{}{}, rotated: time.Now()}
}

func (a *askedSet) add(p peer.ID, cids []cid.Cid) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.rotated) > askedWindow {
		a.old, a.cur, a.rotated = a.cur, map[peer.ID]map[cid.Cid]struct{}{}, time.Now()
	}
	m := a.cur[p]
	if m == nil {
		m = map[cid.Cid]struct{}{}
		a.cur[p] = m
	}
	for _, c := range cids {
		m[c] = struct{}{}
	}
}

func (a *askedSet) was(p peer.ID, c cid.Cid) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cur[p][c]; ok {
		return true
	}
	_, ok := a.old[p][c]
	return ok
}

func (a *askedSet) forget(p peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.cur, p)
	delete(a.old, p)
}

func (x *Bitswap) markBad(p peer.ID, c cid.Cid) {
	x.badBlocks.Add(1)
	x.mu.Lock()
	x.bad[p]++
	over := x.bad[p] >= x.badLimit
	x.mu.Unlock()
	if x.onBad != nil {
		x.onBad(p, c)
	}
	x.network.cfg.Logger.Warn("bitswap: rejected a block that matches no wanted CID", "peer", p, "cid", c)
	if over {
		x.network.Host.Network().ClosePeer(p)
	}
}

// BadPeers returns how many rejected blocks each misbehaving peer sent.
func (x *Bitswap) BadPeers() map[peer.ID]int {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[peer.ID]int, len(x.bad))
	for p, n := range x.bad {
		out[p] = n
	}
	return out
}

// BadBlocks is the number of rejected blocks.
func (x *Bitswap) BadBlocks() int64 { return x.badBlocks.Load() }

// Bitswap returns the Bitswap StartBitswap started, or nil before then.
func (n *Network) Bitswap() *Bitswap { return n.bitswap }

// NotifyNewBlocks tells the client (wants waiting for these blocks) and,
// when it runs, the server (peers that want them) about blocks just stored.
func (x *Bitswap) NotifyNewBlocks(ctx context.Context, blks ...blocks.Block) error {
	return errors.Join(x.Bitswap.NotifyNewBlocks(ctx, blks...), x.server.notifyNewBlocks(ctx, blks))
}

// Stat is boxo's Bitswap statistics, the server's included.
func (x *Bitswap) Stat() (*bitswap.Stat, error) {
	st, err := x.Bitswap.Stat()
	if err != nil {
		return st, err
	}
	ss := x.server.stat()
	st.Peers, st.BlocksSent, st.DataSent = ss.Peers, ss.BlocksSent, ss.DataSent
	return st, nil
}

// WantlistForPeer is what p wants of us (or, for ourselves, what we want).
func (x *Bitswap) WantlistForPeer(p peer.ID) []cid.Cid {
	if p == x.network.Host.ID() {
		return x.Bitswap.WantlistForPeer(p)
	}
	return x.server.wantlistForPeer(p)
}

// Close stops the client, the network and the server.
func (x *Bitswap) Close() error {
	err := x.Bitswap.Close()
	x.server.close()
	return err
}

// ServerRunning reports whether the Bitswap server runs now.
func (x *Bitswap) ServerRunning() bool { return x.server.running() }
