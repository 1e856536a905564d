package feed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/boxo/ipns"
)

// kickLocked starts st's worker if st has work and none is running. The
// worker is the only caller of Pinner and of the store for st, so pins,
// unpins and writes for one feed happen in the order they were decided.
func (m *Manager) kickLocked(st *feedState) {
	if st.running || m.closed {
		return
	}
	if !st.dirtyHeld && !st.dirtyPinned && len(st.unpins) == 0 && len(st.waiters) == 0 && st.want == nil {
		m.forgetLocked(st)
		return
	}
	st.running = true
	m.wg.Add(1)
	go m.run(st)
}

// forgetLocked drops st once nothing refers to it any more.
func (m *Manager) forgetLocked(st *feedState) {
	key := nameKey(st.name)
	if !st.tracked() && !st.running && m.feeds[key] == st {
		delete(m.feeds, key)
	}
}

// job is one round of a worker's work, taken under the lock.
type job struct {
	held, pinned []byte // records to persist (pinned nil with savePinned: delete)
	savePinned   bool
	unpins       []Record
	waiters      []chan struct{}
	fetch        *Record
	gen          uint64
	ctx          context.Context
	cancel       context.CancelFunc
}

func (m *Manager) run(st *feedState) {
	defer m.wg.Done()
	for {
		j, ok := m.nextJob(st)
		if !ok {
			return
		}
		m.runJob(st, j)
	}
}

// nextJob takes st's pending work, or marks the worker stopped and returns
// false when there is none (or the Manager is closing).
func (m *Manager) nextJob(st *feedState) (job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		st.running = false
		for _, w := range st.waiters {
			close(w)
		}
		st.waiters = nil
		return job{}, false
	}
	var j job
	if st.dirtyHeld && st.held != nil && st.tracked() {
		j.held = st.held.Raw
	}
	if st.dirtyPinned {
		j.savePinned = true
		if st.pinned != nil {
			j.pinned = st.pinned.Raw
		}
	}
	st.dirtyHeld, st.dirtyPinned = false, false
	j.unpins, st.unpins = st.unpins, nil
	j.waiters, st.waiters = st.waiters, nil
	if st.want != nil && st.pinning() {
		j.fetch, j.gen = st.want, st.gen
		j.ctx, j.cancel = context.WithTimeout(m.ctx, m.cfg.FetchTimeout)
		st.fetching, st.cancel = st.want, j.cancel
	}
	st.want = nil
	if j.held == nil && !j.savePinned && len(j.unpins) == 0 && len(j.waiters) == 0 && j.fetch == nil {
		st.running = false
		m.forgetLocked(st)
		return job{}, false
	}
	return j, true
}

func (m *Manager) runJob(st *feedState, j job) {
	name := st.name
	if j.held != nil {
		m.put(recordKey(name), j.held)
	}
	if j.savePinned {
		if j.pinned != nil {
			m.put(pinnedKey(name), j.pinned)
		} else {
			m.del(pinnedKey(name))
		}
	}
	for _, u := range j.unpins {
		m.unpin(name, u)
	}
	for _, w := range j.waiters {
		close(w)
	}
	if j.fetch == nil {
		return
	}
	err := m.pin(j.ctx, name, *j.fetch)
	j.cancel()
	m.settle(st, j, err)
}

// settle records the outcome of fetching j.fetch.
func (m *Manager) settle(st *feedState, j job, err error) {
	rec := j.fetch
	m.mu.Lock()
	defer m.mu.Unlock()
	st.fetching, st.cancel = nil, nil
	switch {
	case st.gen != j.gen || !st.pinning():
		// The follow changed while fetching: what was pinned is not wanted.
		if err == nil {
			st.unpins = append(st.unpins, *rec)
		}
	case err == nil:
		old := st.pinned
		if old != nil && rec.Seq <= old.Seq {
			// Cannot happen: only records newer than the held one are
			// wanted, and the held one is never behind the pinned one.
			m.log.Error("fetched version not newer than pinned one", "feed", st.name.String(), "seq", rec.Seq, "pinned", old.Seq)
			return
		}
		st.pinned, st.dirtyPinned = rec, true
		st.failures, st.pinErr = 0, nil
		if old != nil && !st.follow.KeepHistory && !old.CID().Equals(rec.CID()) {
			st.unpins = append(st.unpins, *old)
		}
		m.c.pinned.Add(1)
	case m.closed:
	case st.want != nil:
		// Abandoned for a newer version.
		m.c.superseded.Add(1)
	default:
		st.failures++
		st.pinErr = err
		st.retry = rec
		st.nextRetry = m.clock.Now().Add(m.backoff(st.failures))
		m.c.pinFailed.Add(1)
		m.log.Info("fetching feed version failed", "feed", st.name.String(), "seq", rec.Seq, "cid", rec.CID().String(), "err", err)
	}
}

func (m *Manager) backoff(failures int) time.Duration {
	d := m.cfg.RetryMin
	for i := 1; i < failures && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.RetryMax)
}

func (m *Manager) pin(ctx context.Context, name ipns.Name, rec Record) error {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.sem }()
	if err := m.cfg.Pinner.Pin(ctx, name, rec.CID()); err != nil {
		return fmt.Errorf("pin seq %d (%s): %w", rec.Seq, rec.CID(), err)
	}
	return nil
}

func (m *Manager) unpin(name ipns.Name, rec Record) {
	// Unpinning is quick and local; it runs even while closing so that a
	// replaced version is not left pinned.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), time.Minute)
	defer cancel()
	if err := m.cfg.Pinner.Unpin(ctx, name, rec.CID()); err != nil {
		m.c.unpinFailed.Add(1)
		m.log.Warn("unpinning replaced feed version failed", "feed", name.String(), "seq", rec.Seq, "cid", rec.CID().String(), "err", err)
		return
	}
	m.c.unpinned.Add(1)
}

func (m *Manager) put(key string, value []byte) {
	if m.cfg.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), time.Minute)
	defer cancel()
	if err := m.cfg.Store.Put(ctx, key, value); err != nil {
		m.log.Warn("persisting feed state failed", "key", key, "err", err)
	}
}

func (m *Manager) del(key string) {
	if m.cfg.Store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), time.Minute)
	defer cancel()
	if err := m.cfg.Store.Delete(ctx, key); err != nil && !errors.Is(err, context.Canceled) {
		m.log.Warn("deleting feed state failed", "key", key, "err", err)
	}
}
