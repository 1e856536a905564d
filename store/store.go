// Package store is weft's on-disk state: one Badger v4 database holding
// blocks, pins and the key-value data other subsystems (DHT records,
// peerstore, configuration data) persist.
//
// # API
//
//	Open(Config) (*Store, error)     open or create the database at Config.Path
//	(*Store).Close() error           idempotent; waits for running operations
//	(*Store).Blockstore()            boxo blockstore.Blockstore over the blocks
//	(*Store).Datastore()             go-datastore Batching (and PersistentDatastore)
//	(*Store).Pins() *Pins            recursive and direct pins, optionally named
//	(*Store).NewSession() *Session   protects the blocks an add or fetch touches from GC
//	(*Store).GC(ctx) (GCResult, error)
//	(*Store).Stat() Stat
//
// Errors: ErrStoreFull (a write past Config.MaxBytes), ErrLocked (the
// directory is open elsewhere), ErrClosed, ErrGCRunning, ErrNotPinned and
// ErrUnsupportedCodec; a missing block is go-ipld-format's ErrNotFound, as
// everywhere in boxo.
//
// # Layout
//
// Everything but the data of large blocks lives in one Badger database,
// split by key prefix:
//
//	b/<multihash>   blocks. Blocks are keyed by multihash, as in Kubo, so the
//	                CIDv0 and CIDv1 of the same content share one stored block.
//	                A block under 64 KiB is the key's value; a larger one is a
//	                file of its own, blocks/<xx>/<hex multihash>, and the key
//	                holds only its length (see files.go).
//	p/<cid>         pin records (mode and name).
//	d/<key>         the datastore namespace handed to other subsystems.
//	m/...           store metadata (usage counters written at a clean Close).
//	x/...           scratch keys used by GC to make Badger flush its memtable.
//
// Writes are not fsynced one by one (Badger's SyncWrites is off): Badger's
// write-ahead log and value log are checksummed and replayed at Open, and a
// block file is written under a temporary name and renamed into place before
// its key is committed, so a killed process loses at most the writes that had
// not returned yet and never corrupts the store. A power loss can lose the
// last few writes too; a block file it damaged is detected by its hash when
// read, reported missing and dropped, never served.
//
// # Storage limit
//
// Config.MaxBytes bounds the logical size of the stored blocks (the sum of
// their lengths). A Put, or a PutMany of up to 256 blocks, that would go
// past it fails as a whole with an error that errors.Is ErrStoreFull (a
// larger PutMany is written 256 blocks at a time); nothing already stored is
// touched. The datastore namespace is not counted, so the DHT and peerstore keep working
// on a full store. The size on disk can run ahead of the logical size until
// GC gives the space of deleted blocks back.
//
// # Garbage collection and sessions
//
// GC deletes every block that is not reachable from a pin and not protected by
// a Session, and then makes Badger give the disk space back. It runs while the
// node serves: readers never wait for it; a Session's calls wait at most for
// the commit of one batch of deletions (milliseconds), and every writer waits
// once per GC for Badger's memtable flush. See gc.go for the full argument.
//
// An add or a fetch holds a Session while it writes. Every block put, read or
// looked up through a Session, and every CID passed to Session.Hold, is a GC
// root until the Session is closed; a block observed present through a
// Session stays present until then. Pin the root before closing the Session,
// and a half-finished add or fetch is never collected from under its writer.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/go-datastore"
)

// Key prefixes of the keyspaces sharing the database.
var (
	blockPrefix = []byte("b/")
	pinPrefix   = []byte("p/")
	dsPrefix    = []byte("d") // datastore keys start with "/", so these are "d/..."
	usageKey    = []byte("m/usage")
	// filesKey holds the file tier's generations (see files.go): the last
	// one opened, then those that did not end cleanly, as uvarints.
	filesKey    = []byte("m/files")
	flushKey    = []byte("x/flush")
	flushPrefix = flushKey
)

const (
	lockFileName  = "weft-store.lock"
	usageRecordSz = 16 // block count and bytes, big-endian uint64s
)

