package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
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
// Writing: the data goes to a new file in blocks/.tmp (see direct.go),
// which is then renamed into place, and then the key is committed. Nothing is
// fsynced (as with Badger's SyncWrites off): a killed process loses nothing it
// acknowledged, but after a machine crash the most recent files may be
// missing, short or zeroed although their keys survived.
//
// Generations: so every store session has a number, its generation, and a
// file's marker records the generation that wrote it. A clean Close syncs
// the filesystem before it records the clean stop, so the files of a
// generation that ended cleanly are known whole. The generations that did
// not (the process was killed, or the machine went down) are listed as
// untrusted when the next session opens. A read checks a file against its
// multihash only when its generation is untrusted (or unknown: markers
// from before generations); the files of this session and of cleanly
// closed ones are read without hashing, which spares a provider hashing
// every block it serves (the requester verifies every block anyway). A file
// that is missing, short or does not hash right is reported as a missing
// block (never served); the read then deletes the key, so that the block
// can be fetched or added again.
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
	// direct is whether block files are written and read with direct I/O
	// (see direct.go): on unless Config.BufferedFiles, and off for good once
	// the filesystem refuses it.
	direct atomic.Bool
	// gen is this session's generation; untrusted holds the generations
	// whose files a read must check (set at open, read-only after).
	gen       uint64
	untrusted map[uint64]bool
	spares    spares // see spares.go
	// aio submits direct reads and writes asynchronously (aio_linux.go).
	// It is set up at the first direct I/O (setting one up is cheap, but
	// freeing it takes the kernel tens of milliseconds, which a store that
	// never reads or writes a file should not pay at Close) and stays nil
	// where the kernel refuses it, with buffered files, or with
	// Config.SyncFileIO.
	async   bool
	aioOnce sync.Once
	aio     *asyncIO
}

// asyncIO returns the tier's AIO context, setting it up at the first call;
// nil means plain system calls.
func (f *fileTier) asyncIO() *asyncIO {
	f.aioOnce.Do(func() {
		if f.async {
			f.aio, _ = newAsyncIO()
		}
	})
	return f.aio
}

// trusted reports whether the files of generation g can be read without
// checking their hash.
func (f *fileTier) trusted(g uint64) bool { return g != 0 && !f.untrusted[g] }

// openFileTier prepares the directories and removes the temporary files a
// crash left. The store's directory lock must be held.
func openFileTier(path string, direct, async bool) (*fileTier, error) {
	dir := filepath.Join(path, blocksDirName)
	tmp := filepath.Join(dir, tmpDirName)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("remove temporary block files: %w", err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	f := &fileTier{dir: dir, tmp: tmp}
	f.direct.Store(direct && oDirect != 0)
	f.async = async && f.direct.Load()
	return f, nil
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
	tmp, err := f.writeTemp(data)
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
		if tmp != "" {
			os.Remove(tmp)
		}
		return fmt.Errorf("write block file: %w", err)
	}
	return nil
}

// read returns the data of h's file, written by generation gen and checked
// against h unless gen is trusted, in buf's array if it fits. It returns
// errBadFile when the file is missing, shorter than size or does not hash
// to h.
func (f *fileTier) read(h mh.Multihash, size int, gen uint64, buf []byte) ([]byte, error) {
	data, err := f.readFile(f.path(h), size, buf)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return nil, errBadFile
	case err != nil:
		return nil, fmt.Errorf("read block file: %w", err)
	}
	if f.trusted(gen) {
		return data, nil
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

// fileMarker is the value of a file-tier key: the block's length and the
// generation that wrote its file, as uvarints. (Markers written before
// generations hold the length alone: generation 0, always checked.)
func fileMarker(size int, gen uint64) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, uint64(size)), gen)
}

func inFile(item *badger.Item) bool { return item.UserMeta() == metaFile }

// markerSize returns the block length a file-tier key records.
func markerSize(item *badger.Item) (int, error) {
	size, _, err := marker(item)
	return size, err
}

// marker returns the block length and the generation a file-tier key
// records.
func marker(item *badger.Item) (size int, gen uint64, err error) {
	err = item.Value(func(v []byte) error {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > math.MaxInt32 {
			return fmt.Errorf("bad file marker for block key %x", item.Key())
		}
		size = int(n)
		if k == len(v) {
			return nil // from before generations
		}
		g, k2 := binary.Uvarint(v[k:])
		if k2 <= 0 || k+k2 != len(v) {
			return fmt.Errorf("bad file marker for block key %x", item.Key())
		}
		gen = g
		return nil
	})
	return size, gen, err
}

// blockData returns the data of a block key's item: the value itself, or
// the checked contents of its file. A bad file gives errBadFile.
func (s *Store) blockData(item *badger.Item) ([]byte, error) {
	if !inFile(item) {
		return item.ValueCopy(nil)
	}
	size, gen, err := marker(item)
	if err != nil {
		return nil, err
	}
	return s.files.read(mh.Multihash(item.Key()[len(blockPrefix):]), size, gen, nil)
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
