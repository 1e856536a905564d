//go:build !unix

package store

import (
	"io/fs"
	"os"
)

// lockDir opens the lock file without locking it: Badger's own directory
// lock still refuses a second opener, with a less specific error.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func allocatedSize(info fs.FileInfo) int64 { return info.Size() }
