package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	ipld "github.com/ipfs/go-ipld-format"
)

func fileExists(t testing.TB, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// placeOf returns where a block's data is in the packs, and false if its
// key is not a pack block's.
func placeOf(t testing.TB, s *Store, b blocks.Block) (packLoc, bool) {
	t.Helper()
	var loc packLoc
	var ok bool
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blockKey(b.Cid().Hash()))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil || !inPack(item) {
			return err
		}
		ok = true
		_, _, loc, err = packEntry(item)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return loc, ok
}

// packFiles returns the pack files in s's directory, by number, with
// their allocated sizes.
func packFiles(t testing.TB, s *Store) map[uint64]int64 {
	t.Helper()
	ids, err := s.files.packIDs()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint64]int64)
	for _, id := range ids {
		info, err := os.Stat(s.files.packPath(id))
		if err != nil {
			t.Fatal(err)
		}
		out[id] = allocatedSize(info)
	}
	return out
}

// packMetaSlack is the disk space a pack may take beyond its blocks': the
// filesystem's own blocks for a file whose extents holes have split (ext4
// charges its extent tree blocks to the file).
const packMetaSlack = 16 << 10

// spans returns the pack space blks take.
func spans(blks ...blocks.Block) int64 {
	var n int64
	for _, b := range blks {
		n += span(len(b.RawData()))
	}
	return n
}

