package exchange

import (
	"encoding/binary"
	"fmt"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// item is a want inside a walk, with the parent link's size as an estimate
// of the bytes below it (0: unknown), which only the scheduler uses.
type item struct {
	c     cid.Cid
	scope Scope
	est   uint64
}

func (it item) want() Want { return Want{Cid: it.c, Scope: it.scope} }

// key identifies a (CID, scope) for the walk's "visited" rule.
func (it item) key() string {
	k := make([]byte, 0, 1+len(it.c.KeyString())+16)
	k = append(k, byte(it.scope.Kind))
	k = append(k, it.c.KeyString()...)
	if it.scope.Kind == ScopeRange {
		k = binary.BigEndian.AppendUint64(k, it.scope.Offset)
		k = binary.BigEndian.AppendUint64(k, it.scope.Length)
	}
	return string(k)
}

// walk is the depth-first order of the package doc, shared by Server and
// Fetcher so that both compute the same sequence of CIDs from the same
// blocks. It is not safe for concurrent use.
type walk struct {
	stack      []item // top is the last element
	seen       map[string]struct{}
	maxPending int
	scratch    []item
	// skipped collects the wants whose CID verifcid refuses: nobody could
	// check their blocks, so the walk neither sends nor follows them.
	skipped []item
}

func newWalk(wants []item, maxPending int) *walk {
	w := &walk{seen: make(map[string]struct{}), maxPending: maxPending}
	w.stack = make([]item, 0, len(wants))
	for i := len(wants) - 1; i >= 0; i-- {
		w.stack = append(w.stack, wants[i])
	}
	return w
}

// next returns the next block the walk needs sent, marking it visited.
// Identity CIDs are expanded on the spot and never returned, nor are CIDs
// that fail verifiable (see skipped).
func (w *walk) next() (item, bool, error) {
	for len(w.stack) > 0 {
		it := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		k := it.key()
		if _, ok := w.seen[k]; ok {
			continue
		}
		w.seen[k] = struct{}{}
		if !verifiable(it.c) {
			w.skipped = append(w.skipped, it)
			continue
		}
		if it.c.Prefix().MhType == mh.IDENTITY {
			dh, err := mh.Decode(it.c.Hash())
			if err != nil {
				continue // cid.Cast already checked it; cannot happen
			}
			if err := w.expand(it, dh.Digest); err != nil {
				return item{}, false, err
			}
			continue
		}
		return it, true, nil
	}
	return item{}, false, nil
}

// expand pushes the children that follow it, given its block's bytes.
func (w *walk) expand(it item, data []byte) error {
	w.scratch = children(w.scratch[:0], it, data)
	err := w.push(it, w.scratch)
	clear(w.scratch)
	return err
}

// push pushes kids, the children of it computed by children.
func (w *walk) push(it item, kids []item) error {
	if len(w.stack)+len(kids) > w.maxPending {
		return fmt.Errorf("%w: more than %d blocks pending below %s", ErrTooLarge, w.maxPending, it.c)
	}
	for i := len(kids) - 1; i >= 0; i-- {
		w.stack = append(w.stack, kids[i])
	}
	return nil
}

// remaining returns the wants not yet visited, in walk order, headed by
// first if it is defined (the item next returned, when it was not
// delivered). Items already visited may repeat; the next walk skips them.
func (w *walk) remaining(first *item) []item {
	out := make([]item, 0, len(w.stack)+1)
	if first != nil {
		out = append(out, *first)
	}
	for i := len(w.stack) - 1; i >= 0; i-- {
		if _, ok := w.seen[w.stack[i].key()]; !ok {
			out = append(out, w.stack[i])
		}
	}
	return out
}

// children appends to dst the wants below it, in link order, per the
// rules of the package doc. It depends only on it and data, so provider
// and requester agree.
func children(dst []item, it item, data []byte) []item {
	if it.scope.Kind == ScopeBlock || it.c.Type() != cid.DagProtobuf {
		return dst
	}
	nd, err := mdag.DecodeProtobuf(data)
	if err != nil {
		return dst
	}
	links := nd.Links()
	if len(links) == 0 {
		return dst
	}
	if it.scope.Kind == ScopeDAG {
		for _, l := range links {
			dst = append(dst, item{c: l.Cid, scope: Scope{Kind: ScopeDAG}, est: l.Size})
		}
		return dst
	}
	// ScopeRange: only a UnixFS file node with one blocksize per link.
	fsn, err := ft.FSNodeFromBytes(nd.Data())
	if err != nil || fsn.Type() != pb.Data_File && fsn.Type() != pb.Data_Raw {
		return dst
	}
	sizes := fsn.BlockSizes()
	if len(sizes) != len(links) {
		return dst
	}
	lo, hi := it.scope.Offset, it.scope.end()
	pos := uint64(len(fsn.Data()))
	for i, l := range links {
		start := pos
		end := addSat(start, sizes[i])
		pos = end
		if end <= lo || start >= hi || start == end {
			continue
		}
		if start >= lo && end <= hi {
			dst = append(dst, item{c: l.Cid, scope: Scope{Kind: ScopeDAG}, est: l.Size})
			continue
		}
		from, to := max(lo, start), min(hi, end)
		dst = append(dst, item{
			c:     l.Cid,
			scope: Scope{Kind: ScopeRange, Offset: from - start, Length: to - from},
			est:   min(l.Size, to-from),
		})
	}
	return dst
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}
