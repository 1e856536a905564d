package testnet

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs f on an OS thread moved into the named network namespace
// (/run/netns/NAME, as `ip netns add` makes it). Sockets f creates belong
// to that namespace for their whole life, wherever they are used later, so
// a test can bind and dial inside a lab host without a helper process.
// The thread is never handed back to the scheduler: it ends with f's
// goroutine, so no other goroutine runs in the namespace by accident.
func InNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with this goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
