package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	mh "github.com/multiformats/go-multihash"
)

// The file tier keeps the data of large blocks out of Badger, appended to
// pack files under Config.Path/blocks/packs/ (see packs.go), and only a
// small marker in Badger.
//
// Why: Badger writes every value through its memory-mapped value log, where
// a large block costs a copy into freshly mapped pages (a page fault per 4
// KiB), a CRC and, at every file rotation, an msync; and the space of a
// deleted block comes back only when value log GC rewrites its file. A pack
// takes a block with one direct write, and gives its space back when the
// block is deleted (a punched hole). Packs replaced one file per block
// (blocks/<xx>/<hex of the multihash>): creating a file per block cost an
// inode each, and on ext4 without a journal, which skips the inodes freed in
// the last minute one by one, that became the largest cost of a fetch (a
// fifth of its CPU time, measured with perf on this project's build
// machine). Stores from before packs keep their block files: they are read
// and deleted as before, and new blocks go to packs.
//
// The Badger key b/<multihash> of a file-tier block has user meta metaPack
// and, as value, the block's length, the generation that wrote it and its
// place (pack number and offset); a block file's key has metaFile and the
// length and generation. Has, GetSize, the counters and GC's listing never
// touch the data.
//
// Writing: the data goes into space reserved in this session's writing
// pack, and then the key is committed. Nothing is fsynced (as with
// Badger's SyncWrites off): a killed process loses nothing it acknowledged,
// but after a machine crash the most recent blocks may be missing, short or
// zeroed although their keys survived.
//
// Generations: so every store session has a number, its generation, and a
// block's marker records the generation that wrote it. A clean Close syncs
// the filesystem before it records the clean stop, so the blocks of a
// generation that ended cleanly are known whole. The generations that did
// not (the process was killed, or the machine went down) are listed as
// untrusted when the next session opens. A read checks a block against its
// multihash only when its generation is untrusted (or unknown: markers
// from before generations); the blocks of this session and of cleanly
// closed ones are read without hashing, which spares a provider hashing
// every block it serves (the requester verifies every block anyway). A
// block whose data is missing, short or does not hash right is reported as
// missing (never served); the read then deletes the key, so that the block
// can be fetched or added again.
//
// Deleting: the key's deletion is committed first, then the block's space
// punched (or its file unlinked). A reader of a pack holds packs.holes for
// reading from finding the key to the end of its read, and a punch waits
// for it; a reader of a block file either opened the file before the unlink
// (and reads the whole block: an open file outlives its unlink) or finds it
// gone and reports the block missing, never a part of it.
//
// Ordering with writers: a writer holds Store.sweepMu for reading from before
// it writes a block until its key is committed or the commit failed; GC and
// DeleteBlock hold it for writing while they commit deletions and unlink
// block files, and punch the packs after; GC's sweep of orphan block files
// checks the keys under it.
//
// Leftovers: a crash can leave space in packs that no key points to, and
// block files whose key was never committed; the next GC gives both back.
// A failed commit gives its blocks' space back itself.

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
	seq atomic.Uint64
	// direct is whether block files are written and read with direct I/O
	// (see direct.go): on unless Config.BufferedFiles, and off for good once
	// the filesystem refuses it.
	direct atomic.Bool
	log    *slog.Logger
	// refuseDirect makes the packs' direct reads and writes fail as a
	// filesystem that takes O_DIRECT at open but refuses the I/O does
	// (tests only).
	refuseDirect atomic.Bool
	// gen is this session's generation; untrusted holds the generations
	// whose files a read must check (set at open, read-only after).
	gen       uint64
	untrusted map[uint64]bool
	packs     packSet
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

// openFileTier prepares the directories and removes the temporary block
// files a crash of a version from before packs left. The store's directory
// lock must be held.
func openFileTier(path string, direct, async bool, log *slog.Logger) (*fileTier, error) {
	dir := filepath.Join(path, blocksDirName)
	tmp := filepath.Join(dir, tmpDirName)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("remove temporary block files: %w", err)
	}
	f := &fileTier{dir: dir, log: log}
	f.direct.Store(direct && oDirect != 0)
	f.async = async && f.direct.Load()
	if err := f.openPacks(); err != nil {
		return nil, err
	}
	return f, nil
}

