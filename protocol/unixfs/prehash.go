package unixfs

import (
	"io"
	"runtime"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Hashing raw leaves ahead of the importer.
//
// boxo's importer hashes each leaf when it makes the leaf's node, on the one
// goroutine that also reads the input and builds the tree, so an add runs
// at the speed of one core's hashing at best. With raw leaves a leaf's CID
// is the hash of the chunk itself, so it can be computed as soon as the
// chunk is read: prehash reads up to ahead chunks in advance and hashes
// each on a goroutine of its own, and prehashBuilder, the CID builder the
// importer is given, answers the importer's Sum for a chunk prehash handed
// out with the hash computed already (waiting for it if need be). Anything
// else the builder is asked to hash (dag-pb nodes, which wrap or link the
// leaves) is hashed as usual. The CIDs are exactly those of the plain
// importer: the same bytes, hash function and prefix.
//
// Memory: at most ahead chunks are read ahead; the goroutines hash chunks
// already in memory and end on their own.

// prehashAhead is how many chunks prehash reads ahead: enough to keep the
// machine's cores hashing, bounded to aheadBytes of chunks.
func prehashAhead(chunkSize int64) int {
	const aheadBytes = 8 << 20
	return max(2*runtime.GOMAXPROCS(0), int(aheadBytes/chunkSize))
}

// prehash is a chunker.Splitter over src that hashes chunks ahead.
type prehash struct {
	src    chunker.Splitter
	code   uint64 // multihash function and length of the leaves' CIDs
	length int
	ahead  int
	queue  []*pendingChunk
	last   *pendingChunk // handed out, waiting for the importer's Sum
	err    error         // src's, returned once the queue is empty
}

type pendingChunk struct {
	data []byte
	done chan struct{}
	sum  mh.Multihash
	err  error
}

func newPrehash(src chunker.Splitter, prefix cid.Prefix, chunkSize int64) *prehash {
	return &prehash{src: src, code: prefix.MhType, length: prefix.MhLength, ahead: prehashAhead(chunkSize)}
}

func (p *prehash) Reader() io.Reader { return p.src.Reader() }

// NextBytes tops the queue up to ahead chunks, starting the hash of each,
// and hands out the first.
func (p *prehash) NextBytes() ([]byte, error) {
	for p.err == nil && len(p.queue) < p.ahead {
		b, err := p.src.NextBytes()
		if len(b) > 0 {
			pc := &pendingChunk{data: b, done: make(chan struct{})}
			go func() {
				defer close(pc.done)
				pc.sum, pc.err = mh.Sum(pc.data, p.code, p.length)
			}()
			p.queue = append(p.queue, pc)
		}
		if err != nil {
			p.err = err
		}
	}
	if len(p.queue) == 0 {
		return nil, p.err
	}
	pc := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	p.last = pc
	return pc.data, nil
}

// close waits for the hashes still running (they take no longer than
// hashing a chunk).
func (p *prehash) close() {
	for _, pc := range p.queue {
		<-pc.done
	}
	if p.last != nil {
		<-p.last.done
	}
}

// take returns the precomputed hash of data if data is the chunk handed out
// last (the same bytes in memory, not merely equal ones).
func (p *prehash) take(data []byte) (mh.Multihash, bool) {
	pc := p.last
	if pc == nil || len(data) == 0 || len(data) != len(pc.data) || &data[0] != &pc.data[0] {
		return nil, false
	}
	p.last = nil
	<-pc.done
	return pc.sum, pc.err == nil
}

// prehashBuilder is the importer's cid.Builder when prehash is in use.
type prehashBuilder struct {
	inner cid.Builder
	p     *prehash
}

func (b prehashBuilder) Sum(data []byte) (cid.Cid, error) {
	if sum, ok := b.p.take(data); ok {
		pref, ok := b.inner.(cid.Prefix)
		if ok && pref.Version == 1 && pref.MhType == b.p.code && pref.MhLength == b.p.length {
			return cid.NewCidV1(pref.Codec, sum), nil
		}
	}
	return b.inner.Sum(data)
}

func (b prehashBuilder) GetCodec() uint64 { return b.inner.GetCodec() }

func (b prehashBuilder) WithCodec(c uint64) cid.Builder {
	return prehashBuilder{inner: b.inner.WithCodec(c), p: b.p}
}
