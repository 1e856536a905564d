package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// Garbage collection runs beside readers and writers. The argument, in
// short:
//
//  1. Start. GC registers itself (s.gc) and copies the set of open Sessions.
//     Every Session opened from now until GC ends is added to that list, and
//     a Session closed meanwhile keeps its holds, so GC honours the holds of
//     every Session that existed at any moment of the run. Then GC opens a
//     snapshot transaction at read timestamp S.
//  2. Mark. GC reads the pins (after registering, so a pin added later was
//     added by Pins.Add, whose own Session holds the DAG it checked) and
//     walks every recursive pin's DAG: the live set.
//  3. Sweep. GC lists the blocks of snapshot S (blocks written later are not
//     even candidates) that are not live, and deletes them in batches. For
//     each batch it takes sweepMu for writing, drops the keys any Session
//     holds, and deletes the rest in one transaction that first reads each
//     key and skips those whose version is above S (written or rewritten
//     since GC started). A Session records a hold and looks at the block
//     under sweepMu for reading, inside one transaction started after
//     taking it: either the batch committed first, and the Session sees the
//     block missing (a Put writes it again), or the batch sees the hold.
//     Badger's conflict detection makes a batch that read a key fail if
//     anyone wrote that key after the batch's read timestamp; GC then runs
//     the batch again, where the version check skips the key.
//     A batch gives back the space of the file-tier blocks it deleted
//     (punches their packs, unlinks their files) after its commit and
//     before it releases sweepMu; writers hold sweepMu for reading from
//     writing a block until committing its key, so no data a committed key
//     needs is ever given back (see files.go). GC then gives back the pack
//     space and removes the block files that no key points to (left by a
//     crash).
//  4. Reclaim. A file-tier block's space came back at its punch. For the
//     small blocks in Badger, deleting keys frees nothing on disk: the data sits in value
//     log files. Badger learns which bytes of a file are garbage only when
//     compaction drops the old versions the deletions hide, and rewrites
//     (or removes) a file once half of it is garbage. So GC flushes the
//     memtable and compacts level 0 into the base level (Badger's
//     DropPrefix on a scratch key, the one public way to force that flush;
//     it blocks writes for its duration and our writers wait it out), then
//     runs value log GC until it finds nothing more to rewrite.
//
// Readers never take sweepMu, so serving blocks never waits for GC.
//
// Limits of step 4 (for the blocks in Badger): the flush compacts level 0 into Badger's base level, so
// the space of a deleted block comes back at once when the old key sits in
// level 0 or the base level, which holds every key of a store up to tens of
// GB (a block key takes under 100 bytes of LSM). Keys of older blocks in a
// larger store sit deeper, and their space comes back when Badger's own
// compactions reach them: at a later GC. The value log file being written
// is never rewritten, so up to Config.ValueLogFileSize of garbage can stay.

// gcBatch is the number of deletions committed at once: small enough that
// writers waiting on sweepMu wait only a few milliseconds.
const gcBatch = 256

// vlogDiscardRatio is the share of garbage from which a value log file is
// rewritten; Badger recommends 0.5 (a lifetime write amplification of 2).
const vlogDiscardRatio = 0.5

// gcRun is the state of a running GC that Sessions need to see.
type gcRun struct {
	sessions []*Session // guarded by Store.sessMu
}

// GCResult reports what a GC did.
type GCResult struct {
	BlocksFreed int64         // blocks deleted
	BytesFreed  int64         // their logical size
	LiveBlocks  int64         // blocks reachable from pins
	DiskBefore  int64         // Stat().DiskBytes at the start
	DiskAfter   int64         // Stat().DiskBytes at the end
	Duration    time.Duration // wall time of the run
}

// GC deletes every block that is neither reachable from a pin nor held by a
// Session, then gives the disk space back. It does not stop readers or
// writers (see the comment at the top of gc.go). Only one GC runs at a time;
// a second call meanwhile returns ErrGCRunning. GC stops early, keeping what
// it deleted so far, when ctx is done or the store closes.
func (s *Store) GC(ctx context.Context) (GCResult, error) {
	start := time.Now()
	if !s.enter() {
		return GCResult{}, ErrClosed
	}
	defer s.leave()
	select {
	case s.gcSem <- struct{}{}:
		defer func() { <-s.gcSem }()
	default:
		return GCResult{}, ErrGCRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	res := GCResult{DiskBefore: s.Stat().DiskBytes}
	err := s.collect(ctx, &res)
	if err == nil && s.files != nil {
		if err = s.sweepOrphanPacks(ctx.Err); err != nil {
			err = fmt.Errorf("give back orphan pack space: %w", err)
		} else if err = s.sweepOrphanFiles(ctx.Err); err != nil {
			err = fmt.Errorf("remove orphan block files: %w", err)
		}
	}
	if err == nil {
		err = s.reclaim(ctx)
	}
	res.DiskAfter = s.Stat().DiskBytes
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	return res, nil
}

// collect runs steps 1 to 3: register, mark, sweep.
func (s *Store) collect(ctx context.Context, res *GCResult) error {
	g := &gcRun{}
	s.sessMu.Lock()
	for ss := range s.sessions {
		g.sessions = append(g.sessions, ss)
	}
	s.gc = g
	s.sessMu.Unlock()
	defer func() {
		s.sessMu.Lock()
		s.gc = nil
		s.sessMu.Unlock()
	}()

	snap := s.db.NewTransaction(false)
	defer snap.Discard()
	readTs := snap.ReadTs()

	live, err := s.mark(ctx)
	if err != nil {
		return err
	}
	res.LiveBlocks = int64(len(live))
	if s.afterMark != nil {
		s.afterMark()
	}

	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = blockPrefix
	it := snap.NewIterator(opts)
	defer it.Close()
	batch := make([][]byte, 0, gcBatch)
	flush := func() error {
		n, b, err := s.sweepBatch(g, batch, readTs)
		res.BlocksFreed += n
		res.BytesFreed += b
		batch = batch[:0]
		return err
	}
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := it.Item().Key()
		if _, ok := live[string(key)]; ok {
			continue
		}
		batch = append(batch, it.Item().KeyCopy(nil))
		if len(batch) == gcBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		return flush()
	}
	return nil
}