// TestFileTierSplitsBySize: large blocks go to a pack, small ones stay in
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
		if _, ok := placeOf(t, s, b); !ok {
			t.Fatalf("a %d-byte block is not in a pack", len(b.RawData()))
		}
	}
	for _, b := range small {
		if _, ok := placeOf(t, s, b); ok {
			t.Fatalf("a %d-byte block is in a pack", len(b.RawData()))
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

// TestPackCrashLeftovers: what a crash leaves in the packs (blocks whose
// keys were never committed, the space reserved ahead of writes, a pack
// no key points into) is given back by the next GC, which keeps every
// block that has a key.
func TestPackCrashLeftovers(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	keep := distinctBlocks(t, 41, 4, 128<<10)
	putAll(t, s, keep...)
	if err := s.Pins().Add(ctx, keep[0].Cid(), Direct, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Pins().Add(ctx, keep[1].Cid(), Direct, ""); err != nil {
		t.Fatal(err)
	}
	// A block written whose key was not committed: its data is in the
	// pack, after the others.
	orphan := distinctBlocks(t, 42, 1, 128<<10)[0]
	loc, err := s.files.writeBlock(orphan.RawData())
	if err != nil {
		t.Fatal(err)
	}
	// And a pack of a session that wrote nothing it committed.
	lost, err := s.files.openPackFile(loc.id+1, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lost.fd.Write(bytes.Repeat([]byte{7}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	lost.fd.Close()
	s = reopenAfterCrash(t, s)
	if got := packFiles(t, s); got[loc.id] < spans(keep...)+spans(orphan)+packGrowBytes/2 || got[loc.id+1] == 0 {
		t.Fatalf("packs after the crash: %v; want the reserved space still there", got)
	}
	mustHave(t, s, false, orphan)
	mustHave(t, s, true, keep...)
	if st := s.Stat(); st.Blocks != 4 {
		t.Fatalf("Stat = %+v, want 4 blocks", st)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	got := packFiles(t, s)
	if _, ok := got[loc.id+1]; ok {
		t.Fatal("GC left a pack no key points into")
	}
	if got[loc.id] > spans(keep[:2]...)+packMetaSlack {
		t.Fatalf("pack %d takes %d bytes after GC; its live blocks %d", loc.id, got[loc.id], spans(keep[:2]...))
	}
	mustHave(t, s, true, keep[:2]...)
	mustHave(t, s, false, keep[2:]...)
	s = reopen(t, s)
	mustHave(t, s, true, keep[:2]...)
}

// TestPackRotation: the writing pack takes blocks up to its limit, then a
// new one starts; every session writes packs numbered after the existing
// ones; blocks in every pack read back after a reopen; GC removes the packs
// it empties and gives back the space of the blocks it deletes in the
// others.
func TestPackRotation(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	s.files.packs.max = 1 << 20
	first := distinctBlocks(t, 43, 12, 300<<10) // four packs of three
	putAll(t, s, first...)
	if n := len(packFiles(t, s)); n != 4 {
		t.Fatalf("%d packs for 12 blocks of 300 KiB, 3 to a pack; want 4", n)
	}
	s = reopen(t, s)
	mustHave(t, s, true, first...)
	s.files.packs.max = 1 << 20
	second := distinctBlocks(t, 44, 3, 300<<10)
	putAll(t, s, second...)
	for _, b := range second {
		if loc, _ := placeOf(t, s, b); loc.id != 5 {
			t.Fatalf("a block of the second session went to pack %d, want 5", loc.id)
		}
	}
	for _, b := range append(first[:1:1], second[0]) {
		if err := s.Pins().Add(ctx, b.Cid(), Direct, ""); err != nil {
			t.Fatal(err)
		}
	}
	keepPack, _ := placeOf(t, s, first[0])
	before := s.Stat().DiskBytes
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	got := packFiles(t, s)
	if len(got) != 2 {
		t.Fatalf("packs after GC: %v; want the two that hold pinned blocks", got)
	}
	if got[keepPack.id] > spans(first[0])+packMetaSlack {
		t.Fatalf("pack %d takes %d bytes after GC, its one live block %d", keepPack.id, got[keepPack.id], spans(first[0]))
	}
	if after := s.Stat().DiskBytes; before-after < 10*(300<<10) {
		t.Fatalf("disk %d KiB -> %d KiB: less than 13 blocks given back", before>>10, after>>10)
	}
	s = reopen(t, s)
	mustHave(t, s, true, first[0], second[0])
	mustHave(t, s, false, first[1:]...)
	mustHave(t, s, false, second[1:]...)
}

// TestLegacyBlockFiles: a store from before packs keeps its block files
// (one per block, marker metaFile): they read back, DeleteBlock unlinks
// them, and GC removes the files no key points to.
func TestLegacyBlockFiles(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	blks := distinctBlocks(t, 45, 3, 128<<10)
	for i, b := range blks {
		h := b.Cid().Hash()
		path := s.files.path(h)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b.RawData(), 0o600); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			continue // an orphan: no key
		}
		// As the version before packs wrote it, generation 0 (checked).
		m := binary.AppendUvarint(nil, uint64(len(b.RawData())))
		if err := s.db.Update(func(txn *badger.Txn) error {
			return txn.SetEntry(badger.NewEntry(blockKey(h), m).WithMeta(metaFile))
		}); err != nil {
			t.Fatal(err)
		}
	}
	s = reopenAfterCrash(t, s) // no usage record: the blocks are counted
	mustHave(t, s, true, blks[:2]...)
	if st := s.Stat(); st.Blocks != 2 || st.BlockBytes != blockBytes(blks[:2]...) {
		t.Fatalf("Stat = %+v", st)
	}
	if err := s.Blockstore().DeleteBlock(ctx, blks[0].Cid()); err != nil {
		t.Fatal(err)
	}
	if fileExists(t, s.files.path(blks[0].Cid().Hash())) {
		t.Fatal("DeleteBlock left the block file")
	}
	if err := s.Pins().Add(ctx, blks[1].Cid(), Direct, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if fileExists(t, s.files.path(blks[2].Cid().Hash())) {
		t.Fatal("GC left an orphan block file")
	}
	mustHave(t, s, true, blks[1])
	mustHave(t, s, false, blks[0], blks[2])
}

// TestFileTierCorruptDataIsMissing: a block whose data in its pack is cut
// short, altered or gone (a hole) is never served when its generation is
// untrusted (here: written before an unclean stop); the block reads as
// missing, its key is dropped (the counters follow), and putting the block
// again repairs it. Data cut short is caught in any generation.
func TestFileTierCorruptDataIsMissing(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	blks := distinctBlocks(t, 51, 3, 256<<10)
	putAll(t, s, blks...)
	s = reopenAfterCrash(t, s)
	locs := make([]packLoc, len(blks))
	last := 0
	for i, b := range blks {
		locs[i], _ = placeOf(t, s, b)
		if locs[i].off > locs[last].off {
			last = i
		}
	}
	name := s.files.packPath(locs[0].id)
	pf, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flip, hole := (last+1)%3, (last+2)%3
	if err := pf.Truncate(locs[last].off + 100<<10); err != nil { // torn
		t.Fatal(err)
	}
	var one [1]byte
	pf.ReadAt(one[:], locs[flip].off+100)
	one[0] ^= 1
	if _, err := pf.WriteAt(one[:], locs[flip].off+100); err != nil { // flipped bit
		t.Fatal(err)
	}
	if err := punchHole(pf, locs[hole].off, span(256<<10)); err != nil { // lost
		if _, err := pf.WriteAt(make([]byte, 256<<10), locs[hole].off); err != nil {
			t.Fatal(err)
		}
	}
	pf.Close()
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
	// View does not serve data cut short either, even of this session.
	putAll(t, s, blks[0])
	loc, _ := placeOf(t, s, blks[0])
	if err := os.Truncate(s.files.packPath(loc.id), loc.off+10); err != nil {
		t.Fatal(err)
	}
	err = s.Blockstore().(blockstore.Viewer).View(ctx, blks[0].Cid(), func([]byte) error {
		return errors.New("View served a damaged block")
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
		_, gen, _, err = packEntry(item)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if gen != 5 {
		t.Fatalf("marker records generation %d, want 5", gen)
	}
}

// TestFileTierDeleteGivesSpaceBack: DeleteBlock and GC give a pack block's
// disk space back at once (a punched hole): its region reads as a hole and
// the store's disk use drops by what was freed.
func TestFileTierDeleteGivesSpaceBack(t *testing.T) {
	ctx := t.Context()
	s := openStore(t, Config{})
	blks := distinctBlocks(t, 61, 64, 512<<10) // 32 MiB
	putAll(t, s, blks...)
	loc, _ := placeOf(t, s, blks[0])
	before := packFiles(t, s)[loc.id]
	if err := s.Blockstore().DeleteBlock(ctx, blks[0].Cid()); err != nil {
		t.Fatal(err)
	}
	if after := packFiles(t, s)[loc.id]; before-after < span(512<<10)-packMetaSlack && !s.files.packs.noPunch.Load() {
		t.Fatalf("DeleteBlock gave back %d bytes, want %d (less the filesystem's own)", before-after, span(512<<10))
	}
	mustHave(t, s, false, blks[0])
	before = s.Stat().DiskBytes
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := s.Stat().DiskBytes
	t.Logf("GC: %+v; disk %d KiB -> %d KiB", res, before>>10, after>>10)
	if res.BlocksFreed != 63 {
		t.Fatalf("GC freed %d blocks, want 63", res.BlocksFreed)
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
	s.files.packs.max = 1 << 20 // packs fill, and GC empties and removes them
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
	var live int64
	for w := range writers {
		live += spans(pinned[w]...)
	}
	var held int64
	for id, n := range packFiles(t, s) {
		if p := s.files.packs.cur; p == nil || id != p.id {
			held += n
			live += packMetaSlack
		}
	}
	if held > live {
		t.Fatalf("the full packs take %d bytes, their live blocks %d", held, live)
	}
	if st := s.Stat(); st.Blocks != writers*rounds || st.BlockBytes != writers*rounds*(80<<10) {
		t.Fatalf("Stat = %+v", st)
	}
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

// TestPackDirectRefusedAfterOpen: a filesystem that takes O_DIRECT at open
// but refuses the direct reads and writes themselves (EINVAL, as on a disk
// whose logical blocks are larger than a page) turns the tier to the page
// cache: blocks written before read back, new ones are written, nothing is
// lost, and all of them read back after a reopen.
func TestPackDirectRefusedAfterOpen(t *testing.T) {
	for _, first := range []string{"read", "write"} {
		t.Run(first+" refused first", func(t *testing.T) {
			s := openStore(t, Config{})
			if !s.files.direct.Load() {
				t.Skip("the temp dir's filesystem has no direct I/O, so it cannot refuse it after open")
			}
			before := append(distinctBlocks(t, 81, 3, 1<<20), distinctBlocks(t, 82, 2, 300001)...)
			putAll(t, s, before...)
			s.files.refuseDirect.Store(true)
			after := append(distinctBlocks(t, 83, 3, 1<<20), distinctBlocks(t, 84, 2, 300001)...)
			if first == "read" {
				mustHave(t, s, true, before...)
				putAll(t, s, after...)
			} else {
				putAll(t, s, after...)
				mustHave(t, s, true, before...)
			}
			mustHave(t, s, true, after...)
			if s.files.direct.Load() {
				t.Error("the tier still opens packs for direct I/O after a refusal")
			}
			ps := &s.files.packs
			ps.mu.Lock()
			if ps.cur != nil && ps.cur.direct.Load() {
				t.Error("the writing pack is still in direct I/O after a refusal")
			}
			ps.mu.Unlock()
			// A deleted block's space still comes back (its hole is punched).
			if err := s.Blockstore().DeleteBlock(context.Background(), after[0].Cid()); err != nil {
				t.Fatal(err)
			}
			mustHave(t, s, false, after[0])
			s = reopen(t, s)
			mustHave(t, s, true, before...)
			mustHave(t, s, true, after[1:]...)
		})
	}
}
