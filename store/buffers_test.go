package store

import (
	"bytes"
	"testing"
	"unsafe"

	blocks "github.com/ipfs/go-block-format"
)

// TestBuffers: Get hands out slices of the asked length, aligned for direct
// I/O, two of up to 1 MiB to a slab and one larger; small and oversized
// requests come from the heap; every slice handed out at once is distinct
// memory; Put takes back slab slices for reuse and drops others.
func TestBuffers(t *testing.T) {
	var b Buffers
	sizes := []int{1000, 64 << 10, 1 << 20, 1<<20 + 1, 2 << 20, 2<<20 + 1, 300 << 10, 1 << 20}
	var got [][]byte
	for i, n := range sizes {
		buf := b.Get(n)
		if len(buf) != n {
			t.Fatalf("Get(%d) returned %d bytes", n, len(buf))
		}
		if n >= minSlabBuffer && !aligned(buf) {
			t.Fatalf("Get(%d) is not aligned for direct I/O", n)
		}
		for j := range buf {
			buf[j] = byte(i)
		}
		got = append(got, buf)
	}
	for i, buf := range got {
		if bytes.Count(buf, []byte{byte(i)}) != len(buf) {
			t.Fatalf("buffer %d (%d bytes) was overwritten by another", i, len(buf))
		}
	}
	if !b.huge {
		t.Logf("no huge pages here: every buffer is from the heap")
	} else {
		// 64 KiB + 1 MiB, 1 MiB+1, 2 MiB, 300 KiB + 1 MiB.
		if n := len(b.slabs); n != 4 {
			t.Fatalf("%d slabs for the slab-sized requests, want 4", n)
		}
		for _, i := range []int{0, 5} { // 1000 bytes and 2 MiB + 1 are not from slabs
			p := uintptr(unsafe.Pointer(unsafe.SliceData(got[i])))
			if b.slabs[p&^(slabSize-1)] != nil {
				t.Fatalf("a %d-byte buffer came from a slab", len(got[i]))
			}
		}
	}
	for _, buf := range got {
		b.Put(buf)
	}
	if b.huge {
		if len(b.free) != len(b.slabs) || len(b.half) != 0 {
			t.Fatalf("after every Put: %d free slabs, %d half used, of %d", len(b.free), len(b.half), len(b.slabs))
		}
		// Reuse: no new slab for what the free ones can hold.
		n := len(b.slabs)
		again := [][]byte{b.Get(1 << 20), b.Get(1 << 20), b.Get(2 << 20)}
		if len(b.slabs) != n {
			t.Fatalf("%d slabs after reuse, want %d", len(b.slabs), n)
		}
		for _, buf := range again {
			b.Put(buf)
		}
	}
	b.Put(make([]byte, 1<<20)) // not ours: dropped
}

// TestBuffersBounded: past maxBufferSlabs slabs in use, Get falls back to
// the heap; slabs free for trimAfter beyond keepFreeSlabs give their memory
// back, the others after keepIdle, and are reused later.
func TestBuffersBounded(t *testing.T) {
	var b Buffers
	var got [][]byte
	for range maxBufferSlabs + 4 {
		got = append(got, b.Get(2<<20))
	}
	if !b.huge {
		t.Skip("no huge pages here")
	}
	if len(b.slabs) != maxBufferSlabs {
		t.Fatalf("%d slabs, want at most %d", len(b.slabs), maxBufferSlabs)
	}
	for _, buf := range got {
		b.Put(buf)
	}
	if len(b.free) != maxBufferSlabs {
		t.Fatalf("%d free slabs after every Put, want %d", len(b.free), maxBufferSlabs)
	}
	released := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := 0
		for _, s := range b.free {
			if s.released {
				n++
			}
		}
		return n
	}
	b.trim() // too early: everything was just freed
	if n := released(); n != 0 {
		t.Fatalf("%d slabs released right after their Put", n)
	}
	b.mu.Lock()
	for _, s := range b.free {
		s.freed = s.freed.Add(-trimAfter)
	}
	b.mu.Unlock()
	b.trim()
	if n := released(); n != maxBufferSlabs-keepFreeSlabs {
		t.Fatalf("%d slabs released after trimAfter, want %d", n, maxBufferSlabs-keepFreeSlabs)
	}
	b.mu.Lock()
	for _, s := range b.free {
		s.freed = s.freed.Add(-keepIdle)
	}
	b.mu.Unlock()
	b.trim()
	if n := released(); n != maxBufferSlabs {
		t.Fatalf("%d slabs released after keepIdle, want all %d", n, maxBufferSlabs)
	}
	buf := b.Get(2 << 20)
	for i := range buf {
		buf[i] = 1 // a released slab is usable again
	}
	b.Put(buf)
}

// TestBuffersDirectIO: blocks in slab buffers go through the file tier's
// direct writes and reads unchanged, for every size a slab serves.
func TestBuffersDirectIO(t *testing.T) {
	s := openStore(t, Config{})
	var blks []blocks.Block
	for i, n := range []int{64 << 10, 1 << 20, 1<<20 + 123, 2 << 20} {
		blks = append(blks, distinctBlocks(t, uint64(81+i), 2, n)...)
	}
	var in []blocks.Block
	for _, blk := range blks {
		buf := s.Buffers().Get(len(blk.RawData()))
		copy(buf, blk.RawData())
		b, err := blocks.NewBlockWithCid(buf, blk.Cid())
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, b)
	}
	putAll(t, s, in...)
	for _, b := range in {
		s.Buffers().Put(b.RawData())
	}
	mustHave(t, s, true, blks...)
	s = reopen(t, s)
	mustHave(t, s, true, blks...)
	blks = blks[:4] // the blocks a 1 MiB read buffer holds
	for _, blk := range blks {
		buf := s.Buffers().Get(1 << 20)
		data, err := s.bs.ReadInto(t.Context(), blk.Cid(), buf[:0])
		if err != nil || !bytes.Equal(data, blk.RawData()) {
			t.Fatalf("ReadInto a slab buffer: %v", err)
		}
		if &data[0] != &buf[0] {
			t.Fatal("ReadInto did not use the slab buffer")
		}
		s.Buffers().Put(buf)
	}
}

// TestBuffersWithoutHugePages: where there are no huge pages, Get hands out
// aligned heap slices of the asked length and Put pools them.
func TestBuffersWithoutHugePages(t *testing.T) {
	b := Buffers{tried: true} // as if hugePagesOK said no
	for _, n := range []int{1000, 64 << 10, 1 << 20, 1<<20 + 1, 3 << 20, 5 << 20} {
		buf := b.Get(n)
		if len(buf) != n || (n >= minSlabBuffer && !aligned(buf)) {
			t.Fatalf("Get(%d): %d bytes, aligned %v", n, len(buf), aligned(buf))
		}
		if n >= minSlabBuffer && n <= 1<<maxHeapBits && cap(buf)&(cap(buf)-1) != 0 {
			t.Fatalf("Get(%d): capacity %d is not a pool class", n, cap(buf))
		}
		b.Put(buf)
	}
	if len(b.slabs) != 0 {
		t.Fatalf("%d slabs made without huge pages", len(b.slabs))
	}
}