// Errors returned by the store.
var (
	// ErrStoreFull is returned (wrapped, with the numbers) by Put and PutMany
	// when the write would take the stored blocks past Config.MaxBytes.
	ErrStoreFull = errors.New("store full")
	// ErrLocked is returned by Open when another process (or another Store in
	// this process) has the database directory open.
	ErrLocked = errors.New("store directory is in use by another process")
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("store closed")
	// ErrGCRunning is returned by GC when another GC is still running.
	ErrGCRunning = errors.New("garbage collection already running")
)

// Defaults for the zero values of Config.
const (
	DefaultValueLogFileSize = 64 << 20
	DefaultMemTableSize     = 4 << 20
	DefaultBlockCacheSize   = 16 << 20
	// DefaultValueThreshold is the size from which values go to Badger's
	// value log instead of its LSM tree: blocks (those under 64 KiB; larger
	// ones are files) go to the value log (no compaction rewrites them),
	// small datastore records stay in the tree.
	DefaultValueThreshold = 1 << 10
)

// Config configures a Store. The zero value of every field but Path is a
// documented default.
type Config struct {
	// Path is the directory of the Badger database; it is created if missing.
	// Required unless InMemory is set.
	Path string
	// MaxBytes is the storage limit on the logical size of the stored blocks.
	// 0 means unlimited. Past it, Put and PutMany fail with ErrStoreFull.
	MaxBytes int64
	// InMemory keeps everything in memory (tests and simulations only).
	// Values are limited to 1 MiB, or 15% of MemTableSize if that is less. GC still deletes blocks but there is no disk space to give
	// back.
	InMemory bool
	// ValueLogFileSize is the size of one Badger value log file, where the
	// data of blocks under 64 KiB lives (default 64 MiB). GC gives disk space back a whole
	// file at a time, and never the file being written, so smaller files
	// reclaim sooner and more finely at the cost of more files.
	ValueLogFileSize int64
	// MemTableSize is the size of Badger's memtables (default 4 MiB). With
	// block data in the value log, a memtable holds keys and small records
	// only, so a small one is enough and keeps an idle node's memory low.
	MemTableSize int64
	// BufferedFiles makes the file tier (blocks of 64 KiB and more) write and
	// read through the page cache. By default it uses direct I/O where the
	// filesystem allows it (see direct.go): a large block then costs no copy
	// into fresh page-cache pages, which is what limits adds and fetches on
	// small machines. Set it where repeated reads of the same large blocks
	// should come from memory.
	BufferedFiles bool
	// SyncFileIO makes the file tier's direct reads and writes plain
	// blocking system calls. By default, on Linux, they are submitted with
	// the kernel's asynchronous I/O, so a goroutine waiting on the disk does
	// not hold one of the runtime's Ps meanwhile (see aio_linux.go); where
	// the kernel refuses it the tier falls back to system calls by itself.
	SyncFileIO bool
	// BlockCacheSize is Badger's cache of LSM table blocks (default 16 MiB).
	BlockCacheSize int64
	// Logger receives Badger's warnings and errors (its informational
	// messages at debug level). Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ValueLogFileSize == 0 {
		c.ValueLogFileSize = DefaultValueLogFileSize
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = DefaultMemTableSize
	}
	if c.BlockCacheSize == 0 {
		c.BlockCacheSize = DefaultBlockCacheSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Path == "" && !c.InMemory:
		return errors.New("Config.Path is required")
	case c.Path != "" && c.InMemory:
		return errors.New("Config.Path and Config.InMemory exclude each other")
	case c.MaxBytes < 0:
		return fmt.Errorf("Config.MaxBytes is negative (%d)", c.MaxBytes)
	case c.ValueLogFileSize < 1<<20 || c.ValueLogFileSize >= 2<<30:
		return fmt.Errorf("Config.ValueLogFileSize %d is outside [1 MiB, 2 GiB)", c.ValueLogFileSize)
	case c.MemTableSize < 1<<20:
		return fmt.Errorf("Config.MemTableSize %d is below 1 MiB", c.MemTableSize)
	case c.BlockCacheSize < 0:
		return fmt.Errorf("Config.BlockCacheSize is negative (%d)", c.BlockCacheSize)
	}
	return nil
}

