//go:build unix

package store

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// lockDir takes an exclusive, non-blocking flock on path. Badger takes its
// own lock too, but its error loses the cause; ours says plainly that the
// directory is in use. The kernel drops the lock when the process dies, so
// a killed daemon never leaves a stale lock behind.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, &os.PathError{Op: "lock", Path: path, Err: err}
	}
	return f, nil
}

// allocatedSize returns the disk space a file takes, which for sparse files
// is less than its apparent size.
func allocatedSize(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
