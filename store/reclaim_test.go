package store

import (
	"math/rand/v2"
	"testing"
)

// TestGCGivesDiskSpaceBack writes about 100 MiB of unpinned blocks beside a
// pinned DAG and checks that GC shrinks the directory by most of it.
func TestGCGivesDiskSpaceBack(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MiB")
	}
	ctx := t.Context()
	s := openStore(t, Config{ValueLogFileSize: 16 << 20})
	keep := makeDAG(t, rand.New(rand.NewPCG(21, 22)), 8, 256<<10)
	putAll(t, s, keep.all()...)
	if err := s.Pins().Add(ctx, keep.root.Cid(), Recursive, "keep"); err != nil {
		t.Fatal(err)
	}
	const n, size = 400, 256 << 10 // 100 MiB
	garbage := distinctBlocks(t, 23, n, size)
	for i := 0; i < n; i += 32 {
		putAll(t, s, garbage[i:min(i+32, n)]...)
	}

	before := s.Stat().DiskBytes
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := s.Stat().DiskBytes
	t.Logf("GC freed %d blocks (%d MiB) in %v; disk %d MiB -> %d MiB",
		res.BlocksFreed, res.BytesFreed>>20, res.Duration, before>>20, after>>20)
	if res.BlocksFreed != n || res.BytesFreed != n*size {
		t.Fatalf("GC freed %d blocks, %d bytes; want %d, %d", res.BlocksFreed, res.BytesFreed, n, n*size)
	}
	// Value log files are given back whole and the one being written stays,
	// so allow one file's worth (16 MiB) plus slack to remain.
	if want := before - 70<<20; after > want {
		t.Fatalf("disk %d MiB -> %d MiB: shrank by less than 70 MiB", before>>20, after>>20)
	}
	mustHave(t, s, true, keep.all()...)
	s = reopen(t, s)
	mustHave(t, s, true, keep.all()...)
	mustHave(t, s, false, garbage[:3]...)
	if st := s.Stat(); st.BlockBytes != int64(len(keep.all())-2)*(256<<10)+blockBytes(keep.root, keep.mid) {
		t.Fatalf("Stat after reopen = %+v", st)
	}
}
