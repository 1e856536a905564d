//go:build !(linux && (amd64 || arm64))

package store

import (
	"errors"
	"os"
)

// asyncIO is Linux-only (see aio_linux.go); elsewhere the file tier uses
// plain system calls.
type asyncIO struct{}

var errNoAIO = errors.New("store: async I/O not available")

func newAsyncIO() (*asyncIO, error) { return nil, errors.ErrUnsupported }

func (*asyncIO) pread(*os.File, []byte, int64) (int, error)  { return 0, errors.ErrUnsupported }
func (*asyncIO) pwrite(*os.File, []byte, int64) (int, error) { return 0, errors.ErrUnsupported }
func (*asyncIO) close()                                      {}
