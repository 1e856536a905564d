package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	mh "github.com/multiformats/go-multihash"
)

// Pack files: where the file tier puts the data of large blocks (see
// files.go for why and for the rules they follow).
//
// A pack is a file blocks/packs/<number>.pack that blocks are appended to,
// each at an offset aligned to directAlign and padded to a multiple of it,
// so that every block is read and written with one direct I/O. Each store
// session writes packs of its own, numbered after every pack already there,
// one at a time: the writing pack takes blocks until it holds packMaxBytes,
// and is given disk space packGrowBytes at a time (fallocate), so that a
// direct write never extends the file (which ext4 does synchronously).
// Earlier sessions' packs are only ever read and punched.
//
// Deleting a block punches a hole over its bytes (FALLOC_FL_PUNCH_HOLE):
// its disk space comes back at once. A pack that holds no data any more
// (no allocated blocks) and is not being written is removed. Readers of
// pack data hold packSet.holes for reading from looking up the block's
// key to the end of the read; deleters punch holding it for writing after
// the key's deletion is committed, so no read ever sees a hole where a
// block was.
//
// A crash can leave space in a pack that no key points to: a block written
// but whose key was not committed, and the space reserved ahead of the
// writes. GC gives it back (sweepOrphanPacks): earlier sessions' packs are
// never written again, so a region no key points to stays unreferenced.

const (
	// metaPack is the Badger user meta of a block key whose data is in a
	// pack; the value is the block's length, the generation that wrote it,
	// the pack's number and the offset in it, as uvarints.
	metaPack byte = 2

	packsDirName = "packs"
	packExt      = ".pack"
	// maxOpenPacks bounds the pack files kept open between reads.
	maxOpenPacks = 64
)

const (
	// packMaxBytes is the size from which the writing pack takes no more
	// blocks.
	packMaxBytes = 256 << 20
	// packGrowBytes is the disk space the writing pack is given at a time.
	packGrowBytes = 16 << 20
)

// packLoc is where a block's data is: pack number and offset.
type packLoc struct {
	id  uint64
	off int64
}

// packRegion is a stored block's place and length, for punching.
type packRegion struct {
	packLoc
	size int
}

// span is the length a block of n bytes takes in a pack.
func span(n int) int64 { return int64(n+directAlign-1) &^ (directAlign - 1) }

func packMarker(size int, gen uint64, loc packLoc) []byte {
	b := binary.AppendUvarint(nil, uint64(size))
	b = binary.AppendUvarint(b, gen)
	b = binary.AppendUvarint(b, loc.id)
	return binary.AppendUvarint(b, uint64(loc.off))
}

func inPack(item *badger.Item) bool { return item.UserMeta() == metaPack }

// packEntry returns what a pack block's key records.
func packEntry(item *badger.Item) (size int, gen uint64, loc packLoc, err error) {
	err = item.Value(func(v []byte) error {
		var f [4]uint64
		for i := range f {
			n, k := binary.Uvarint(v)
			if k <= 0 {
				return fmt.Errorf("bad pack marker for block key %x", item.Key())
			}
			f[i], v = n, v[k:]
		}
		if len(v) != 0 || f[0] > math.MaxInt32 || f[3] > math.MaxInt64 || f[3]%directAlign != 0 {
			return fmt.Errorf("bad pack marker for block key %x", item.Key())
		}
		size, gen, loc = int(f[0]), f[1], packLoc{id: f[2], off: int64(f[3])}
		return nil
	})
	return size, gen, loc, err
}

// pack is an open pack file.
type pack struct {
	id uint64
	fd *os.File
	// direct is whether fd is in direct I/O; it goes off for good when the
	// filesystem refuses a direct read or write (dropDirect).
	direct atomic.Bool
	refs   int // users of fd besides the cache (under packSet.mu)
	// The writing pack's next free offset and allocated size (under
	// packSet.mu).
	end, size int64
}

// packSet is the file tier's packs.
type packSet struct {
	dir string // Config.Path/blocks/packs
	// first is this session's first pack number: packs below it are
	// earlier sessions', never written again.
	first uint64
	// holes is held for reading by readers of pack data and for writing
	// while holes are punched (see above).
	holes   sync.RWMutex
	noPunch atomic.Bool // the filesystem cannot punch holes
	// swept is set once GC has trimmed the earlier sessions' packs: this
	// session adds nothing to them for a later GC to give back.
	swept atomic.Bool

	mu      sync.Mutex
	noAlloc bool  // the filesystem cannot allocate ahead (fallocate)
	max     int64 // packMaxBytes, unless a test set another
	next    uint64
	cur     *pack // the writing pack, nil until the first write
	open    map[uint64]*pack
}

