package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// openStore opens a store in a fresh temporary directory (unless cfg names
// one) and closes it when the test ends.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Path == "" && !cfg.InMemory {
		cfg.Path = t.TempDir()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// reopen closes s and opens the same directory again.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openStore(t, s.cfg)
}

// reopenAfterCrash stops s as a killed process leaves its store (Badger
// closed, so its writes are on disk, but no clean-stop record and nothing
// synced on purpose) and opens the same directory again.
func reopenAfterCrash(t testing.TB, s *Store) *Store {
	t.Helper()
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.compDone
		s.life.Lock()
		s.closed = true
		s.life.Unlock()
		if s.files != nil {
			// Unlike Close, nothing trims the writing pack.
			ps := &s.files.packs
			ps.mu.Lock()
			for _, p := range ps.open {
				p.fd.Close()
			}
			ps.open, ps.cur = nil, nil
			ps.mu.Unlock()
			s.files.aioOnce.Do(func() {})
			if s.files.aio != nil {
				s.files.aio.close()
			}
		}
		if err := s.db.Close(); err != nil {
			t.Fatalf("close Badger: %v", err)
		}
		s.unlock()
	})
	return openStore(t, s.cfg)
}

// rawBlock returns a raw-codec block of size pseudo-random bytes.
func rawBlock(t testing.TB, rng *rand.Rand, size int) blocks.Block {
	t.Helper()
	data := make([]byte, size)
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return rawBlockOf(t, data)
}

func rawBlockOf(t testing.TB, data []byte) blocks.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, h))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dag is a small two-level DAG: root (dag-pb) -> mid (dag-pb) -> leaves
// (raw), plus root -> one more raw leaf.
type dag struct {
	root   blocks.Block
	mid    blocks.Block
	leaves []blocks.Block
}

func (d dag) all() []blocks.Block {
	return append([]blocks.Block{d.root, d.mid}, d.leaves...)
}

func makeDAG(t testing.TB, rng *rand.Rand, nleaves, leafSize int) dag {
	t.Helper()
	var d dag
	mid := merkledag.NodeWithData([]byte("mid"))
	for i := range nleaves {
		leaf := rawBlock(t, rng, leafSize)
		d.leaves = append(d.leaves, leaf)
		if i == nleaves-1 {
			break // the last leaf hangs off the root
		}
		if err := mid.AddRawLink("", &ipld.Link{Cid: leaf.Cid(), Size: uint64(leafSize)}); err != nil {
			t.Fatal(err)
		}
	}
	root := merkledag.NodeWithData([]byte("root"))
	if err := root.AddNodeLink("mid", mid); err != nil {
		t.Fatal(err)
	}
	last := d.leaves[len(d.leaves)-1]
	if err := root.AddRawLink("last", &ipld.Link{Cid: last.Cid(), Size: uint64(leafSize)}); err != nil {
		t.Fatal(err)
	}
	d.root, d.mid = root, mid
	return d
}

func putAll(t testing.TB, s *Store, blks ...blocks.Block) {
	t.Helper()
	if err := s.Blockstore().PutMany(context.Background(), blks); err != nil {
		t.Fatalf("PutMany: %v", err)
	}
}

func mustHave(t testing.TB, s *Store, want bool, blks ...blocks.Block) {
	t.Helper()
	for _, b := range blks {
		got, err := s.Blockstore().Get(context.Background(), b.Cid())
		switch {
		case want && err != nil:
			t.Fatalf("Get %s: %v", b.Cid(), err)
		case want && !bytes.Equal(got.RawData(), b.RawData()):
			t.Fatalf("Get %s: wrong data", b.Cid())
		case !want && err == nil:
			t.Fatalf("Get %s: still present", b.Cid())
		}
	}
}

// distinctBlocks returns n raw blocks of size bytes that share one random
// body and differ in their first eight bytes: cheap to make, even under the
// race detector, and each with its own hash.
func distinctBlocks(t testing.TB, seed uint64, n, size int) []blocks.Block {
	t.Helper()
	base := rawBlock(t, rand.New(rand.NewPCG(seed, seed)), size).RawData()
	out := make([]blocks.Block, n)
	for i := range out {
		data := bytes.Clone(base)
		binary.LittleEndian.PutUint64(data, seed<<32|uint64(i))
		out[i] = rawBlockOf(t, data)
	}
	return out
}

func blockBytes(blks ...blocks.Block) int64 {
	var n int64
	for _, b := range blks {
		n += int64(len(b.RawData()))
	}
	return n
}