// mark returns the block keys reachable from the pins. A pinned block that
// is missing or cannot be decoded stops GC: without its links GC cannot tell
// what it keeps.
func (s *Store) mark(ctx context.Context) (map[string]struct{}, error) {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	pins, err := listPins(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	get := func(_ context.Context, c cid.Cid) (blocks.Block, error) {
		if isIdentity(c) {
			return identityBlock(c)
		}
		item, err := txn.Get(blockKey(c.Hash()))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, notFound(c)
		}
		if err != nil {
			return nil, err
		}
		data, err := s.blockData(item)
		if errors.Is(err, errBadFile) {
			return nil, notFound(c)
		}
		if err != nil {
			return nil, err
		}
		return blocks.NewBlockWithCid(data, c)
	}
	has := func(_ context.Context, c cid.Cid) (bool, error) {
		if isIdentity(c) {
			return true, nil
		}
		_, err := txn.Get(blockKey(c.Hash()))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	seen := make(map[string]struct{})
	for _, p := range pins {
		if p.Mode == Direct {
			seen[p.Cid.KeyString()] = struct{}{}
			continue
		}
		if err := walkDAG(ctx, p.Cid, seen, get, has); err != nil {
			return nil, fmt.Errorf("walk pinned DAG %s (%q): %w", p.Cid, p.Name, err)
		}
	}
	live := make(map[string]struct{}, len(seen))
	for k := range seen {
		c, err := cid.Cast([]byte(k))
		if err != nil || isIdentity(c) {
			continue
		}
		live[string(blockKey(c.Hash()))] = struct{}{}
	}
	return live, nil
}

// sweepBatch deletes the keys that no Session holds and that nobody wrote
// since readTs, in one transaction, and reports what it freed.
func (s *Store) sweepBatch(g *gcRun, keys [][]byte, readTs uint64) (n, freed int64, err error) {
	var gone deleted
	defer func() { // after sweepMu's release
		if err == nil {
			err = s.punchRegions(gone)
		}
	}()
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	s.sessMu.Lock()
	sessions := g.sessions[:len(g.sessions):len(g.sessions)]
	s.sessMu.Unlock()
	cand := keys[:0:0]
	for _, k := range keys {
		held := false
		for _, ss := range sessions {
			if ss.isHeld(k) {
				held = true
				break
			}
		}
		if !held {
			cand = append(cand, k)
		}
	}
	for {
		n, gone = 0, deleted{}
		s.comp.wrote()
		txn := s.db.NewTransaction(true)
		for _, k := range cand {
			item, err := txn.Get(k)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				txn.Discard()
				return 0, 0, err
			}
			if item.Version() > readTs {
				continue // written since GC started
			}
			if err := gone.add(item); err != nil {
				txn.Discard()
				return 0, 0, err
			}
			if err := txn.Delete(k); err != nil {
				txn.Discard()
				return 0, 0, err
			}
			n++
		}
		if n == 0 {
			txn.Discard()
			return 0, 0, nil
		}
		err := s.commit(txn)
		if errors.Is(err, badger.ErrConflict) {
			continue // a key was written meanwhile; the version check skips it now
		}
		if err != nil {
			return 0, 0, err
		}
		s.blocks.Add(-n)
		s.bytes.Add(-gone.bytes)
		// Still under sweepMu: no writer is between writing one of these
		// blocks' files again and committing its key.
		if err := s.unlinkFiles(gone); err != nil {
			return n, gone.bytes, err
		}
		return n, gone.bytes, nil
	}
}

// reclaim runs step 4: make Badger give the space of deleted blocks back.
func (s *Store) reclaim(ctx context.Context) error {
	if s.cfg.InMemory {
		return nil
	}
	if err := s.update(func(txn *badger.Txn) error { return txn.Set(flushKey, nil) }); err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	done := make(chan struct{})
	s.flushMu.Lock()
	s.flushDone = done
	s.flushMu.Unlock()
	err := s.comp.exclusive(func() error {
		s.commitMu.Lock() // no commit between Badger's check and its queue (commitMu)
		defer s.commitMu.Unlock()
		return s.db.DropPrefix(flushPrefix)
	})
	s.flushMu.Lock()
	s.flushDone = nil
	s.flushMu.Unlock()
	close(done)
	if err != nil {
		return fmt.Errorf("flush memtable: %w", err)
	}
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(vlogDiscardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("value log gc: %w", err)
		}
	}
	return ctx.Err()
}
