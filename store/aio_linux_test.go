//go:build linux && (amd64 || arm64)

package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// newTestAIO sets up an AIO context closed at cleanup, or skips where the
// kernel refuses AIO (the tier then uses plain system calls, which the
// SyncFileIO cases of TestFileTierIOPaths cover).
func newTestAIO(t *testing.T) *asyncIO {
	t.Helper()
	a, err := newAsyncIO()
	if err != nil {
		t.Skipf("no Linux AIO here: %v", err)
	}
	t.Cleanup(a.close)
	return a
}

// openDirect creates name for direct I/O, or skips where the filesystem
// refuses it (tmpfs).
func openDirect(t *testing.T, name string, flag int) *os.File {
	t.Helper()
	fd, err := os.OpenFile(name, flag|oDirect, 0o600)
	if refused(err) {
		t.Skipf("no direct I/O on %s", filepath.Dir(name))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	return fd
}

// TestAsyncIORoundTrip writes and reads back many files at once, more
// than aioDepth, through one context.
func TestAsyncIORoundTrip(t *testing.T) {
	a := newTestAIO(t)
	dir := t.TempDir()
	openDirect(t, filepath.Join(dir, "probe"), os.O_WRONLY|os.O_CREATE) // skips without direct I/O
	const files, size = 3 * aioDepth / 2, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, files)
	for i := range files {
		wg.Go(func() {
			name := filepath.Join(dir, fmt.Sprint(i))
			want := alignedBuf(size)
			for j := range want {
				want[j] = byte(i + j*7)
			}
			w, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oDirect, 0o600)
			if err != nil {
				errs <- err
				return
			}
			defer w.Close()
			if err := allocateRange(w, 0, int64(size)); err != nil {
				errs <- fmt.Errorf("allocateRange: %w", err)
				return
			}
			if n, err := a.pwrite(w, want, 0); err != nil || n != size {
				errs <- fmt.Errorf("pwrite %d: %d, %v", i, n, err)
				return
			}
			r, err := os.OpenFile(name, os.O_RDONLY|oDirect, 0)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			got := alignedBuf(size + directAlign) // room past the end: a short read
			n, err := a.pread(r, got, 0)
			if err != nil || n != size || !bytes.Equal(got[:n], want) {
				errs <- fmt.Errorf("pread %d: %d bytes, %v, equal %v", i, n, err, bytes.Equal(got[:min(n, size)], want[:min(n, size)]))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAsyncIOErrors: the kernel's error comes back as an errno, and after
// close every operation says so, for the caller to fall back.
func TestAsyncIOErrors(t *testing.T) {
	a := newTestAIO(t)
	name := filepath.Join(t.TempDir(), "f")
	w := openDirect(t, name, os.O_WRONLY|os.O_CREATE)
	// Reading a file opened write-only fails with EBADF.
	if _, err := a.pread(w, alignedBuf(directAlign), 0); err == nil {
		t.Error("pread of a write-only file succeeded")
	}
	a.close()
	if _, err := a.pwrite(w, alignedBuf(directAlign), 0); !errors.Is(err, errNoAIO) {
		t.Errorf("pwrite after close: %v, want errNoAIO", err)
	}
	a.close() // twice is fine
}
