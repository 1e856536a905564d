package store

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"
)

// Direct I/O for the file tier.
//
// Packs (and the block files of stores from before packs) are written and
// read with O_DIRECT where the filesystem allows it: the bytes go between
// the block's buffer and the disk without a copy into the page cache. A fetch or an add moves each large block
// through the node once; caching it on the way costs a copy and, worse,
// fresh page-cache pages for every byte: measured on the 2-core VM this
// project is built on, a buffered write of 1 GiB costs 2.45 s of CPU (the
// kernel zeroing and mapping new pages), a direct one 0.19 s, and the
// buffered write is the slower of the two (430 MB/s against 1.2 GB/s).
// Reads that then go to the disk are served at its speed.
//
// Direct I/O wants the file offset, the length and the buffer's address
// aligned (to the logical block size of the disk; directAlign covers the
// usual ones): a pack holds each block at an aligned offset, padded to a
// whole number of pages, so a block is written with its aligned head
// straight from its buffer and the rest copied into a padded page (all of
// it copied when the buffer is not aligned), and read back whole.
// Filesystems without direct I/O (tmpfs, some network filesystems) refuse
// the flag with EINVAL: the tier then goes on through the page cache for
// good. One that takes the flag at open but refuses the reads and writes
// (a disk whose logical blocks are larger than directAlign) does the same
// at its first refusal: the pack goes to buffered I/O and the I/O is done
// again (packs.go, dropDirect). Config.BufferedFiles
// turns direct I/O off. On Linux the direct reads and writes are submitted
// asynchronously (aio_linux.go).

// directAlign is the alignment direct I/O needs.
const directAlign = 4096

// aligned reports whether b starts at an address direct I/O can use.
func aligned(b []byte) bool {
	return len(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign == 0
}

// alignedBuf returns a zeroed slice of length n that starts aligned and
// whose capacity is n rounded up to directAlign. (Go allocates large
// objects page-aligned, so the slack is rarely needed.)
func alignedBuf(n int) []byte {
	c := (n + directAlign - 1) &^ (directAlign - 1)
	if b := make([]byte, c); aligned(b) {
		return b[:n]
	}
	b := make([]byte, c+directAlign)
	off := int(directAlign-uintptr(unsafe.Pointer(&b[0]))%directAlign) % directAlign
	return b[off : off+n : off+c]
}

// refused reports whether err is the filesystem refusing direct I/O.
func refused(err error) bool { return oDirect != 0 && errors.Is(err, syscall.EINVAL) }

// readAt reads into b from off of fd, opened for direct I/O: through
// asynchronous I/O where the tier can. As with ReadAt, fewer bytes than
// len(b) come with io.EOF.
func (f *fileTier) readAt(fd *os.File, b []byte, off int64) (int, error) {
	if a := f.asyncIO(); a != nil {
		n, err := a.pread(fd, b, off)
		if !errors.Is(err, errNoAIO) {
			if err == nil && n < len(b) {
				err = io.EOF
			}
			return n, err
		}
	}
	return fd.ReadAt(b, off)
}

// readFile reads the size bytes of name, directly where possible, into
// buf's array if it fits (and, for direct I/O, is aligned), else into a new
// slice. A file shorter than size gives io.ErrUnexpectedEOF.
func (f *fileTier) readFile(name string, size int, buf []byte) ([]byte, error) {
	direct := f.direct.Load() && size >= directAlign
	var fd *os.File
	var err error
	if direct {
		fd, err = os.OpenFile(name, os.O_RDONLY|oDirect, 0)
		if refused(err) {
			f.direct.Store(false)
			direct = false
		}
	}
	if !direct {
		fd, err = os.Open(name)
	}
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	if !direct {
		data := buf[:0]
		if cap(data) < size {
			data = make([]byte, size)
		}
		data = data[:size]
		_, err := io.ReadFull(fd, data)
		return data, err
	}
	// Read whole aligned lengths: the last read returns short at the end of
	// the file.
	data := buf[:0]
	if cap(buf) < (size+directAlign-1)&^(directAlign-1) || !aligned(buf[:1]) {
		data = alignedBuf(size)
	}
	data = data[:size]
	buf = data[:cap(data)]
	n := 0
	for n < size {
		k, err := f.readAt(fd, buf[n:], int64(n))
		n += k
		if err == io.EOF || (err == nil && k == 0) {
			break
		}
		if err != nil {
			if !refused(err) {
				return nil, err
			}
			// An unaligned offset after a short read: go on buffered.
			if err := setDirect(fd, false); err != nil {
				return nil, err
			}
		}
	}
	if n < size {
		return nil, io.ErrUnexpectedEOF
	}
	return data, nil
}
