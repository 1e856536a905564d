//go:build linux

package testnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// tapAvailable says why TAP devices cannot be used, or "" if they can.
func tapAvailable() string {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "no /dev/net/tun (TUN/TAP driver)"
	}
	return ""
}

// inNetns runs fn on a thread inside the network namespace netns (a name
// under /run/netns; "" for this process's own). Sockets and devices fn
// opens stay in that namespace after it returns.
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	ch := make(chan error, 1)
	// A goroutine of its own on a locked thread: if switching back to our
	// namespace fails, the goroutine ends without unlocking and the runtime
	// throws the thread away rather than reuse it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		restored, err := inNetnsLocked(netns, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

func inNetnsLocked(netns string, fn func() error) (restored bool, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open this thread's network namespace: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(filepath.Join("/run/netns", netns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Errorf("open namespace %s: %w", netns, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("enter namespace %s: %w", netns, err)
	}
	err = fn()
	if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
		return false, errors.Join(err, fmt.Errorf("leave namespace %s: %w", netns, rerr))
	}
	return true, err
}

// openTAP attaches to the TAP device dev in the network namespace netns
// ("" for this process's own) and returns it as a non-blocking file: each
// Read returns one Ethernet frame, each Write sends one. The device is
// normally made beforehand (ip tuntap add).
func openTAP(netns, dev string) (*os.File, error) {
	var f *os.File
	err := inNetns(netns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(dev)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("tap %s: %w", dev, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("attach to tap %s in %q: %w", dev, netns, err)
		}
		f = os.NewFile(uintptr(fd), dev)
		return nil
	})
	if err != nil && f != nil {
		f.Close()
		f = nil
	}
	return f, err
}
