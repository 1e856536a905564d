package store

import (
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname, see below

	"github.com/dgraph-io/badger/v4"
)

// Badger runs its compaction workers on a 50 ms ticker for as long as the
// database is open, written to or not: two workers wake 40 times a second,
// which was most of an idle daemon's CPU (0.90% of a core alone, 0.28%
// without them). The store pauses them once nothing was written for
// compactionIdle and the tree needs no compaction, and resumes them before
// the next write, or as soon as the tree needs compacting again.
//
// Badger has no public switch for this. It has the two methods its own
// Flatten, DropAll and DropPrefix use to stop and restart the workers
// around their work; they are reached here by go:linkname. Should Badger
// rename them, the build fails at link time, loudly, rather than the
// store behaving differently. TestCompactionsPause checks the workers stop
// and come back.

//go:linkname badgerStopCompactions github.com/dgraph-io/badger/v4.(*DB).stopCompactions
func badgerStopCompactions(db *badger.DB)

//go:linkname badgerStartCompactions github.com/dgraph-io/badger/v4.(*DB).startCompactions
func badgerStartCompactions(db *badger.DB)

const (
	// compactionIdle is how long after the last write the workers pause.
	compactionIdle = 10 * time.Second
	// compactionCheck is how often the store looks whether to pause or
	// resume them.
	compactionCheck = 5 * time.Second
)

// compactions pauses and resumes Badger's compaction workers. Every write
// to Badger calls wrote first; the owner's loop calls check every
// compactionCheck; Badger calls that stop and restart the workers
// themselves (DropPrefix) run inside exclusive.
type compactions struct {
	db   *badger.DB
	idle time.Duration
	now  func() time.Time

	last   atomic.Int64 // UnixNano of the last write
	paused atomic.Bool  // read without mu on the write path
	mu     sync.Mutex   // orders stop and start; held while paused changes
	pauses atomic.Int64 // times paused, for tests and metrics
}

func newCompactions(db *badger.DB, idle time.Duration) *compactions {
	c := &compactions{db: db, idle: idle, now: time.Now}
	c.last.Store(c.now().UnixNano())
	return c
}

// wrote records a write about to happen and resumes the workers if they
// are paused, so that the memtable flushes the write leads to never wait
// on a stalled level 0.
func (c *compactions) wrote() {
	c.last.Store(c.now().UnixNano())
	if c.paused.Load() {
		c.resume()
	}
}

func (c *compactions) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused.Load() {
		badgerStartCompactions(c.db)
		c.paused.Store(false)
	}
}

// check pauses the workers when the store has been idle and the tree needs
// no compaction, and resumes them when it does (a write that raced with
// the pause, or a flush after it).
func (c *compactions) check() {
	needs := needsCompaction(c.db)
	if c.paused.Load() {
		if needs {
			c.resume()
		}
		return
	}
	if needs || c.now().Sub(time.Unix(0, c.last.Load())) < c.idle {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused.Load() {
		badgerStopCompactions(c.db)
		c.paused.Store(true)
		c.pauses.Add(1)
	}
}

// exclusive runs fn, a Badger call that stops and restarts the workers
// itself, with the workers running and no pause or resume meanwhile.
func (c *compactions) exclusive(fn func() error) error {
	c.last.Store(c.now().UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused.Load() {
		badgerStartCompactions(c.db)
		c.paused.Store(false)
	}
	return fn()
}

// needsCompaction reports whether a compaction worker would find work: a
// level whose score reaches 1 (Levels reports the scores of exactly the
// levels Badger's workers would pick; level 0's is its table count over
// NumLevelZeroTables).
func needsCompaction(db *badger.DB) bool {
	for _, l := range db.Levels() {
		if l.Score >= 1 {
			return true
		}
	}
	return false
}

// runCompactions is the owner loop of the pauser; it ends with ctx.
func (s *Store) runCompactions(done <-chan struct{}) {
	t := time.NewTicker(compactionCheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.comp.check()
		}
	}
}