func (f *fileTier) packPath(id uint64) string {
	return filepath.Join(f.packs.dir, fmt.Sprintf("%010d%s", id, packExt))
}

// packIDs lists the packs in the directory by number.
func (f *fileTier) packIDs() ([]uint64, error) {
	ents, err := os.ReadDir(f.packs.dir)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), packExt)
		if !ok {
			continue
		}
		if id, err := strconv.ParseUint(name, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// openPacks prepares the packs directory; this session's packs are
// numbered after the last one there.
func (f *fileTier) openPacks() error {
	ps := &f.packs
	ps.dir = filepath.Join(f.dir, packsDirName)
	ps.open = make(map[uint64]*pack)
	ps.max = packMaxBytes
	if err := os.MkdirAll(ps.dir, 0o700); err != nil {
		return err
	}
	ids, err := f.packIDs()
	if err != nil {
		return fmt.Errorf("list pack files: %w", err)
	}
	ps.first = 1
	if len(ids) > 0 {
		ps.first = ids[len(ids)-1] + 1
	}
	ps.next = ps.first
	return nil
}

// openPackFile opens pack id, for direct I/O if the tier uses it,
// creating it if create.
func (f *fileTier) openPackFile(id uint64, create bool) (*pack, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	name := f.packPath(id)
	if f.direct.Load() {
		fd, err := os.OpenFile(name, flags|oDirect, 0o600)
		if err == nil {
			p := &pack{id: id, fd: fd}
			p.direct.Store(true)
			return p, nil
		}
		if !refused(err) {
			return nil, err
		}
		f.direct.Store(false) // this filesystem has no direct I/O
	}
	fd, err := os.OpenFile(name, flags, 0o600)
	if err != nil {
		return nil, err
	}
	return &pack{id: id, fd: fd}, nil
}

// acquire returns pack id open, counted as in use until release.
func (f *fileTier) acquire(id uint64) (*pack, error) {
	ps := &f.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.open[id]; p != nil {
		p.refs++
		return p, nil
	}
	if id >= ps.next {
		return nil, fs.ErrNotExist // not written yet: a marker from elsewhere
	}
	p, err := f.openPackFile(id, false)
	if err != nil {
		return nil, err
	}
	if len(ps.open) >= maxOpenPacks {
		for oid, o := range ps.open {
			if o.refs == 0 && o != ps.cur {
				o.fd.Close()
				delete(ps.open, oid)
			}
		}
	}
	ps.open[id] = p
	p.refs++
	return p, nil
}

func (f *fileTier) release(p *pack) {
	f.packs.mu.Lock()
	p.refs--
	f.packs.mu.Unlock()
}

// reserve takes the space for an n-byte block in the writing pack,
// starting a new pack when it is full, and returns the pack (acquired:
// release it once written) and the offset.
func (f *fileTier) reserve(n int) (*pack, int64, error) {
	ps := &f.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	sp := span(n)
	if ps.cur == nil || (ps.cur.end > 0 && ps.cur.end+sp > ps.max) {
		p, err := f.openPackFile(ps.next, true)
		if err != nil {
			return nil, 0, fmt.Errorf("create pack file: %w", err)
		}
		if old := ps.cur; old != nil {
			// Its writes in flight are all below end.
			_ = old.fd.Truncate(old.end)
		}
		ps.next++
		ps.cur = p
		ps.open[p.id] = p
	}
	p := ps.cur
	off := p.end
	if off+sp > p.size && !ps.noAlloc {
		grow := max(int64(packGrowBytes), off+sp-p.size)
		switch err := allocateRange(p.fd, p.size, grow); {
		case err == nil:
			p.size += grow
		case errors.Is(err, errors.ErrUnsupported):
			ps.noAlloc = true // writes extend the file instead
		default:
			return nil, 0, fmt.Errorf("reserve space in pack %d: %w", p.id, err)
		}
	}
	p.end += sp
	p.refs++
	return p, off, nil
}

// writeBlock stores data in the writing pack and returns where.
func (f *fileTier) writeBlock(data []byte) (packLoc, error) {
	p, off, err := f.reserve(len(data))
	if err != nil {
		return packLoc{}, err
	}
	defer f.release(p)
	if err := f.writeAt(p, data, off); err != nil {
		f.punch(p, off, len(data)) // nothing points to it
		return packLoc{}, fmt.Errorf("write block to pack %d: %w", p.id, err)
	}
	return packLoc{id: p.id, off: off}, nil
}

// writeAt writes data at off of p: directly if p is in direct I/O, and
// through the page cache if it is not or the filesystem refuses.
func (f *fileTier) writeAt(p *pack, data []byte, off int64) error {
	if p.direct.Load() {
		err := f.writeDirect(p, data, off)
		if !refused(err) {
			return err
		}
		if err := f.dropDirect(p); err != nil {
			return err
		}
	}
	_, err := p.fd.WriteAt(data, off)
	return err
}

// dropDirect turns direct I/O off for p and for the packs opened after it:
// the filesystem took O_DIRECT at open but refused a direct read or write
// (EINVAL), as one on a disk whose logical blocks are larger than
// directAlign does. The I/O is then done again through the page cache.
func (f *fileTier) dropDirect(p *pack) error {
	if f.direct.Swap(false) {
		f.log.Warn("the filesystem refuses direct I/O on block packs: going on through the page cache",
			"pack", p.id, "component", "store")
	}
	if !p.direct.Load() {
		return nil
	}
	if err := setDirect(p.fd, false); err != nil {
		return fmt.Errorf("turn direct I/O off on pack %d: %w", p.id, err)
	}
	p.direct.Store(false)
	return nil
}

// writeDirect is writeAt for a pack in direct I/O: whole aligned pages, the
// last one padded with zeros.
func (f *fileTier) writeDirect(p *pack, data []byte, off int64) error {
	head := len(data) &^ (directAlign - 1)
	if !aligned(data) {
		head = 0 // copy it all
	}
	if head > 0 {
		if err := f.directWrite(p, data[:head], off); err != nil {
			return err
		}
	}
	if head == len(data) {
		return nil
	}
	rest := data[head:]
	buf := alignedBuf(int(span(len(rest))))
	copy(buf, rest)
	return f.directWrite(p, buf[:cap(buf)], off+int64(head))
}

// directWrite writes the aligned buf at off of p, opened for direct I/O:
// asynchronously where the tier can.
func (f *fileTier) directWrite(p *pack, buf []byte, off int64) error {
	if f.refuseDirect.Load() {
		return syscall.EINVAL
	}
	if a := f.asyncIO(); a != nil {
		_, err := a.pwrite(p.fd, buf, off)
		if !errors.Is(err, errNoAIO) {
			return err
		}
	}
	_, err := p.fd.WriteAt(buf, off)
	return err
}

// readBlock returns the size bytes at loc, written by generation gen and
// checked against h unless gen is trusted (and check is off), in buf's
// array if it fits (for direct I/O: and is aligned). It returns errBadFile
// when the pack is missing or too short, or the data does not hash to h.
// The caller holds packs.holes for reading.
func (f *fileTier) readBlock(h mh.Multihash, size int, gen uint64, loc packLoc, buf []byte, check bool) ([]byte, error) {
	p, err := f.acquire(loc.id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errBadFile
	}
	if err != nil {
		return nil, fmt.Errorf("open pack %d: %w", loc.id, err)
	}
	defer f.release(p)
	var data []byte
	if p.direct.Load() {
		sp := int(span(size))
		data = buf[:0]
		if cap(buf) < sp || !aligned(buf[:1]) {
			data = alignedBuf(size)
		}
		into := data[:sp]
		data, err = f.directRead(p, into, loc.off, size)
		if refused(err) {
			if err := f.dropDirect(p); err != nil {
				return nil, err
			}
			data = into[:size]
			_, err = p.fd.ReadAt(data, loc.off)
		}
	} else {
		data = buf[:0]
		if cap(data) < size {
			data = make([]byte, size)
		}
		data = data[:size]
		_, err = p.fd.ReadAt(data, loc.off)
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, errBadFile
	case err != nil:
		return nil, fmt.Errorf("read pack %d: %w", loc.id, err)
	}
	if f.trusted(gen) && !check {
		return data, nil
	}
	if err := checkHash(h, data); err != nil {
		return nil, err
	}
	return data, nil
}

// directRead reads whole pages into buf from off of p, opened for direct
// I/O, and returns the first size bytes; a pack ending before size gives
// io.ErrUnexpectedEOF.
func (f *fileTier) directRead(p *pack, buf []byte, off int64, size int) ([]byte, error) {
	if f.refuseDirect.Load() {
		return nil, syscall.EINVAL
	}
	n := 0
	for n < size {
		var k int
		var err error
		if a := f.asyncIO(); a != nil {
			k, err = a.pread(p.fd, buf[n:], off+int64(n))
			if errors.Is(err, errNoAIO) {
				k, err = p.fd.ReadAt(buf[n:], off+int64(n))
			}
		} else {
			k, err = p.fd.ReadAt(buf[n:], off+int64(n))
		}
		n += k
		if err == io.EOF || (err == nil && k == 0) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if n < size {
		return nil, io.ErrUnexpectedEOF
	}
	return buf[:size], nil
}

// punch gives back the space of an n-byte block at off of p, which no
// reader can be reading (see above).
func (f *fileTier) punch(p *pack, off int64, n int) {
	if f.packs.noPunch.Load() {
		return
	}
	if err := punchHole(p.fd, off, span(n)); errors.Is(err, errors.ErrUnsupported) {
		f.packs.noPunch.Store(true) // its space comes back with the pack
	}
}

// removeRegions punches the regions of deleted blocks, whose keys'
// deletion is committed, and removes the packs they leave empty.
func (f *fileTier) removeRegions(regs []packRegion) error {
	if len(regs) == 0 {
		return nil
	}
	ps := &f.packs
	ps.holes.Lock()
	defer ps.holes.Unlock()
	byPack := make(map[uint64][]packRegion)
	for _, r := range regs {
		byPack[r.id] = append(byPack[r.id], r)
	}
	for id, rs := range byPack {
		p, err := f.acquire(id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pack %d: %w", id, err)
		}
		for _, r := range rs {
			f.punch(p, r.off, r.size)
		}
		f.release(p)
		if err := f.removeIfEmpty(id); err != nil {
			return err
		}
	}
	return nil
}

// removeIfEmpty removes pack id if it holds no data, is not being written
// and nobody is using it. The caller holds packs.holes for writing.
func (f *fileTier) removeIfEmpty(id uint64) error {
	ps := &f.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.open[id]
	if p == nil || p == ps.cur || p.refs > 0 {
		return nil
	}
	info, err := p.fd.Stat()
	if err != nil {
		return err
	}
	if allocatedSize(info) > 0 {
		return nil
	}
	p.fd.Close()
	delete(ps.open, id)
	if err := os.Remove(f.packPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove empty pack: %w", err)
	}
	return nil
}

// closePacks trims the writing pack to what it holds and closes the open
// packs. The tier must not be used after.
func (f *fileTier) closePacks() {
	ps := &f.packs
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.cur != nil {
		_ = ps.cur.fd.Truncate(ps.cur.end)
	}
	for id, p := range ps.open {
		p.fd.Close()
		delete(ps.open, id)
	}
	ps.cur = nil
}

// sweepOrphanPacks gives back the space in earlier sessions' packs that no
// key points to (left by a crash: blocks whose keys were never committed,
// space reserved ahead of writes), and removes those packs no key points
// into. Once per session: deletions punch their own holes, so nothing
// new is left to give back there.
func (s *Store) sweepOrphanPacks(stop func() error) error {
	f := s.files
	if f.packs.swept.Load() {
		return nil
	}
	ids, err := f.packIDs()
	if err != nil {
		return err
	}
	var old []uint64
	for _, id := range ids {
		if id < f.packs.first {
			old = append(old, id)
		}
	}
	if len(old) == 0 {
		return nil
	}
	// No key into an earlier session's pack is ever written again, so a
	// region this listing does not find stays unreferenced.
	live := make(map[uint64][]packRegion)
	txn := s.db.NewTransaction(false)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = blockPrefix
	it := txn.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if !inPack(item) {
			continue
		}
		size, _, loc, err := packEntry(item)
		if err != nil {
			continue // read as a bad block when asked for
		}
		if loc.id < f.packs.first {
			live[loc.id] = append(live[loc.id], packRegion{loc, size})
		}
	}
	it.Close()
	txn.Discard()
	for _, id := range old {
		if err := stop(); err != nil {
			return err
		}
		if err := f.trimPack(id, live[id]); err != nil {
			return fmt.Errorf("pack %d: %w", id, err)
		}
	}
	f.packs.swept.Store(true)
	return nil
}

// trimPack punches every part of an earlier session's pack id outside
// live, cuts it after the last live region, and removes it if nothing is
// left.
func (f *fileTier) trimPack(id uint64, live []packRegion) error {
	ps := &f.packs
	ps.holes.Lock()
	defer ps.holes.Unlock()
	p, err := f.acquire(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	slices.SortFunc(live, func(a, b packRegion) int { return int(a.off - b.off) })
	var at int64
	for _, r := range live {
		if r.off > at && !ps.noPunch.Load() {
			if err := punchHole(p.fd, at, r.off-at); errors.Is(err, errors.ErrUnsupported) {
				ps.noPunch.Store(true)
			}
		}
		at = max(at, r.off+span(r.size))
	}
	err = p.fd.Truncate(at)
	f.release(p)
	if err != nil {
		return err
	}
	return f.removeIfEmpty(id)
}
