package exchange

import (
	"context"
	"io"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file states what the package needs from the rest of the node. node/
// implements each interface over the real blockstore and libp2p host; the
// tests use in-memory ones. Every method may be called from several
// goroutines at once and must be safe for that.

// Getter is what a Server reads blocks from: a subset of boxo's
// blockstore.Blockstore. Get returns an error matching go-ipld-format's
// IsNotFound for a block it does not have; the Server answers Missing for
// it. Any other error ends the stream with CodeInternal.
type Getter interface {
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// Viewer is optional on a Getter (boxo's blockstore.Viewer): when present
// the Server reads blocks through it, sparing a copy per block. The bytes
// are used only during the callback.
type Viewer interface {
	View(ctx context.Context, c cid.Cid, callback func([]byte) error) error
}

// BlockReader is optional on a Getter, and preferred to Viewer: the Server
// reads each block into a buffer it reuses, sparing the copy out of a View
// and the allocation of a Get. ReadInto returns c's data, in buf's array if
// it fits there and in a new one otherwise, and holds nothing of buf once
// it returns. A missing block is an
// error matching go-ipld-format's IsNotFound.
type BlockReader interface {
	ReadInto(ctx context.Context, c cid.Cid, buf []byte) ([]byte, error)
}

// Sizer is optional on a Getter read through a BlockReader or Viewer: the
// Server asks Buffers for a buffer of the block's size (boxo's
// blockstore.Blockstore has GetSize).
type Sizer interface {
	GetSize(ctx context.Context, c cid.Cid) (int, error)
}

// Blocks is what a Fetcher reads and writes: a subset of boxo's
// blockstore.Blockstore. Has and Get find what is already held, so only
// the rest is asked for; PutMany receives verified blocks in batches, in
// the order they arrived on each stream (a parent before its children).
// Get returns an error matching go-ipld-format's IsNotFound for a missing
// block.
type Blocks interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	PutMany(ctx context.Context, bs []blocks.Block) error
}

// Stream is one bidirectional byte stream to a peer, such as a libp2p
// network.Stream. Close ends it cleanly; Reset aborts it and must make
// blocked Read and Write calls return, from any goroutine.
type Stream interface {
	io.Reader
	io.Writer
	Close() error
	Reset() error
}

// Streams opens streams speaking ProtocolID to peers: for libp2p,
// host.NewStream(ctx, p, ProtocolID). An error means the peer cannot be
// used (unreachable, or it does not speak the protocol).
type Streams interface {
	NewStream(ctx context.Context, p peer.ID) (Stream, error)
}

// Buffers is optional: where a Fetcher gets the buffers it reads blocks of
// 64 KiB and more into (when Config.PutCopies allows reuse), and where a
// Server gets those it reads blocks into through a BlockReader. Get returns
// a slice of length n (contents undefined); Put takes back a slice from
// Get, or any other slice, which it may drop. node/ passes the store's,
// memory its direct I/O is fastest with; without one, buffers come from
// pools on the Go heap.
type Buffers interface {
	Get(n int) []byte
	Put(b []byte)
}
