package store

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Spare files. Creating a file costs an inode allocation, which on some
// filesystems is the largest part of writing a large block: on this
// project's build machine (ext4 without a journal, which skips inodes freed
// in the last 30 s one by one) open(O_CREAT) took 80% of the time spent
// writing 1 MiB blocks' files during a fetch. So the file tier keeps a few
// empty files created ahead of need in blocks/.tmp, made by a goroutine of
// its own (started at the first write, stopped by close) while the machine
// has a core to spare; a write takes one, or creates its own when none is
// ready. Spares left by a crash are removed at the next open with the rest
// of blocks/.tmp.

// spareFiles is how many empty files the tier keeps ready.
const spareFiles = 16

// spareFile is an empty file in blocks/.tmp, open for writing (with direct
// I/O if direct).
type spareFile struct {
	fd     *os.File
	name   string
	direct bool
}

func (sf spareFile) discard() {
	sf.fd.Close()
	os.Remove(sf.name)
}

// spares is the file tier's stock of spare files and the goroutine that
// keeps it full.
type spares struct {
	once  sync.Once
	ready chan spareFile
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// newFile creates an empty file in blocks/.tmp, for direct I/O if the tier
// uses it.
func (f *fileTier) newFile() (spareFile, error) {
	name := filepath.Join(f.tmp, strconv.FormatUint(f.seq.Add(1), 36))
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if f.direct.Load() {
		fd, err := os.OpenFile(name, flags|oDirect, 0o600)
		if err == nil {
			return spareFile{fd: fd, name: name, direct: true}, nil
		}
		if !refused(err) {
			return spareFile{}, err
		}
		f.direct.Store(false)
	}
	fd, err := os.OpenFile(name, flags, 0o600)
	return spareFile{fd: fd, name: name}, err
}

// takeFile returns an empty file to write a block to: a spare if one is
// ready, else a new one.
func (f *fileTier) takeFile() (spareFile, error) {
	sp := &f.spares
	sp.once.Do(func() {
		sp.ready = make(chan spareFile, spareFiles)
		sp.wake = make(chan struct{}, 1)
		sp.stop = make(chan struct{})
		sp.done = make(chan struct{})
		go f.fillSpares()
	})
	select {
	case sp.wake <- struct{}{}:
	default:
	}
	select {
	case sf := <-sp.ready:
		return sf, nil
	default:
		return f.newFile()
	}
}

// fillSpares keeps spares.ready full until close.
func (f *fileTier) fillSpares() {
	sp := &f.spares
	defer close(sp.done)
	for {
		for len(sp.ready) < cap(sp.ready) {
			sf, err := f.newFile()
			if err != nil {
				break // a full disk, say: writes report it; try at the next wake
			}
			select {
			case sp.ready <- sf:
			case <-sp.stop:
				sf.discard()
				return
			}
		}
		select {
		case <-sp.wake:
		case <-sp.stop:
			return
		}
	}
}

// close stops the filler, removes the spares and frees the tier's AIO
// context once the I/O in flight is done. The tier must not be written
// after.
func (f *fileTier) close() {
	f.aioOnce.Do(func() {}) // none set up after this
	if f.aio != nil {
		defer f.aio.close() // after the spares: waits for I/O in flight
	}
	sp := &f.spares
	started := true
	sp.once.Do(func() { started = false })
	if !started {
		return
	}
	close(sp.stop)
	<-sp.done
	for {
		select {
		case sf := <-sp.ready:
			sf.discard()
		default:
			return
		}
	}
}
