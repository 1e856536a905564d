package store

import (
	"math/bits"
	"sync"
	"time"
	"unsafe"
)

// Buffers hands out memory for the data of large blocks that go to or come
// from the disk with direct I/O: a fetch's received blocks before they are
// written, a provider's blocks read to be sent. Where the system allows, the
// memory is in 2 MiB transparent huge pages (see buffers_linux.go), so a
// block of up to 1 MiB is one physically contiguous piece: the kernel then
// passes a direct read or write of it to the disk as one request instead of
// one segment per 4 KiB page. On the virtio disk of this project's build
// machine that made 1 MiB direct reads 2.7 times as fast (1.3 -> 3.5-3.9
// GB/s, four at a time) and writes 1.5 times (3.0-3.2 -> 4.5-4.8 GB/s):
// with 4 KiB pages, a 1 MiB I/O exceeds the disk's 254 segments and is split
// in two requests.
//
// A slab of huge pages holds one block of up to 2 MiB or two of up to 1
// MiB. Get falls back to the Go heap for small blocks, for larger ones, where
// there are no huge pages, and once maxBufferSlabs are in use (heap buffers
// of 64 KiB to 4 MiB are pooled too); Put takes back any slice. Slabs are never unmapped, so a slice
// used after its Put reads garbage, never faults. The memory of slabs left
// free for trimAfter beyond keepFreeSlabs, and of every slab free for
// keepIdle, is given back to the system (a timer does it): a fetch that keeps handing buffers back and taking them
// again never waits for fresh zeroed pages.
type Buffers struct {
	mu    sync.Mutex
	slabs map[uintptr]*slab // by address
	// free are the slabs with nothing handed out; half those with one half
	// of 1 MiB handed out.
	free, half []*slab
	huge       bool // slabs can be made (set at the first Get)
	tried      bool
	trimming   bool // a trim is scheduled
}

const (
	slabSize = 2 << 20
	halfSize = slabSize / 2
	// minSlabBuffer is the smallest request served from a slab: the file
	// tier's threshold.
	minSlabBuffer = 64 << 10
	// maxBufferSlabs bounds the slabs of a store (256 MiB of address
	// space; only what is in use or kept free is resident).
	maxBufferSlabs = 128
	// keepFreeSlabs is how many free slabs keep their memory for
	// keepIdle, so that transfers one after another reuse them.
	keepFreeSlabs = 8
	// trimAfter is how long a free slab beyond those keeps its memory.
	trimAfter = 5 * time.Second
	// keepIdle is how long the kept free slabs keep theirs: an idle
	// daemon holds none.
	keepIdle = 30 * time.Second
)

// slab is 2 MiB of memory, handed out whole or as two halves.
type slab struct {
	mem      []byte
	whole    bool    // handed out whole
	used     [2]bool // halves handed out
	freed    time.Time
	released bool // its memory was given back
}

// Get returns a slice of length n, from a slab if n fits one. Its contents
// are whatever the last user left.
func (b *Buffers) Get(n int) []byte {
	if n < minSlabBuffer || n > slabSize {
		return heapGet(n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tried {
		b.tried = true
		b.huge = hugePagesOK()
		b.slabs = make(map[uintptr]*slab)
	}
	if !b.huge {
		return heapGet(n)
	}
	if n <= halfSize && len(b.half) > 0 {
		s := b.half[len(b.half)-1]
		b.half = b.half[:len(b.half)-1]
		i := 0
		if s.used[0] {
			i = 1
		}
		s.used[i] = true
		return s.mem[i*halfSize : i*halfSize+n : (i+1)*halfSize]
	}
	var s *slab
	if len(b.free) > 0 {
		s = b.free[len(b.free)-1] // the last freed: likely still resident
		b.free = b.free[:len(b.free)-1]
		s.released = false
	} else if len(b.slabs) < maxBufferSlabs {
		mem, err := mapSlab()
		if err != nil {
			b.huge = len(b.slabs) > 0 // no slabs at all: stop trying
			return heapGet(n)
		}
		s = &slab{mem: mem}
		b.slabs[slabAddr(mem)] = s
	} else {
		return heapGet(n)
	}
	if n > halfSize {
		s.whole = true
		return s.mem[:n:slabSize]
	}
	s.used[0] = true
	b.half = append(b.half, s)
	return s.mem[:n:halfSize]
}

// Put takes back a slice Get returned; nothing may use it after. Slices
// that are neither from a slab nor poolable are left to the garbage
// collector.
func (b *Buffers) Put(buf []byte) {
	if cap(buf) < minSlabBuffer {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.slabs[p&^(slabSize-1)]
	if s == nil {
		heapPut(buf)
		return
	}
	switch {
	case s.whole:
		s.whole = false
	case s.used[0] && s.used[1]:
		s.used[(p-slabAddr(s.mem))/halfSize] = false
		b.half = append(b.half, s)
		return
	default:
		s.used = [2]bool{}
		b.half = removeSlab(b.half, s)
	}
	s.freed = time.Now()
	b.free = append(b.free, s)
	if !b.trimming {
		b.trimming = true
		time.AfterFunc(trimAfter, b.trim)
	}
}

// trim gives back the memory of the slabs free for trimAfter, oldest first,
// down to keepFreeSlabs resident free ones, and comes again while more are
// free.
func (b *Buffers) trim() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimming = false
	resident := 0
	for _, s := range b.free {
		if !s.released {
			resident++
		}
	}
	now := time.Now()
	for _, s := range b.free { // oldest first
		if s.released {
			continue
		}
		age := now.Sub(s.freed)
		if age < trimAfter || resident <= keepFreeSlabs && age < keepIdle {
			continue
		}
		releaseSlab(s.mem)
		s.released = true
		resident--
	}
	if resident > 0 {
		b.trimming = true
		time.AfterFunc(trimAfter, b.trim)
	}
}

func removeSlab(ss []*slab, s *slab) []*slab {
	for i, x := range ss {
		if x == s {
			return append(ss[:i], ss[i+1:]...)
		}
	}
	return ss
}

func slabAddr(mem []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(mem))) }

// heapBufs[k] pools heap buffers of capacity 1<<k, aligned for direct I/O.
var heapBufs [maxHeapBits + 1]sync.Pool

const maxHeapBits = 22 // 4 MiB

// heapGet returns an aligned heap slice of length n, pooled if n is from
// minSlabBuffer to 4 MiB.
func heapGet(n int) []byte {
	if n < minSlabBuffer {
		return make([]byte, n) // a block of the file tier's size never is
	}
	if n > 1<<maxHeapBits {
		return alignedBuf(n)
	}
	k := bits.Len(uint(n - 1)) // the least k with 1<<k >= n
	if p, ok := heapBufs[k].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return alignedBuf(1 << k)[:n]
}

// heapPut pools buf if heapGet could have made it.
func heapPut(buf []byte) {
	c := cap(buf)
	if c < minSlabBuffer || c > 1<<maxHeapBits || c&(c-1) != 0 || !aligned(buf[:1]) {
		return
	}
	buf = buf[:c]
	heapBufs[bits.Len(uint(c-1))].Put(&buf)
}
