package store

import (
	"bytes"
	"context"
	"errors"
	"github.com/dgraph-io/badger/v4"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	ipld "github.com/ipfs/go-ipld-format"
)

func blockFile(s *Store, b blocks.Block) string { return s.files.path(b.Cid().Hash()) }

func fileExists(t testing.TB, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestFileTierSplitsBySize: large blocks get a file, small ones stay in
// Badger, and both read back (Get, View, GetSize) with the right counters,
// also after a reopen.
func TestFileTierSplitsBySize(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	big := distinctBlocks(t, 31, 3, fileTierMin)
	small := distinctBlocks(t, 32, 3, fileTierMin-1)
	all := append(append([]blocks.Block{}, big...), small...)
	putAll(t, s, all...)
	for _, b := range big {
		if !fileExists(t, blockFile(s, b)) {
			t.Fatalf("no file for a %d-byte block", len(b.RawData()))
		}
	}
	for _, b := range small {
		if fileExists(t, blockFile(s, b)) {
			t.Fatalf("a file for a %d-byte block", len(b.RawData()))
		}
	}
	check := func(s *Store) {
		t.Helper()
		mustHave(t, s, true, all...)
		for _, b := range all {
			n, err := s.Blockstore().GetSize(ctx, b.Cid())
			if err != nil || n != len(b.RawData()) {
				t.Fatalf("GetSize = %d, %v; want %d", n, err, len(b.RawData()))
			}
			err = s.Blockstore().(blockstore.Viewer).View(ctx, b.Cid(), func(d []byte) error {
				if !bytes.Equal(d, b.RawData()) {
					return errors.New("View: wrong data")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if st := s.Stat(); st.Blocks != 6 || st.BlockBytes != blockBytes(all...) {
			t.Fatalf("Stat = %+v", st)
		}
	}
	check(s)
	s = reopen(t, s)
	check(s)
}

// TestFileTierCrashLeftovers: temporary files a crash left are removed at
// Open, and a block file whose key was never committed is removed by GC.
func TestFileTierCrashLeftovers(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openStore(t, Config{Path: dir})
	keep := distinctBlocks(t, 41, 2, 128<<10)
	putAll(t, s, keep...)
	if err := s.Pins().Add(ctx, keep[0].Cid(), Direct, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What a kill mid-write leaves: a half-written temporary file, and a
	// renamed file whose key was not committed.
	tmp := filepath.Join(dir, blocksDirName, tmpDirName, "leftover")
	if err := os.WriteFile(tmp, []byte("half a block"), 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := distinctBlocks(t, 42, 1, 128<<10)[0]
	if err := s.files.write(orphan.Cid().Hash(), orphan.RawData()); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Config{Path: dir})
	if fileExists(t, tmp) {
		t.Fatal("Open left a temporary file in place")
	}
	mustHave(t, s, false, orphan)
	if ok, _ := s.Blockstore().Has(ctx, orphan.Cid()); ok {
		t.Fatal("an orphan file counts as a block")
	}
	if st := s.Stat(); st.Blocks != 2 {
		t.Fatalf("Stat = %+v, want 2 blocks", st)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if fileExists(t, blockFile(s, orphan)) {
		t.Fatal("GC left an orphan block file")
	}
	mustHave(t, s, true, keep[0])
	mustHave(t, s, false, keep[1])
	if fileExists(t, blockFile(s, keep[1])) {
		t.Fatal("GC left the file of a collected block")
	}
}

// TestFileTierCorruptFileIsMissing: a block file that is short, altered or
// gone is never served when its generation is untrusted (here: written
// before an unclean stop); the block reads as missing, its key is dropped
// (the counters follow), and putting the block again repairs it. A short or
// missing file is caught in any generation.
func TestFileTierCorruptFileIsMissing(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	blks := distinctBlocks(t, 51, 3, 256<<10)
	putAll(t, s, blks...)
	s = reopenAfterCrash(t, s)
	path := blockFile(s, blks[0])
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil { // torn
		t.Fatal(err)
	}
	data[100] ^= 1
	if err := os.WriteFile(blockFile(s, blks[1]), data, 0o600); err != nil { // flipped bit
		t.Fatal(err)
	}
	if err := os.Remove(blockFile(s, blks[2])); err != nil { // lost
		t.Fatal(err)
	}
	for i, b := range blks {
		if _, err := s.Blockstore().Get(ctx, b.Cid()); !ipld.IsNotFound(err) {
			t.Fatalf("Get of damaged block %d: %v, want not found", i, err)
		}
		if ok, err := s.Blockstore().Has(ctx, b.Cid()); ok || err != nil {
			t.Fatalf("Has of damaged block %d after Get = %v, %v", i, ok, err)
		}
	}
	if st := s.Stat(); st.Blocks != 0 || st.BlockBytes != 0 {
		t.Fatalf("Stat after dropping the damaged blocks = %+v", st)
	}
	// View does not serve a damaged file either, even one of this session.
	putAll(t, s, blks[0])
	if err := os.WriteFile(blockFile(s, blks[0]), data[:10], 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Blockstore().(blockstore.Viewer).View(ctx, blks[0].Cid(), func([]byte) error {
		return errors.New("View served a damaged file")
	})
	if !ipld.IsNotFound(err) {
		t.Fatalf("View of a damaged block: %v", err)
	}
	putAll(t, s, blks...)
	mustHave(t, s, true, blks...)
	if st := s.Stat(); st.Blocks != 3 || st.BlockBytes != blockBytes(blks...) {
		t.Fatalf("Stat after repair = %+v", st)
	}
}

// TestFileTierGenerations: each session writes its files under a new
// generation; the generations of sessions that ended without a clean Close
// stay untrusted (their files are checked on every read) across later
// sessions, clean ones are trusted, and markers from before generations
// (generation 0) are always checked.
func TestFileTierGenerations(t *testing.T) {
	s := openStore(t, Config{})
	check := func(step string, gen uint64, trusted, untrusted []uint64) {
		t.Helper()
		if s.files.gen != gen {
			t.Errorf("%s: generation %d, want %d", step, s.files.gen, gen)
		}
		for _, g := range trusted {
			if !s.files.trusted(g) {
				t.Errorf("%s: generation %d untrusted, want trusted", step, g)
			}
		}
		for _, g := range append(untrusted, 0) {
			if s.files.trusted(g) {
				t.Errorf("%s: generation %d trusted, want checked", step, g)
			}
		}
	}
	check("new store", 1, []uint64{1}, nil)
	s = reopen(t, s)
	check("after a clean stop", 2, []uint64{1, 2}, nil)
	s = reopenAfterCrash(t, s)
	check("after a crash", 3, []uint64{1, 3}, []uint64{2})
	s = reopen(t, s)
	check("clean again", 4, []uint64{1, 3, 4}, []uint64{2})
	s = reopenAfterCrash(t, s)
	check("second crash", 5, []uint64{1, 3, 5}, []uint64{2, 4})

	// A block written in an untrusted generation is checked, one written
	// now is not; the marker records which.
	blk := distinctBlocks(t, 53, 1, 128<<10)[0]
	putAll(t, s, blk)
	var gen uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(blk.Cid().Hash()))
		if err != nil {
			return err
		}
		_, gen, err = marker(item)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if gen != 5 {
		t.Fatalf("marker records generation %d, want 5", gen)
	}
}
func TestFileTierDeleteUnlinks(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	blks := distinctBlocks(t, 61, 64, 512<<10) // 32 MiB
	putAll(t, s, blks...)
	if err := s.Blockstore().DeleteBlock(ctx, blks[0].Cid()); err != nil {
		t.Fatal(err)
	}
	if fileExists(t, blockFile(s, blks[0])) {
		t.Fatal("DeleteBlock left the file")
	}
	mustHave(t, s, false, blks[0])
	before := s.Stat().DiskBytes
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := s.Stat().DiskBytes
	t.Logf("GC: %+v; disk %d KiB -> %d KiB", res, before>>10, after>>10)
	if res.BlocksFreed != 63 {
		t.Fatalf("GC freed %d blocks, want 63", res.BlocksFreed)
	}
	for _, b := range blks {
		if fileExists(t, blockFile(s, b)) {
			t.Fatal("GC left a block file")
		}
	}
	if before-after < 30<<20 {
		t.Fatalf("disk %d KiB -> %d KiB: less than 30 MiB given back", before>>10, after>>10)
	}
	if st := s.Stat(); st.Blocks != 0 || st.BlockBytes != 0 {
		t.Fatalf("Stat = %+v", st)
	}
}

// TestFileTierConcurrentGC runs GC in a loop while writers put (and pin
// some of) large blocks and readers read them: a read returns the whole
// block or not found, never part of one; a block a Session put stays
// readable until the Session closes; pinned blocks survive.
func TestFileTierConcurrentGC(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := openStore(t, Config{})
	const writers, rounds = 3, 12
	pool := distinctBlocks(t, 71, 24, 96<<10) // written again and again, unpinned
	var pinned [writers][]blocks.Block
	for w := range writers {
		pinned[w] = distinctBlocks(t, 72+uint64(w), rounds, 80<<10)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	wg.Add(1)
	go func() { // GC
		defer wg.Done()
		for !stop.Load() {
			if _, err := s.GC(ctx); err != nil && !errors.Is(err, ErrGCRunning) {
				fail(err)
				return
			}
		}
	}()
	for r := range 2 { // readers of the pool
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for !stop.Load() {
				b := pool[rng.IntN(len(pool))]
				got, err := s.Blockstore().Get(ctx, b.Cid())
				switch {
				case ipld.IsNotFound(err):
				case err != nil:
					fail(err)
					return
				case !bytes.Equal(got.RawData(), b.RawData()):
					fail(errors.New("a read returned wrong or partial data"))
					return
				}
			}
		}()
	}
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 10))
			for i := range rounds {
				ss := s.NewSession()
				batch := []blocks.Block{pinned[w][i], pool[rng.IntN(len(pool))], pool[rng.IntN(len(pool))]}
				if err := ss.Blockstore().PutMany(ctx, batch); err != nil {
					fail(err)
					return
				}
				time.Sleep(time.Millisecond)
				for _, b := range batch {
					got, err := ss.Blockstore().Get(ctx, b.Cid())
					if err != nil || !bytes.Equal(got.RawData(), b.RawData()) {
						fail(errors.New("a block put through a Session went missing before it closed"))
						return
					}
				}
				if err := s.Pins().Add(ctx, pinned[w][i].Cid(), Direct, ""); err != nil {
					fail(err)
					return
				}
				ss.Close()
			}
		}()
	}
	wwg.Wait()
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		mustHave(t, s, true, pinned[w]...)
	}
	mustHave(t, s, false, pool...)
	for _, b := range pool {
		if fileExists(t, blockFile(s, b)) {
			t.Fatal("a collected block's file is still there")
		}
	}
	if st := s.Stat(); st.Blocks != writers*rounds || st.BlockBytes != writers*rounds*(80<<10) {
		t.Fatalf("Stat = %+v", st)
	}
}

// TestFileTierSpares: after the first large write the tier keeps empty
// files ready in blocks/.tmp; writes use them, and Close removes the ones
// left.
func TestFileTierSpares(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, blocksDirName, tmpDirName)
	count := func() int {
		ents, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	blks := distinctBlocks(t, 61, 40, 128<<10)
	putAll(t, s, blks[:1]...)
	deadline := time.Now().Add(10 * time.Second)
	for count() < spareFiles {
		if time.Now().After(deadline) {
			t.Fatalf("%d spare files after 10 s, want %d", count(), spareFiles)
		}
		time.Sleep(5 * time.Millisecond)
	}
	putAll(t, s, blks[1:]...)
	mustHave(t, s, true, blks...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d files left in blocks/.tmp after Close", n)
	}
	s = openStore(t, Config{Path: dir})
	mustHave(t, s, true, blks...)
}

// TestFileTierIOPaths: blocks of the sizes the tier writes directly (an
// aligned head, with or without a buffered tail) come back byte for byte
// after a reopen, whether the tier submits its direct I/O asynchronously
// (the default on Linux) or with plain system calls.
func TestFileTierIOPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"async", Config{}},
		{"sync", Config{SyncFileIO: true}},
		{"buffered", Config{BufferedFiles: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, tc.cfg)
			var blks []blocks.Block
			for i, size := range []int{fileTierMin, 1 << 20, 1<<20 + 123, 300001} {
				blks = append(blks, distinctBlocks(t, uint64(60+i), 3, size)...)
			}
			putAll(t, s, blks...)
			mustHave(t, s, true, blks...)
			s = reopen(t, s)
			mustHave(t, s, true, blks...)
			if tc.cfg.SyncFileIO || tc.cfg.BufferedFiles {
				if s.files.asyncIO() != nil {
					t.Error("the tier set up async I/O against its config")
				}
			}
		})
	}
}
