//go:build linux

package store

import (
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePagesOK reports whether transparent huge pages can back a slab: on
// unless the system turned them off.
func hugePagesOK() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !strings.Contains(string(b), "[never]")
}

// mapSlab maps slabSize bytes at a slabSize-aligned address, asking for
// huge pages.
func mapSlab() ([]byte, error) {
	const n = 2 * slabSize
	p, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	head := (slabSize - uintptr(p)%slabSize) % slabSize
	start := unsafe.Add(p, head)
	if head > 0 {
		unix.MunmapPtr(p, head)
	}
	if tail := n - head - slabSize; tail > 0 {
		unix.MunmapPtr(unsafe.Add(start, slabSize), tail)
	}
	mem := unsafe.Slice((*byte)(start), slabSize)
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // a hint: without it, 4 KiB pages
	return mem, nil
}

// releaseSlab gives a free slab's memory back to the system; it reads as
// zeros when next touched.
func releaseSlab(mem []byte) { _ = unix.Madvise(mem, unix.MADV_DONTNEED) }
