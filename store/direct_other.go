//go:build !linux

package store

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// oDirect is 0 where direct I/O is not supported: the file tier then
// always goes through the page cache.
const oDirect = 0

func setDirect(*os.File, bool) error { return errors.ErrUnsupported }

// syncFS commits the block files under dir to disk where syncfs(2) is
// missing: each file, then each directory.
func syncFS(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}
