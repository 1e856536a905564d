package unixfs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

const benchSize = 256 << 20

// patternReader yields size bytes of a random 1 MiB pattern, stamped with a
// counter every MiB so that no two chunks are alike. Reading costs one copy,
// as reading a file would.
type patternReader struct {
	pattern []byte
	left    int64
	off     int64
}

func newPattern(size int64) *patternReader {
	p := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return &patternReader{pattern: p, left: size}
}

func (r *patternReader) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	at := r.off % int64(len(r.pattern))
	if at == 0 {
		binary.LittleEndian.PutUint64(r.pattern, uint64(r.off))
	}
	n := copy(b, r.pattern[at:min(int64(len(r.pattern)), at+r.left)])
	r.off += int64(n)
	r.left -= int64(n)
	return n, nil
}

// BenchmarkAddFile imports 256 MiB. "discard" computes CIDs only (hashing
// and encoding, like `ipfs add --only-hash`); "memory" also stores every
// block in boxo's in-memory blockstore. Compare with BenchmarkSHA256.
func BenchmarkAddFile(b *testing.B) {
	v0, _ := Profile(ProfileV0_2015)
	for _, bc := range []struct {
		name  string
		opts  Options
		store bool
	}{
		{"v1-2025/discard", DefaultOptions(), false},
		{"v1-2025/memory", DefaultOptions(), true},
		{"v0-2015/discard", v0, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				var dag ipld.DAGService = nullDAG{}
				if bc.store {
					dag = memDAG()
				}
				if _, err := AddFile(context.Background(), dag, newPattern(benchSize), bc.opts, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSHA256 is the baseline: this machine's SHA-256 rate over 256 MiB
// in 1 MiB writes, with the standard library and with the implementation
// go-multihash registers.
func BenchmarkSHA256(b *testing.B) {
	buf := newPattern(1 << 20).pattern
	b.Run("crypto", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			h := sha256.New()
			for range benchSize / len(buf) {
				h.Write(buf)
			}
			h.Sum(nil)
		}
	})
	b.Run("multihash", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			for range benchSize / len(buf) {
				if _, err := mh.Sum(buf, mh.SHA2_256, -1); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
