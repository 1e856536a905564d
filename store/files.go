package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	mh "github.com/multiformats/go-multihash"
)

// The file tier keeps the data of large blocks in files of their own, one
// per block, under Config.Path/blocks/, and only a small marker in Badger.
//
// Why: Badger writes every value through its memory-mapped value log, where
// a large block costs a copy into freshly mapped pages (a page fault per 4
// KiB), a CRC and, at every file rotation, an msync; and the space of a
// deleted block comes back only when value log GC rewrites its file. A file
// costs one write(2) and a rename, and its space comes back at unlink.
//
// Layout: blocks/<xx>/<hex of the multihash>, xx being the last byte of the
// multihash in hex (a byte of the digest, so the shards fill evenly), and
// blocks/.tmp/ for files being written. The Badger key b/<multihash> of a
// file-tier block has user meta metaFile and, as value, the block's length
// (uvarint): Has, GetSize, the counters and GC's listing never touch the
// files.
//
// Writing: the data goes to a new file in blocks/.tmp with one write(2),
// which is then renamed into place, and then the key is committed. Nothing is
// fsynced (as with Badger's SyncWrites off): a killed process loses nothing it
// acknowledged, but after a machine crash the most recent files may be
// missing, short or zeroed although their keys survived. So a read checks the
// data against the multihash, and a file that is missing, short or does not
// hash right is reported as a missing block (never served); the read then
// deletes the key, so that the block can be fetched or added again.
//
// Deleting: the key's deletion is committed first, then the file unlinked. A
// reader that found the key either opened the file before the unlink (and
// reads the whole block: an open file outlives its unlink) or finds it gone
// and reports the block missing, never a part of it.
//
// Ordering with writers: a writer holds Store.sweepMu for reading from before
// it renames a file into place until its key is committed or the commit
// failed; GC and DeleteBlock hold it for writing while they commit deletions
// and unlink files, and GC's sweep of orphan files checks the keys under it.
// So an unlink never removes a file whose key a writer is about to commit, or
// has committed: a file is unlinked only when its key is absent while no
// writer is between rename and commit.
//
// Leftovers: a crash can leave temporary files (removed at Open) and renamed
// files whose key was never committed (removed by the next GC), as can a
// commit that fails.

// fileTierMin is the block size from which block data goes to a file (a
// variable for tests and benchmarks).
var fileTierMin = 64 << 10

const (
	// metaFile is the Badger user meta of a block key whose data is in a file.
	metaFile byte = 1

	blocksDirName = "blocks"
	tmpDirName    = ".tmp"
)

// errBadFile reports a block file that is missing, short or corrupt.
var errBadFile = errors.New("block file missing or corrupt")

// fileTier stores block data in files.
type fileTier struct {
	dir string // Config.Path/blocks
	tmp string // Config.Path/blocks/.tmp
	seq atomic.Uint64
}

// openFileTier prepares the directories and removes the temporary files a
// crash left. The store's directory lock must be held.
func openFileTier(path string) (*fileTier, error) {
	dir := filepath.Join(path, blocksDirName)
	tmp := filepath.Join(dir, tmpDirName)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("remove temporary block files: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	return &fileTier{dir: dir, tmp: tmp}, nil
}

// fileable reports whether a block of this size and multihash goes to a
// file: large enough, and with a hash function we can check it with on
// read.
func fileable(h mh.Multihash, size int) bool {
	if size < fileTierMin {
		return false
	}
	dh, err := mh.Decode(h)
	if err != nil || dh.Code == mh.IDENTITY {
		return false
	}
	_, err = mh.Sum(nil, dh.Code, dh.Length)
	return err == nil
}

func (f *fileTier) path(h mh.Multihash) string {
	name := hex.EncodeToString(h)
	return filepath.Join(f.dir, name[len(name)-2:], name)
}

// write stores data as the file of h: written to a temporary file, then
// renamed into place, so the final name never holds a partial block (short
// of a machine crash, which reads detect).
func (f *fileTier) write(h mh.Multihash, data []byte) error {
	tmp := filepath.Join(f.tmp, strconv.FormatUint(f.seq.Add(1), 36))
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write block file: %w", err)
	}
	_, err = fd.Write(data)
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		final := f.path(h)
		err = os.Rename(tmp, final)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(filepath.Dir(final), 0o700); err == nil {
				err = os.Rename(tmp, final)
			}
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write block file: %w", err)
	}
	return nil
}

