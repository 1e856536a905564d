package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/sync/errgroup"
)

// maxPutChunk bounds the blocks written in one Badger transaction. With
// block data in the value log a transaction carries only keys and value
// pointers, so this is far below Badger's transaction size limit.
const maxPutChunk = 256

var (
	_ blockstore.Blockstore = (*blockStore)(nil)
	_ blockstore.Viewer     = (*blockStore)(nil)
)

// blockStore is the boxo blockstore over the store's blocks. sess is nil for
// the store's own blockstore and set for a Session's.
type blockStore struct {
	s    *Store
	sess *Session
}

func blockKey(h mh.Multihash) []byte {
	k := make([]byte, 0, len(blockPrefix)+len(h))
	return append(append(k, blockPrefix...), h...)
}

// isIdentity reports whether c carries its data inline: such blocks are
// never stored, and always "present".
func isIdentity(c cid.Cid) bool { return c.Prefix().MhType == mh.IDENTITY }

func identityBlock(c cid.Cid) (blocks.Block, error) {
	dh, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(dh.Digest, c)
}

// view runs fn on c's stored value inside one read transaction. With
// a session, the hold is recorded first and both happen under sweepMu, so a
// GC batch either deleted the block before (fn sees it missing) or sees the
// hold and keeps it.
func (b *blockStore) view(c cid.Cid, fn func(item *badger.Item) error) error {
	if !b.s.enter() {
		return ErrClosed
	}
	defer b.s.leave()
	key := blockKey(c.Hash())
	if b.sess != nil {
		b.s.sweepMu.RLock()
		defer b.s.sweepMu.RUnlock()
		b.sess.holdKey(key)
	}
	err := b.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return fn(item)
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ipld.ErrNotFound{Cid: c}
	}
	return err
}

