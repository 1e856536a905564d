package store

import (
	"encoding/binary"
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// fakeBlocks returns n blocks sharing one body, each under a distinct CID
// made by hashing a counter: the store does not re-hash, so this measures
// the store and not SHA-256.
func fakeBlocks(b *testing.B, body []byte, start, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	var ctr [8]byte
	for i := range out {
		binary.LittleEndian.PutUint64(ctr[:], uint64(start+i))
		h, err := mh.Sum(ctr[:], mh.SHA2_256, -1)
		if err != nil {
			b.Fatal(err)
		}
		out[i], err = blocks.NewBlockWithCid(body, cid.NewCidV1(cid.Raw, h))
		if err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// BenchmarkPutMany writes new blocks in batches of 16, as an add or a
// fetch does; b.N counts blocks.
func BenchmarkPutMany(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s := openStore(b, Config{})
			body := make([]byte, size)
			for i := range body {
				body[i] = byte(i * 7)
			}
			const batch = 16
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				blks := fakeBlocks(b, body, i, min(batch, b.N-i))
				if err := s.Blockstore().PutMany(b.Context(), blks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGet reads 1 MiB blocks at random from a store of 256 of them
// (real blocks: a read from the file tier checks the data's hash).
func BenchmarkGet(b *testing.B) {
	s := openStore(b, Config{})
	blks := distinctBlocks(b, 1, 256, 1<<20)
	for i := 0; i < len(blks); i += 16 {
		if err := s.Blockstore().PutMany(b.Context(), blks[i:i+16]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Blockstore().Get(b.Context(), blks[(i*97)%len(blks)].Cid()); err != nil {
			b.Fatal(err)
		}
	}
}