func (c Config) badgerOptions() badger.Options {
	opts := badger.DefaultOptions(c.Path).
		WithInMemory(c.InMemory).
		WithLogger(badgerLogger{c.Logger}).
		WithSyncWrites(false).
		WithDetectConflicts(true). // the Put and GC protocols rely on it
		WithNumVersionsToKeep(1).
		WithValueThreshold(DefaultValueThreshold).
		WithValueLogFileSize(c.ValueLogFileSize).
		WithMemTableSize(c.MemTableSize).
		WithNumMemtables(3).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(c.BlockCacheSize).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	if c.InMemory {
		// Without a value log every value lives in the memtable, up to
		// Badger's largest threshold or a batch (15% of a memtable),
		// whichever is smaller.
		opts = opts.WithValueThreshold(min(1<<20, 15*c.MemTableSize/100))
	}
	return opts
}

// Store is weft's on-disk state. Its methods are safe for concurrent use.
type Store struct {
	cfg  Config
	db   *badger.DB
	lock *os.File // our own directory lock, held until Close
	bufs Buffers

	// life guards against use after Close: every operation holds it for
	// reading; Close takes it for writing once ctx is cancelled, so
	// long-running operations (GC, queries) notice and return.
	life      sync.RWMutex
	closed    bool
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	blocks atomic.Int64 // number of stored blocks
	bytes  atomic.Int64 // logical bytes of stored blocks, plus reservations in flight

	gcSem chan struct{} // one GC at a time

	// sweepMu orders GC deletions against Session holds: a Session takes it
	// for reading while it records a hold and looks at the block, GC for
	// writing while it checks holds and commits a batch of deletions.
	sweepMu sync.RWMutex

	sessMu   sync.Mutex
	sessions map[*Session]struct{}
	gc       *gcRun // non-nil while a GC runs

	flushMu   sync.Mutex
	flushDone chan struct{} // non-nil while GC has Badger's writes blocked

	// commitMu is held for reading around every commit of a write
	// transaction while the store is open, and for writing around
	// DropPrefix. Badger checks that writes are not blocked and then
	// queues the commit, after it gave the commit its timestamp; a
	// DropPrefix that blocks writes in between leaves the commit queued
	// until it ends, while it waits itself for every commit before its
	// read timestamp: both waited for ever (a GC deadlock seen in CI).
	commitMu sync.RWMutex

	files *fileTier // nil in memory

	comp     *compactions  // pauses Badger's compaction workers while idle
	compDone chan struct{} // closed when runCompactions has returned

	pins *Pins
	bs   *blockStore
	ds   *Datastore

	// afterMark, if set (by tests), runs between GC's mark and sweep.
	afterMark func()
}

// Open opens (creating if needed) the store described by cfg.
func Open(cfg Config) (*Store, error) {
	s, err := open(cfg)
	if err != nil {
		where := cfg.Path
		if cfg.InMemory {
			where = "(memory)"
		}
		return nil, fmt.Errorf("open store at %s: %w", where, err)
	}
	return s, nil
}

func open(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg:      cfg,
		gcSem:    make(chan struct{}, 1),
		sessions: make(map[*Session]struct{}),
	}
	if !cfg.InMemory {
		if err := os.MkdirAll(cfg.Path, 0o700); err != nil {
			return nil, err
		}
		lock, err := lockDir(filepath.Join(cfg.Path, lockFileName))
		if err != nil {
			return nil, err
		}
		s.lock = lock
		if s.files, err = openFileTier(cfg.Path, !cfg.BufferedFiles, !cfg.SyncFileIO, cfg.Logger); err != nil {
			s.unlock()
			return nil, err
		}
	}
	db, err := badger.Open(cfg.badgerOptions())
	if err != nil {
		s.unlock()
		return nil, err
	}
	s.db = db
	s.comp = newCompactions(db, compactionIdle)
	clean, err := s.loadUsage()
	if err != nil {
		db.Close()
		s.unlock()
		return nil, fmt.Errorf("count stored blocks: %w", err)
	}
	if err := s.openGeneration(clean); err != nil {
		db.Close()
		s.unlock()
		return nil, fmt.Errorf("record store generation: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.compDone = make(chan struct{})
	go func() {
		defer close(s.compDone)
		s.runCompactions(s.ctx.Done())
	}()
	s.pins = &Pins{s: s}
	s.bs = &blockStore{s: s}
	s.ds = &Datastore{s: s}
	return s, nil
}

func (s *Store) unlock() {
	if s.lock != nil {
		s.lock.Close() // closing the descriptor releases the flock
		s.lock = nil
	}
}

// loadUsage sets the block counters: from the record a clean Close left, or
// by counting the blocks after an unclean stop, and reports whether the
// last stop was clean. The record is deleted (and the deletion synced) so
// that a crash from now on leads to a recount.
func (s *Store) loadUsage() (clean bool, err error) {
	var rec []byte
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(usageKey)
		if err != nil {
			return err
		}
		rec, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case err == nil && len(rec) == usageRecordSz:
		s.blocks.Store(int64(binary.BigEndian.Uint64(rec[0:8])))
		s.bytes.Store(int64(binary.BigEndian.Uint64(rec[8:16])))
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(usageKey) }); err != nil {
			return false, err
		}
		if s.cfg.InMemory {
			return true, nil
		}
		return true, s.db.Sync()
	case err != nil && !errors.Is(err, badger.ErrKeyNotFound):
		return false, err
	}
	var n, total int64
	err = s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = blockPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			size, err := valueLen(it.Item())
			if err != nil {
				return err
			}
			n++
			total += int64(size)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	s.blocks.Store(n)
	s.bytes.Store(total)
	return false, nil
}

