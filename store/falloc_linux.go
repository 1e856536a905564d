//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// allocateRange gives fd disk space for n bytes from off, extending its
// size if need be (fallocate(2)); errors.ErrUnsupported where the
// filesystem cannot.
func allocateRange(fd *os.File, off, n int64) error {
	return fallocate(fd, 0, off, n)
}

// punchHole frees the disk space of n bytes from off of fd, which then
// read as zeros; the file keeps its size. errors.ErrUnsupported where the
// filesystem cannot.
func punchHole(fd *os.File, off, n int64) error {
	return fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func fallocate(fd *os.File, mode uint32, off, n int64) error {
	raw, err := fd.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(d uintptr) {
		for {
			ferr = unix.Fallocate(int(d), mode, off, n)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) {
		return fmt.Errorf("fallocate: %w", errors.ErrUnsupported)
	}
	return ferr
}
