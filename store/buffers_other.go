//go:build !linux

package store

import "errors"

// Slabs of huge pages are Linux-only (see buffers_linux.go): elsewhere
// Buffers hands out heap memory.
func hugePagesOK() bool { return false }

func mapSlab() ([]byte, error) { return nil, errors.ErrUnsupported }

func releaseSlab([]byte) {}