// openGeneration starts this session's file-tier generation: the last one
// plus one, and if the last stop was not clean, the last generation joins
// the untrusted ones. The record is synced before any file of the new
// generation is written.
func (s *Store) openGeneration(clean bool) error {
	if s.files == nil {
		return nil
	}
	var rec []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(filesKey)
		if err != nil {
			return err
		}
		rec, err = item.ValueCopy(nil)
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	var gens []uint64
	for len(rec) > 0 {
		g, k := binary.Uvarint(rec)
		if k <= 0 {
			return fmt.Errorf("bad generation record %x", rec)
		}
		gens = append(gens, g)
		rec = rec[k:]
	}
	var last uint64
	untrusted := make(map[uint64]bool)
	if len(gens) > 0 {
		last = gens[0]
		for _, g := range gens[1:] {
			untrusted[g] = true
		}
		if !clean && last != 0 {
			untrusted[last] = true
		}
	}
	gen := last + 1
	out := binary.AppendUvarint(nil, gen)
	for g := range untrusted {
		out = binary.AppendUvarint(out, g)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(filesKey, out) }); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	s.files.gen, s.files.untrusted = gen, untrusted
	return nil
}

// valueLen returns the exact length of an item's value (for a block in the
// file tier, the length its marker records). For a value in the value log
// this reads the entry's header (one page of the mmapped file), which
// Item.ValueSize only estimates.
func valueLen(item *badger.Item) (int, error) {
	if inPack(item) {
		size, _, _, err := packEntry(item)
		return size, err
	}
	if inFile(item) {
		return markerSize(item)
	}
	n := 0
	err := item.Value(func(v []byte) error { n = len(v); return nil })
	return n, err
}

// Close flushes and closes the database and releases the directory lock. It
// cancels running GCs, queries and key listings, waits for every operation in
// flight, and is idempotent: later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.compDone // before Badger's Close stops the workers itself
		s.life.Lock()
		s.closed = true
		s.life.Unlock()
		var errs []error
		// The usage record says the stop was clean, which vouches for the
		// block files this session wrote: sync them first (see files.go).
		synced := true
		if s.files != nil {
			s.files.close()
			if err := syncFS(s.files.dir); err != nil {
				errs = append(errs, fmt.Errorf("sync block files: %w", err))
				synced = false
			}
		}
		var rec [usageRecordSz]byte
		binary.BigEndian.PutUint64(rec[0:8], uint64(s.blocks.Load()))
		binary.BigEndian.PutUint64(rec[8:16], uint64(s.bytes.Load()))
		if !synced {
			// not recorded: the next open counts again and checks the files
		} else if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(usageKey, rec[:]) }); err != nil {
			errs = append(errs, fmt.Errorf("record usage: %w", err))
		}
		if err := s.db.Close(); err != nil {
			errs = append(errs, err)
		}
		s.unlock()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close store: %w", err)
		}
	})
	return s.closeErr
}

