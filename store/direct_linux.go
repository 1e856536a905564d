//go:build linux

package store

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// oDirect is the open flag of direct I/O (see direct.go).
const oDirect = syscall.O_DIRECT

// setDirect switches direct I/O on or off on an open file.
func setDirect(fd *os.File, on bool) error {
	raw, err := fd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(d uintptr) {
		flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, d, syscall.F_GETFL, 0)
		if errno != 0 {
			serr = errno
			return
		}
		if on {
			flags |= syscall.O_DIRECT
		} else {
			flags &^= syscall.O_DIRECT
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, d, syscall.F_SETFL, flags); errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// syncFS commits the filesystem holding dir to disk (syncfs(2)).
func syncFS(dir string) error {
	fd, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer fd.Close()
	raw, err := fd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(d uintptr) { serr = unix.Syncfs(int(d)) }); err != nil {
		return err
	}
	return serr
}
