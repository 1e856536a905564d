package p2p

import (
	"context"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bsiface "github.com/ipfs/boxo/bitswap/network"
	"github.com/ipfs/boxo/bitswap/server"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// lazyServer runs boxo's Bitswap server (what answers other peers' wants)
// only while peers use it: it starts at the first Bitswap message from a
// peer and closes after idle without one. A running server's decision
// engine wakes every 100 ms whether or not there is work, which was a fifth
// of an idle daemon's CPU. A peer that still wants something repeats its
// wants every minute (boxo's and Kubo's rebroadcast), so closing after
// several idle minutes loses no want for long: the repeat starts the server
// again and it answers.
//
// It is one of the network's receivers, beside boxo's Bitswap (running only
// its client): messages, connections and disconnections reach both.
type lazyServer struct {
	ctx  context.Context
	net  bsiface.BitSwapNetwork
	bs   blockstore.Blockstore
	opts []server.Option
	idle time.Duration

	mu     sync.Mutex
	srv    *server.Server // nil while stopped
	timer  *time.Timer    // closes srv after idle
	last   time.Time      // the last message
	closed bool
	sent   server.Stat // blocks and bytes sent by servers closed before
	starts int
}

// get returns the running server, starting it if need be, and notes a
// message now; nil once closed.
func (l *lazyServer) get() *server.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.last = time.Now()
	if l.srv == nil {
		l.srv = server.New(l.ctx, l.net, l.bs, l.opts...)
		l.starts++
		if l.timer == nil {
			l.timer = time.AfterFunc(l.idle, l.expire)
		} else {
			l.timer.Reset(l.idle)
		}
	}
	return l.srv
}

// expire closes the server if no message came for idle, or waits again.
func (l *lazyServer) expire() {
	l.mu.Lock()
	if l.closed || l.srv == nil {
		l.mu.Unlock()
		return
	}
	if left := l.idle - time.Since(l.last); left > 0 {
		l.timer.Reset(left)
		l.mu.Unlock()
		return
	}
	srv := l.srv
	l.srv = nil
	if st, err := srv.Stat(); err == nil {
		l.sent.BlocksSent += st.BlocksSent
		l.sent.DataSent += st.DataSent
	}
	l.mu.Unlock()
	srv.Close()
}

// current returns the running server without starting one.
func (l *lazyServer) current() *server.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.srv
}

func (l *lazyServer) running() bool { return l.current() != nil }

// ReceiveMessage implements bsiface.Receiver: wants start the server; a
// message with only blocks and presences (answers to our own wants, which
// the client takes) reaches a running server for its ledgers.
func (l *lazyServer) ReceiveMessage(ctx context.Context, p peer.ID, msg bsmsg.BitSwapMessage) {
	srv := l.current()
	if len(msg.Wantlist()) > 0 {
		srv = l.get()
	}
	if srv != nil {
		srv.ReceiveMessage(ctx, p, msg)
	}
}

// ReceiveError implements bsiface.Receiver; boxo's Bitswap logs errors.
func (l *lazyServer) ReceiveError(error) {}

// PeerConnected implements bsiface.Receiver.
func (l *lazyServer) PeerConnected(p peer.ID) {
	if srv := l.current(); srv != nil {
		srv.PeerConnected(p)
	}
}

// PeerDisconnected implements bsiface.Receiver.
func (l *lazyServer) PeerDisconnected(p peer.ID) {
	if srv := l.current(); srv != nil {
		srv.PeerDisconnected(p)
	}
}

// ReceivedBlocks implements the client's BlockReceivedNotifier: the
// server's ledgers count the blocks peers sent us.
func (l *lazyServer) ReceivedBlocks(from peer.ID, blks []blocks.Block) {
	if srv := l.current(); srv != nil {
		srv.ReceivedBlocks(from, blks)
	}
}

func (l *lazyServer) notifyNewBlocks(ctx context.Context, blks []blocks.Block) error {
	if srv := l.current(); srv != nil {
		return srv.NotifyNewBlocks(ctx, blks...)
	}
	return nil
}

func (l *lazyServer) wantlistForPeer(p peer.ID) []cid.Cid {
	if srv := l.current(); srv != nil {
		return srv.WantlistForPeer(p)
	}
	return nil
}

// stat is the server's statistics, with what servers closed before sent.
func (l *lazyServer) stat() server.Stat {
	l.mu.Lock()
	srv, st := l.srv, l.sent
	l.mu.Unlock()
	if srv != nil {
		if cur, err := srv.Stat(); err == nil {
			st.Peers = cur.Peers
			st.BlocksSent += cur.BlocksSent
			st.DataSent += cur.DataSent
		}
	}
	return st
}

func (l *lazyServer) close() {
	l.mu.Lock()
	l.closed = true
	srv := l.srv
	l.srv = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}
