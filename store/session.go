package store

import (
	"sync"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/go-cid"
)

// A Session protects the blocks an add or a fetch is working on from GC
// until it is closed. Every block put, read or looked up (present or not)
// through the Session's Blockstore, and every CID passed to Hold, is a GC
// root while the Session is open; a block the Session saw present stays
// present until Close. Pin what should outlive the Session before closing
// it.
//
// A Session costs about 100 bytes of memory per distinct block it touched.
// Its methods are safe for concurrent use.
type Session struct {
	s  *Store
	bs *blockStore

	mu     sync.Mutex
	holds  map[string]struct{} // block keys
	closed bool
}

// NewSession opens a Session. Close it when the add or fetch is done.
func (s *Store) NewSession() *Session {
	ss := &Session{s: s, holds: make(map[string]struct{})}
	ss.bs = &blockStore{s: s, sess: ss}
	s.sessMu.Lock()
	s.sessions[ss] = struct{}{}
	if s.gc != nil {
		s.gc.sessions = append(s.gc.sessions, ss)
	}
	s.sessMu.Unlock()
	return ss
}

// Blockstore returns a blockstore whose every call holds the CIDs it is
// given. Build the add's DAG service, or the fetch's block service, on it.
func (ss *Session) Blockstore() blockstore.Blockstore { return ss.bs }

// Hold makes the given CIDs GC roots until the Session closes. It does not
// check that the blocks are present: a block that is missing when Hold
// returns stays protected once it is written. To learn whether a held block
// is present, ask the Session's Blockstore.
func (ss *Session) Hold(cids ...cid.Cid) {
	ss.s.sweepMu.RLock()
	defer ss.s.sweepMu.RUnlock()
	for _, c := range cids {
		if !isIdentity(c) {
			ss.holdKey(blockKey(c.Hash()))
		}
	}
}

// Close ends the Session; its blocks are ordinary garbage from now on unless
// pinned. Close is idempotent.
func (ss *Session) Close() {
	ss.s.sessMu.Lock()
	delete(ss.s.sessions, ss)
	ss.s.sessMu.Unlock()
	ss.mu.Lock()
	ss.closed = true
	ss.mu.Unlock()
	// The holds stay: a GC that was running while this Session was open
	// still honours them until it finishes (see gc.go), and then drops its
	// reference to the Session.
}

func (ss *Session) holdKey(key []byte) {
	ss.mu.Lock()
	if !ss.closed {
		ss.holds[string(key)] = struct{}{}
	}
	ss.mu.Unlock()
}

func (ss *Session) isHeld(key []byte) bool {
	ss.mu.Lock()
	_, ok := ss.holds[string(key)]
	ss.mu.Unlock()
	return ok
}
