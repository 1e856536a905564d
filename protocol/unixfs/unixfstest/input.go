// Package unixfstest makes the deterministic inputs of
// testdata/kubo-cids.json for tests and benchmarks.
package unixfstest

import (
	"crypto/sha256"
	"io"
	"strconv"
)

// Input streams the bytes the "generator" field of kubo-cids.json
// describes (testdata/make-input.py): sha256(seed + ":" + k) for
// k = 0, 1, ..., concatenated and cut to size. It holds one digest at a
// time, so large inputs cost no memory.
type Input struct {
	prefix []byte // seed + ":"
	left   int64
	k      int64
	block  [sha256.Size]byte
	off    int // read offset in block; len(block) when it is used up
	msg    []byte
}

// NewInput returns the input of (seed, size).
func NewInput(seed string, size int64) *Input {
	return &Input{prefix: []byte(seed + ":"), left: size, off: sha256.Size}
}

// Read implements io.Reader.
func (g *Input) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n := 0
	for n < len(p) {
		if g.off == sha256.Size {
			g.msg = strconv.AppendInt(append(g.msg[:0], g.prefix...), g.k, 10)
			g.block = sha256.Sum256(g.msg)
			g.k++
			g.off = 0
		}
		c := copy(p[n:], g.block[g.off:])
		g.off += c
		n += c
	}
	g.left -= int64(n)
	return n, nil
}
