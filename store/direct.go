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
// Block files are written and read with O_DIRECT where the filesystem
// allows it: the bytes go between the block's buffer and the disk without
// a copy into the page cache. A fetch or an add moves each large block
// through the node once; caching it on the way costs a copy and, worse,
// fresh page-cache pages for every byte: measured on the 2-core VM this
// project is built on, a buffered write of 1 GiB costs 2.45 s of CPU (the
// kernel zeroing and mapping new pages), a direct one 0.19 s, and the
// buffered write is the slower of the two (430 MB/s against 1.2 GB/s).
// Reads that then go to the disk are served at its speed.
//
// Direct I/O wants the file offset, the length and the buffer's address
// aligned (to the logical block size of the disk; directAlign covers the
// usual ones). A block's aligned head is written directly and its tail (a
// block whose size is not a multiple of directAlign) through the page
// cache; a buffer that is not aligned is copied first. Filesystems without
// direct I/O (tmpfs, some network filesystems) refuse the flag with EINVAL:
// the tier then goes on through the page cache for good. Config.BufferedFiles
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

// writeTemp writes data to a new file in blocks/.tmp, directly where
// possible, and returns its name (also on error, when a file was made).
func (f *fileTier) writeTemp(data []byte) (string, error) {
	sf, err := f.takeFile()
	if err != nil {
		return "", err
	}
	head := 0
	if sf.direct && f.direct.Load() {
		head = len(data) &^ (directAlign - 1)
	}
	if sf.direct && head == 0 {
		err = setDirect(sf.fd, false)
	}
	if err == nil {
		err = f.writeData(sf.fd, data, head)
	}
	if cerr := sf.fd.Close(); err == nil {
		err = cerr
	}
	return sf.name, err
}

// writeData writes data[:head] to fd, which was opened for direct I/O if
// head > 0, and the rest through the page cache.
func (f *fileTier) writeData(fd *os.File, data []byte, head int) error {
	if head > 0 {
		src := data[:head]
		if !aligned(src) {
			src = alignedBuf(head)
			copy(src, data)
		}
		n, err := f.writeHead(fd, src, len(data))
		if err != nil && !(refused(err) && n == 0) {
			return err
		}
		if err != nil { // refused at the first write: no direct I/O here
			f.direct.Store(false)
			head = 0
		}
		if head < len(data) {
			if err := setDirect(fd, false); err != nil {
				return err
			}
		}
	}
	if head == len(data) {
		return nil
	}
	_, err := fd.WriteAt(data[head:], int64(head))
	return err
}

// writeHead writes the aligned src at the start of fd, a new file opened
// for direct I/O that will hold size bytes: asynchronously where the tier
// can, after giving the file its size (see aio_linux.go), else with a
// plain write.
func (f *fileTier) writeHead(fd *os.File, src []byte, size int) (int, error) {
	if a := f.asyncIO(); a != nil {
		_ = preallocate(fd, int64(size)) // without it the write is synchronous, not wrong
		n, err := a.pwrite(fd, src, 0)
		if !errors.Is(err, errNoAIO) {
			return n, err
		}
	}
	return fd.WriteAt(src, 0)
}

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
