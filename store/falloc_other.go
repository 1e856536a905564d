//go:build !linux

package store

import (
	"errors"
	"os"
)

// allocateRange and punchHole are Linux-only (see falloc_linux.go):
// elsewhere writes extend packs and a deleted block's space comes back
// with its pack.
func allocateRange(*os.File, int64, int64) error { return errors.ErrUnsupported }

func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }
