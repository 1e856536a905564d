package node

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// walkOnce visits every block of the DAG under root exactly once, depth
// first in link order, reading each through ng. A DAG may link the same
// block from many places (a few KB can describe 2^26 paths), so the walk
// keeps a visited set and costs one read per distinct block. It checks ctx
// before every block, so it ends promptly when its request does, even when
// ng reads from the local store and ignores ctx. The stack is explicit: a
// hostile DAG's depth cannot grow the goroutine's stack.
func walkOnce(ctx context.Context, ng ipld.NodeGetter, root cid.Cid, visit func(ipld.Node) error) error {
	seen := cid.NewSet()
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("walk %s: %w", root, context.Cause(ctx))
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !seen.Visit(c) {
			continue
		}
		nd, err := ng.Get(ctx, c)
		if err != nil {
			return err
		}
		if err := visit(nd); err != nil {
			return err
		}
		links := nd.Links()
		for i := len(links) - 1; i >= 0; i-- {
			if !seen.Has(links[i].Cid) {
				stack = append(stack, links[i].Cid)
			}
		}
	}
	return nil
}