func (b *blockStore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if isIdentity(c) {
		return true, nil
	}
	err := b.view(c, func(*badger.Item) error { return nil })
	if ipld.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (b *blockStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if isIdentity(c) {
		return identityBlock(c)
	}
	data, err := b.data(c)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// data returns c's stored data in a new slice (see dataInto).
func (b *blockStore) data(c cid.Cid) ([]byte, error) { return b.dataInto(c, nil) }

// ReadInto returns c's data in buf's array if it fits there (for a file
// read with direct I/O: if buf is aligned too), else in a new slice. It
// keeps nothing of buf.
func (b *blockStore) ReadInto(ctx context.Context, c cid.Cid, buf []byte) ([]byte, error) {
	if isIdentity(c) {
		blk, err := identityBlock(c)
		if err != nil {
			return nil, err
		}
		return append(buf[:0], blk.RawData()...), nil
	}
	return b.dataInto(c, buf)
}

// dataInto returns c's stored data: the value itself, copied into buf, or
// its data in a pack (or file), read after the transaction into buf if it
// fits. Data found missing or corrupt makes the block missing (see
// files.go).
func (b *blockStore) dataInto(c cid.Cid, buf []byte) ([]byte, error) {
	var holes *sync.RWMutex
	if b.s.files != nil {
		// From the lookup to the end of the read: no hole is punched where
		// the key said the block is (see packs.go).
		holes = &b.s.files.packs.holes
		holes.RLock()
	}
	data, bad, version, err := b.dataLocked(c, buf)
	if holes != nil {
		holes.RUnlock()
	}
	if bad {
		b.s.dropBadFile(blockKey(c.Hash()), version)
		return nil, ipld.ErrNotFound{Cid: c}
	}
	return data, err
}

// dataLocked is dataInto under packs.holes; bad reports data found missing
// or corrupt, in the key's version.
func (b *blockStore) dataLocked(c cid.Cid, buf []byte) (data []byte, bad bool, version uint64, err error) {
	var kind byte
	var size int
	var gen uint64
	var loc packLoc
	err = b.view(c, func(item *badger.Item) error {
		var err error
		switch {
		case inPack(item):
			kind, version = metaPack, item.Version()
			size, gen, loc, err = packEntry(item)
			return err
		case inFile(item):
			kind, version = metaFile, item.Version()
			size, gen, err = marker(item)
			return err
		}
		return item.Value(func(v []byte) error {
			data = append(buf[:0], v...)
			return nil
		})
	})
	if err != nil || kind == 0 {
		return data, false, 0, err
	}
	if !b.s.enter() {
		return nil, false, 0, ErrClosed
	}
	defer b.s.leave()
	if kind == metaPack {
		data, err = b.s.files.readBlock(c.Hash(), size, gen, loc, buf, false)
	} else {
		data, err = b.s.files.read(c.Hash(), size, gen, buf)
	}
	if errors.Is(err, errBadFile) {
		return nil, true, version, nil
	}
	if err != nil {
		return nil, false, 0, fmt.Errorf("get %s: %w", c, err)
	}
	return data, false, 0, nil
}

func (b *blockStore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	if isIdentity(c) {
		dh, err := mh.Decode(c.Hash())
		if err != nil {
			return -1, err
		}
		return len(dh.Digest), nil
	}
	size := -1
	err := b.view(c, func(item *badger.Item) error {
		var err error
		size, err = valueLen(item)
		return err
	})
	if err != nil {
		return -1, err
	}
	return size, nil
}

// View calls fn with the block's data without copying it; fn must not keep
// or modify the slice.
func (b *blockStore) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	if isIdentity(c) {
		blk, err := identityBlock(c)
		if err != nil {
			return err
		}
		return fn(blk.RawData())
	}
	inline := false
	err := b.view(c, func(item *badger.Item) error {
		if inFile(item) || inPack(item) {
			return nil
		}
		inline = true
		return item.Value(fn)
	})
	if err != nil || inline {
		return err
	}
	data, err := b.data(c)
	if err != nil {
		return err
	}
	return fn(data)
}

func (b *blockStore) Put(ctx context.Context, blk blocks.Block) error {
	return b.PutMany(ctx, []blocks.Block{blk})
}

// PutMany writes the blocks not yet stored, in transactions of up to
// maxPutChunk blocks. Blocks already present are not rewritten. If the
// storage limit refuses a chunk, the chunks before it stay written.
func (b *blockStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	if !b.s.enter() {
		return ErrClosed
	}
	defer b.s.leave()
	// Drop identity blocks and duplicates within the call.
	entries := make([]putEntry, 0, len(blks))
	seen := make(map[string]struct{}, len(blks))
	for _, blk := range blks {
		c := blk.Cid()
		if isIdentity(c) {
			continue
		}
		key := blockKey(c.Hash())
		if _, dup := seen[string(key)]; dup {
			continue
		}
		seen[string(key)] = struct{}{}
		entries = append(entries, putEntry{key: key, data: blk.RawData()})
	}
	for len(entries) > 0 {
		n := min(len(entries), maxPutChunk)
		if err := b.putChunk(ctx, entries[:n]); err != nil {
			return fmt.Errorf("put %d blocks: %w", len(blks), err)
		}
		entries = entries[n:]
	}
	return nil
}

type putEntry struct {
	key, data []byte
}

// putChunk writes the entries that are not stored yet in one transaction.
// The transaction reads every key it may write, so Badger's conflict
// detection makes concurrent writers of the same block (and a GC deleting
// it) serialise: exactly one of them counts it, and a Put never returns
// having "found" a block that a concurrent deletion then removes unseen.
//
// Large blocks go to the file tier: they are written to a pack after the
// storage limit accepted the chunk and before the commit, all under
// sweepMu held for reading (see files.go).
func (b *blockStore) putChunk(ctx context.Context, entries []putEntry) error {
	var files []putEntry
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.s.sweepMu.RLock()
		if b.sess != nil {
			for _, e := range entries {
				b.sess.holdKey(e.key)
			}
		}
		err := b.putAttempt(entries, &files)
		b.s.sweepMu.RUnlock()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, badger.ErrConflict):
			// Someone wrote or deleted one of these blocks since we looked:
			// look again.
		case errors.Is(err, badger.ErrBlockedWrites):
			if !b.s.waitFlush() {
				return ErrClosed
			}
		default:
			return err
		}
	}
}

