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

// openTAP attaches to the TAP device dev in the network namespace netns
// (a name under /run/netns; "" for this process's own) and returns it as a
// non-blocking file: each Read returns one Ethernet frame, each Write
// sends one. The device is normally made beforehand (ip tuntap add).
func openTAP(netns, dev string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	// A goroutine of its own on a locked thread: if switching back to our
	// namespace fails, the goroutine ends without unlocking and the runtime
	// throws the thread away rather than reuse it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		f, restored, err := openTAPLocked(netns, dev)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}

func openTAPLocked(netns, dev string) (f *os.File, restored bool, err error) {
	restored = true
	if netns != "" {
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, true, fmt.Errorf("open this thread's network namespace: %w", err)
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", netns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, true, fmt.Errorf("open namespace %s: %w", netns, err)
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			return nil, true, fmt.Errorf("enter namespace %s: %w", netns, err)
		}
		defer func() {
			if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
				restored = false
				err = errors.Join(err, fmt.Errorf("leave namespace %s: %w", netns, rerr))
			}
		}()
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, restored, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		unix.Close(fd)
		return nil, restored, fmt.Errorf("tap %s: %w", dev, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, restored, fmt.Errorf("attach to tap %s in %q: %w", dev, netns, err)
	}
	return os.NewFile(uintptr(fd), dev), restored, nil
}