// close closes the packs and frees the tier's AIO context once the I/O in
// flight is done. The tier must not be used after.
func (f *fileTier) close() {
	f.aioOnce.Do(func() {}) // none set up after this
	f.closePacks()
	if f.aio != nil {
		f.aio.close()
	}
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
	if err := checkHash(h, data); err != nil {
		return nil, err
	}
	return data, nil
}

// checkHash returns errBadFile if data does not hash to h.
func checkHash(h mh.Multihash, data []byte) error {
	dh, err := mh.Decode(h)
	if err != nil {
		return err
	}
	sum, err := mh.Sum(data, dh.Code, dh.Length)
	if err != nil || !bytes.Equal(sum, h) {
		return errBadFile
	}
	return nil
}

// deleted collects what deleted block keys held, to give back once their
// deletion is committed (see Store.unlinkFiles).
type deleted struct {
	bytes   int64
	files   []mh.Multihash // blocks in files of their own
	regions []packRegion   // blocks in packs
}

// add counts item, a block key about to be deleted.
func (fr *deleted) add(item *badger.Item) error {
	if inPack(item) {
		size, _, loc, err := packEntry(item)
		if err != nil {
			return err
		}
		fr.bytes += int64(size)
		fr.regions = append(fr.regions, packRegion{loc, size})
		return nil
	}
	size, err := valueLen(item)
	if err != nil {
		return err
	}
	fr.bytes += int64(size)
	if inFile(item) {
		fr.files = append(fr.files, mh.Multihash(item.KeyCopy(nil)[len(blockPrefix):]))
	}
	return nil
}

// The disk space of blocks whose keys' deletion is committed comes back in
// two steps: unlinkFiles with sweepMu held for writing (no writer is then
// between writing a block file and committing its key), and punchRegions
// after releasing it (a pack region is never written again, and punching
// waits for the readers of packs, which may be waiting for sweepMu).
func (s *Store) unlinkFiles(fr deleted) error {
	if s.files == nil {
		return nil
	}
	for _, h := range fr.files {
		if err := s.files.remove(h); err != nil {
			return err
		}
	}
	return nil
}

// punchRegions is the second step: the caller must not hold
// sweepMu.
func (s *Store) punchRegions(fr deleted) error {
	if s.files == nil {
		return nil
	}
	return s.files.removeRegions(fr.regions)
}

// remove unlinks h's file; a missing file is not an error.
func (f *fileTier) remove(h mh.Multihash) error {
	err := os.Remove(f.path(h))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// A block file's key holds the block's length and the generation that
// wrote its file, as uvarints (markers written before generations hold the
// length alone: generation 0, always checked).
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
// its data in a pack or file, checked against the key's multihash. A bad
// pack region or file gives errBadFile. (GC reads with a transaction that
// may predate a deletion, so the check is not skipped for any generation.)
func (s *Store) blockData(item *badger.Item) ([]byte, error) {
	h := mh.Multihash(item.Key()[len(blockPrefix):])
	switch {
	case inPack(item):
		size, gen, loc, err := packEntry(item)
		if err != nil {
			return nil, err
		}
		s.files.packs.holes.RLock()
		defer s.files.packs.holes.RUnlock()
		return s.files.readBlock(h, size, gen, loc, nil, true)
	case inFile(item):
		size, gen, err := marker(item)
		if err != nil {
			return nil, err
		}
		return s.files.read(h, size, gen, nil)
	}
	return item.ValueCopy(nil)
}

// dropBadFile deletes a file-tier block whose data a read found missing or
// corrupt, if its key is still the version the read saw (a newer version
// was written since, with data of its own), so that the block can be
// stored again.
func (s *Store) dropBadFile(key []byte, version uint64) {
	var gone deleted
	defer func() { s.punchRegions(gone) }() // after sweepMu's release
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	err := s.update(func(txn *badger.Txn) error {
		gone = deleted{}
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		if item.Version() != version || !(inFile(item) || inPack(item)) {
			return badger.ErrKeyNotFound
		}
		if err := gone.add(item); err != nil {
			return err
		}
		return txn.Delete(key)
	})
	if err != nil {
		return
	}
	s.blocks.Add(-1)
	s.bytes.Add(-gone.bytes)
	s.unlinkFiles(gone)
	h := mh.Multihash(key[len(blockPrefix):])
	s.cfg.Logger.Warn("dropped a block whose data was missing or corrupt", "multihash", h.B58String(), "component", "store")
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
		if !sh.IsDir() || sh.Name() == tmpDirName || sh.Name() == packsDirName {
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