// putAttempt is one try of putChunk, run under sweepMu held for reading.
// The large blocks' data is written to the writing pack before their keys
// are set, as a key records where its data is; if the attempt fails after
// that, it gives their space back.
func (b *blockStore) putAttempt(entries []putEntry, files *[]putEntry) error {
	b.s.comp.wrote()
	txn := b.s.db.NewTransaction(true)
	defer txn.Discard()
	*files = (*files)[:0]
	var newBytes, newBlocks int64
	for _, e := range entries {
		_, err := txn.Get(e.key)
		if err == nil {
			continue // stored already
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		h := mh.Multihash(e.key[len(blockPrefix):])
		if b.s.files != nil && fileable(h, len(e.data)) {
			*files = append(*files, e)
		} else if err := txn.Set(e.key, e.data); err != nil {
			return err
		}
		newBytes += int64(len(e.data))
		newBlocks++
	}
	if newBlocks == 0 {
		return nil
	}
	if err := b.s.reserve(newBytes); err != nil {
		return err
	}
	locs, err := b.writePacked(*files)
	if err == nil {
		for i, e := range *files {
			m := packMarker(len(e.data), b.s.files.gen, locs[i])
			if err = txn.SetEntry(badger.NewEntry(e.key, m).WithMeta(metaPack)); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = b.s.commit(txn)
	}
	if err != nil {
		b.s.bytes.Add(-newBytes)
		b.unwrite(*files, locs)
		return err
	}
	b.s.blocks.Add(newBlocks)
	return nil
}

// parallelFileWrites is how many of a chunk's large blocks are written at
// once: direct writes wait on the disk (asynchronously, see aio_linux.go),
// so several in flight keep it busy while the caller's goroutines go on.
// (A/B on the 2-core build machine, native fetch of 256 MiB with the
// fetcher's 8 MiB batches: 8 at once was 7-10% faster than 4 in 3 of 3
// interleaved pairs; the disk there reads and writes at the same time
// best with several I/Os queued.)
const parallelFileWrites = 8

// writePacked writes the large blocks of a chunk to the writing pack, a few
// at once, and returns where each went (the zero packLoc for those not
// written, on error).
func (b *blockStore) writePacked(files []putEntry) ([]packLoc, error) {
	locs := make([]packLoc, len(files))
	if len(files) == 1 {
		var err error
		locs[0], err = b.s.files.writeBlock(files[0].data)
		return locs, err
	}
	var g errgroup.Group
	g.SetLimit(parallelFileWrites)
	for i, e := range files {
		g.Go(func() error {
			var err error
			locs[i], err = b.s.files.writeBlock(e.data)
			return err
		})
	}
	return locs, g.Wait()
}

// unwrite gives back the space of blocks written by an attempt whose keys
// were not committed: nothing points to them, so nothing reads them.
func (b *blockStore) unwrite(files []putEntry, locs []packLoc) {
	for i, loc := range locs {
		if loc.id == 0 {
			continue
		}
		p, err := b.s.files.acquire(loc.id)
		if err != nil {
			continue
		}
		b.s.files.punch(p, loc.off, len(files[i].data))
		b.s.files.release(p)
	}
}

// DeleteBlock removes a block. Deleting a missing block is not an error.
func (b *blockStore) DeleteBlock(ctx context.Context, c cid.Cid) error {
	if isIdentity(c) {
		return nil
	}
	if !b.s.enter() {
		return ErrClosed
	}
	defer b.s.leave()
	key := blockKey(c.Hash())
	for {
		err := b.deleteAttempt(key)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, badger.ErrConflict):
		case errors.Is(err, badger.ErrBlockedWrites):
			if !b.s.waitFlush() {
				return ErrClosed
			}
		default:
			return fmt.Errorf("delete block %s: %w", c, err)
		}
	}
}

// deleteAttempt deletes key and then gives its data's space back (see
// Store.unlinkFiles).
func (b *blockStore) deleteAttempt(key []byte) (err error) {
	var gone deleted
	defer func() { // after sweepMu's release
		if err == nil {
			err = b.s.punchRegions(gone)
		}
	}()
	b.s.sweepMu.Lock()
	defer b.s.sweepMu.Unlock()
	b.s.comp.wrote()
	txn := b.s.db.NewTransaction(true)
	defer txn.Discard()
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := gone.add(item); err != nil {
		return err
	}
	if err := txn.Delete(key); err != nil {
		return err
	}
	if err := b.s.commit(txn); err != nil {
		return err
	}
	b.s.blocks.Add(-1)
	b.s.bytes.Add(-gone.bytes)
	return b.s.unlinkFiles(gone)
}

// AllKeysChan lists every stored block as a CIDv1 with the raw codec, the
// blocks being stored by multihash. The listing stops when ctx is done or
// the store closes.
func (b *blockStore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	if !b.s.enter() {
		return nil, ErrClosed
	}
	out := make(chan cid.Cid, 64)
	go func() {
		defer b.s.leave()
		defer close(out)
		txn := b.s.db.NewTransaction(false)
		defer txn.Discard()
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = blockPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			h, err := mh.Cast(it.Item().KeyCopy(nil)[len(blockPrefix):])
			if err != nil {
				continue // not a block key
			}
			select {
			case out <- cid.NewCidV1(cid.Raw, h):
			case <-ctx.Done():
				return
			case <-b.s.ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