// enter marks the start of an operation; it reports false once the store is
// closed. Every successful enter must be paired with leave.
func (s *Store) enter() bool {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return false
	}
	return true
}

func (s *Store) leave() { s.life.RUnlock() }

// Datastore returns the key-value namespace other subsystems persist into.
// Keys are go-datastore keys; wrap it with go-datastore's namespace package
// to give each subsystem its own prefix. Its Close is a no-op: the Store owns
// the database.
func (s *Store) Datastore() datastore.Batching { return s.ds }

// Blockstore returns the store's blocks as a boxo blockstore. It also
// implements blockstore.Viewer. Blocks put through it are not protected from
// GC; use a Session's blockstore for an add or a fetch.
func (s *Store) Blockstore() blockstore.Blockstore { return s.bs }

// Pins returns the store's pin set.
func (s *Store) Pins() *Pins { return s.pins }

// Buffers returns the memory to read large blocks into and to hand to
// PutMany: the disk reads and writes it fastest (see Buffers). It outlives
// Close.
func (s *Store) Buffers() *Buffers { return &s.bufs }

// Stat describes what a store holds.
type Stat struct {
	Blocks     int64 // number of stored blocks
	BlockBytes int64 // logical size of the stored blocks: the sum of their lengths
	MaxBytes   int64 // Config.MaxBytes; 0 means unlimited
	DiskBytes  int64 // disk space taken by the database directory (0 in memory)
}

// Stat reports the store's size. It does not block on GC or writers.
func (s *Store) Stat() Stat {
	st := Stat{
		Blocks:     s.blocks.Load(),
		BlockBytes: s.bytes.Load(),
		MaxBytes:   s.cfg.MaxBytes,
	}
	if !s.cfg.InMemory {
		st.DiskBytes, _ = dirSize(s.cfg.Path)
	}
	return st
}

// dirSize returns the disk space taken by the files under dir, counting
// allocated blocks rather than apparent sizes: Badger's files are sparse
// while being written.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked (a value log file after GC)
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		total += allocatedSize(info)
		return nil
	})
	return total, err
}

// reserve accounts n more block bytes, failing with ErrStoreFull if that
// would pass the limit. A failed write must give the reservation back.
func (s *Store) reserve(n int64) error {
	limit := s.cfg.MaxBytes
	if limit == 0 {
		s.bytes.Add(n)
		return nil
	}
	for {
		cur := s.bytes.Load()
		if cur+n > limit {
			return fmt.Errorf("%w: %d bytes used of limit %d; free space with `weft gc` or raise Store.MaxBytes",
				ErrStoreFull, cur, limit)
		}
		if s.bytes.CompareAndSwap(cur, cur+n) {
			return nil
		}
	}
}

// update runs fn in a read-write transaction, waiting out the moments when
// GC has Badger's writes blocked. fn may run more than once.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.comp.wrote()
	for {
		s.commitMu.RLock()
		err := s.db.Update(fn)
		s.commitMu.RUnlock()
		if !errors.Is(err, badger.ErrBlockedWrites) {
			return err
		}
		if !s.waitFlush() {
			return err
		}
	}
}

// commit commits txn under commitMu.
func (s *Store) commit(txn *badger.Txn) error {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	return txn.Commit()
}

// waitFlush waits until a GC flush that has blocked Badger's writes ends,
// and reports false if the store is closing instead. Only GC blocks Badger's
// writes while operations run (Close waits for them to finish first), and it
// publishes flushDone before blocking and clears it after unblocking: so when
// flushDone is already nil here, the flush that refused the write has ended.
func (s *Store) waitFlush() bool {
	s.flushMu.Lock()
	done := s.flushDone
	s.flushMu.Unlock()
	if done == nil {
		return s.ctx.Err() == nil
	}
	select {
	case <-done:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// badgerLogger sends Badger's log to slog, its chatty info messages at debug
// level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(fmt.Sprintf(f, a...), "component", "store/badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(fmt.Sprintf(f, a...), "component", "store/badger")
}

func (b badgerLogger) Infof(f string, a ...any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(fmt.Sprintf(f, a...), "component", "store/badger")
	}
}

func (b badgerLogger) Debugf(string, ...any) {}
