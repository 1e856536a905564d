package collection

import (
	"context"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// BlockGetter fetches blocks by CID, from the local store or the swarm.
// node/ implements it over its blockservice (Bitswap): GetMany maps to
// GetBlocks.
//
// GetMany asks for all cids at once and returns a channel that delivers
// the blocks as they come, in any order, and is closed when all were
// delivered, when the getter gives up on the rest, or when ctx ends. An
// implementation must bound how long it looks for a block that no one has
// (a per-call timeout): Sync asks for everything it is missing in one call
// per round, and a round ends only when the channel is closed. Blocks need
// not be verified against their CIDs (AddBlock does), and blocks not asked
// for are ignored. GetMany may be called from several goroutines at once.
type BlockGetter interface {
	GetMany(ctx context.Context, cids []cid.Cid) <-chan blocks.Block
}

// BlockGetterFunc adapts a function to BlockGetter.
type BlockGetterFunc func(ctx context.Context, cids []cid.Cid) <-chan blocks.Block

// GetMany calls f.
func (f BlockGetterFunc) GetMany(ctx context.Context, cids []cid.Cid) <-chan blocks.Block {
	return f(ctx, cids)
}
