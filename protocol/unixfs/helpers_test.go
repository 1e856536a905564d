package unixfs

import (
	"context"
	"fmt"
	"testing"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// nullDAG is a DAGService that keeps nothing: an import into it computes
// CIDs only, like `ipfs add --only-hash`.
type nullDAG struct{}

func (nullDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (nullDAG) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

func (nullDAG) Add(context.Context, ipld.Node) error        { return nil }
func (nullDAG) AddMany(context.Context, []ipld.Node) error  { return nil }
func (nullDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (nullDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }

var _ ipld.DAGService = nullDAG{}

// memDAG returns boxo's in-memory DAGService: merkledag over a blockservice
// over a map blockstore.
func memDAG() ipld.DAGService { return mdtest.Mock() }

func mustCid(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return c
}

// decodeAny decodes a dag-pb or raw block, the codecs UnixFS uses.
func decodeAny(b blocks.Block) (ipld.Node, error) {
	switch b.Cid().Prefix().Codec {
	case cid.Raw:
		return mdag.DecodeRawBlock(b)
	case cid.DagProtobuf:
		return mdag.DecodeProtobufBlock(b)
	}
	return nil, fmt.Errorf("codec %#x", b.Cid().Prefix().Codec)
}