// read returns the data of h's file, checked against h. It returns
// errBadFile when the file is missing, shorter than size or does not hash
// to h.
func (f *fileTier) read(h mh.Multihash, size int) ([]byte, error) {
	fd, err := os.Open(f.path(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errBadFile
	}
	if err != nil {
		return nil, fmt.Errorf("read block file: %w", err)
	}
	defer fd.Close()
	data := make([]byte, size)
	if _, err := io.ReadFull(fd, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, errBadFile
		}
		return nil, fmt.Errorf("read block file: %w", err)
	}
	dh, err := mh.Decode(h)
	if err != nil {
		return nil, err
	}
	sum, err := mh.Sum(data, dh.Code, dh.Length)
	if err != nil || !bytes.Equal(sum, h) {
		return nil, errBadFile
	}
	return data, nil
}

// remove unlinks h's file; a missing file is not an error.
func (f *fileTier) remove(h mh.Multihash) error {
	err := os.Remove(f.path(h))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func fileMarker(size int) []byte { return binary.AppendUvarint(nil, uint64(size)) }

func inFile(item *badger.Item) bool { return item.UserMeta() == metaFile }

// markerSize returns the block length a file-tier key records.
func markerSize(item *badger.Item) (int, error) {
	var size uint64
	err := item.Value(func(v []byte) error {
		n, k := binary.Uvarint(v)
		if k <= 0 || k != len(v) {
			return fmt.Errorf("bad file marker for block key %x", item.Key())
		}
		size = n
		return nil
	})
	return int(size), err
}

// blockData returns the data of a block key's item: the value itself, or
// the checked contents of its file. A bad file gives errBadFile.
func (s *Store) blockData(item *badger.Item) ([]byte, error) {
	if !inFile(item) {
		return item.ValueCopy(nil)
	}
	size, err := markerSize(item)
	if err != nil {
		return nil, err
	}
	return s.files.read(mh.Multihash(item.Key()[len(blockPrefix):]), size)
}

// dropBadFile deletes a file-tier block whose file a read found missing or
// corrupt, if its key is still the version the read saw (a newer version
// was written since, with its own file), so that the block can be stored
// again.
func (s *Store) dropBadFile(key []byte, version uint64) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	var size int
	err := s.update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		if item.Version() != version || !inFile(item) {
			return badger.ErrKeyNotFound
		}
		size, err = markerSize(item)
		if err != nil {
			return err
		}
		return txn.Delete(key)
	})
	if err != nil {
		return
	}
	s.blocks.Add(-1)
	s.bytes.Add(-int64(size))
	h := mh.Multihash(key[len(blockPrefix):])
	s.files.remove(h)
	s.cfg.Logger.Warn("dropped a block whose file was missing or corrupt", "multihash", h.B58String(), "component", "store")
}

// sweepOrphanFiles removes the block files that have no key: left by a
// crash between rename and commit, or by a failed commit. It checks each
// shard's keys under sweepMu, so no writer is between rename and commit.
func (s *Store) sweepOrphanFiles(stop func() error) error {
	shards, err := os.ReadDir(s.files.dir)
	if err != nil {
		return err
	}
	for _, sh := range shards {
		if err := stop(); err != nil {
			return err
		}
		if !sh.IsDir() || sh.Name() == tmpDirName {
			continue
		}
		dir := filepath.Join(s.files.dir, sh.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		var hs []mh.Multihash
		for _, e := range ents {
			b, err := hex.DecodeString(e.Name())
			if err != nil {
				continue // not a block file
			}
			if h, err := mh.Cast(b); err == nil {
				hs = append(hs, h)
			}
		}
		if len(hs) == 0 {
			continue
		}
		if err := s.removeOrphans(hs); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) removeOrphans(hs []mh.Multihash) error {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	for _, h := range hs {
		_, err := txn.Get(blockKey(h))
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := s.files.remove(h); err != nil {
			return err
		}
	}
	return nil
}
