package exchange

import (
	"math/bits"
	"sync"
)

// Block buffers. A Fetcher whose Config.PutCopies is set reads every block
// of 64 KiB or more into a buffer from these pools and gives the buffer back
// once PutMany has returned, so a long fetch reuses a few dozen buffers
// instead of allocating (and zeroing, and collecting) one per block. A
// Server reads blocks through a Viewer or BlockReader into buffers from
// them too. Config.Buffers and ServerConfig.Buffers replace them.

const (
	minPooled   = 64 << 10 // smaller blocks are allocated as they come
	maxPoolBits = 22       // 4 MiB, above MaxFrameSize
)

// blockBufs[k] holds buffers of capacity 1<<k.
var blockBufs [maxPoolBits + 1]sync.Pool

// getBlockBuf returns a slice of length n, reused if n is large enough to
// be pooled. Its contents are whatever the last user left.
func getBlockBuf(n int) []byte {
	if n < minPooled || n > 1<<maxPoolBits {
		return make([]byte, n)
	}
	k := bits.Len(uint(n - 1)) // the least k with 1<<k >= n
	if b, ok := blockBufs[k].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<k)
}

// putBlockBuf gives b's array back for reuse; nothing may use b after.
// Slices not made by getBlockBuf's pooled path are dropped.
func putBlockBuf(b []byte) {
	c := cap(b)
	if c < minPooled || c > 1<<maxPoolBits || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	blockBufs[bits.Len(uint(c-1))].Put(&b)
}

// heapBuffers is the Buffers of a Fetcher or Server given none.
type heapBuffers struct{}

func (heapBuffers) Get(n int) []byte { return getBlockBuf(n) }
func (heapBuffers) Put(b []byte)     { putBlockBuf(b) }
