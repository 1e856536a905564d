package feed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// Publish points the feed of sk at value (an /ipfs/ path; path.FromCid
// makes one from a CID). The sequence number is one above both the record
// held for the feed and the last one Publish used for it (persisted before
// anything is sent); the record is valid for Config.Validity. It is applied
// locally, sent on the feed's topic and handed to the feed's DHT putter.
//
// Publish returns once the record is signed, stored and handed to gossip:
// the DHT put runs in the background (see putDHT), since the DHT may take
// long or fail while the node is cut off, and the record already answers
// catch-ups and reaches topic peers. FeedInfo.DHT and the counters say how
// the put went.
//
// A non-zero Record with a non-nil error means the record was made and is
// held (and answers catch-ups), but saving the feed index, joining or
// sending on the topic failed; the error says which.
func (m *Manager) Publish(ctx context.Context, sk crypto.PrivKey, value path.Path) (Record, error) {
	name, err := NameFromKey(sk.GetPublic())
	if err != nil {
		return Record{}, err
	}
	m.pubMu.Lock()
	defer m.pubMu.Unlock()

	used, _, err := m.loadSeq(ctx, name)
	if err != nil {
		return Record{}, fmt.Errorf("feed: publish %s: %w", name, err)
	}
	seq := used
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Record{}, ErrClosed
	}
	st := m.feeds[nameKey(name)]
	if st != nil && st.held != nil {
		seq = max(seq, st.held.Seq)
	}
	m.mu.Unlock()
	if seq >= math.MaxInt64 {
		return Record{}, fmt.Errorf("feed: publish %s: sequence numbers exhausted", name)
	}
	seq++

	now := m.clock.Now()
	data, err := NewRecord(sk, value, seq, m.cfg.Validity, now)
	if err != nil {
		return Record{}, fmt.Errorf("feed: publish %s: %w", name, err)
	}
	rec, err := validate(name, data, now, m.cfg.MaxRecordSize, true)
	if err != nil {
		return Record{}, fmt.Errorf("feed: publish %s: own record invalid: %w", name, err)
	}
	if m.cfg.Store != nil {
		if err := m.cfg.Store.Put(ctx, seqKey(name), []byte(strconv.FormatUint(seq, 10))); err != nil {
			return Record{}, fmt.Errorf("feed: publish %s: save sequence: %w", name, err)
		}
	}

	m.mu.Lock()
	st = m.feeds[nameKey(name)]
	if st == nil {
		st = &feedState{name: name}
		m.feeds[nameKey(name)] = st
	}
	newly := !st.owned
	wasTracked := st.tracked()
	st.owned = true
	m.mu.Unlock()
	if d := m.apply(rec); d.Err != nil {
		// A newer record of our own key arrived from elsewhere meanwhile.
		return Record{}, fmt.Errorf("feed: publish %s: %w", name, d.Err)
	}

	var errs []error
	if newly {
		if err := m.saveIndex(ctx); err != nil {
			errs = append(errs, err)
		}
		if !wasTracked {
			if err := m.join(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if m.cfg.Topics != nil {
		// On weft's topic, and on the IPNS one for Kubo's followers.
		for _, topic := range []string{Topic(name), IPNSTopic(name)} {
			if err := m.cfg.Topics.Publish(ctx, topic, data); err != nil {
				errs = append(errs, fmt.Errorf("feed: publish %s seq %d on topic %s: %w", name, seq, topic, err))
			}
		}
	}
	m.putDHT(st, seq, data, rec.EOL)
	return rec, errors.Join(errs...)
}

// dhtState is the DHT side of a feed this node publishes. Guarded by
// Manager.mu.
type dhtState struct {
	next     []byte // newest record still to put (nil: none queued)
	nextSeq  uint64
	running  bool   // a putter goroutine owns next
	retry    []byte // record whose put failed, put again by Tick when due
	retrySeq uint64
	retryEOL time.Time // an expired record is not retried
	nextEOL  time.Time
	failures int // consecutive failures, for the backoff
	retryAt  time.Time
	last     DHTPut // how the last attempt went
	okSeq    uint64 // newest sequence number the DHT took
	okAt     time.Time
}

// DHTPut is the outcome of a feed's last DHT put.
type DHTPut struct {
	Seq uint64    // the record's sequence number (0: no put tried yet)
	At  time.Time // when the attempt ended
	Err error     // nil: the DHT took it
}

// putDHT queues data, the record of sequence seq, for the DHT and starts the
// feed's putter unless it runs already. Only the newest record is kept: a
// record queued while an older one is being put replaces any not yet
// started, and a failed put is retried (Tick, with backoff from RetryMin)
// until it succeeds or a newer record supersedes it.
func (m *Manager) putDHT(st *feedState, seq uint64, data []byte, eol time.Time) {
	if m.cfg.Router == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq <= st.dht.nextSeq || seq <= st.dht.okSeq {
		return
	}
	st.dht.next, st.dht.nextSeq, st.dht.nextEOL = data, seq, eol
	st.dht.retry, st.dht.failures = nil, 0
	m.startPutterLocked(st)
}

func (m *Manager) startPutterLocked(st *feedState) {
	if st.dht.running || m.closed {
		return
	}
	st.dht.running = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.putter(st)
	}()
}

// putter puts st's queued records into the DHT, newest first, each bounded
// by Config.DHTPutTimeout, until none is queued or the Manager closes.
func (m *Manager) putter(st *feedState) {
	for {
		m.mu.Lock()
		data, seq, eol := st.dht.next, st.dht.nextSeq, st.dht.nextEOL
		if data == nil || m.closed {
			st.dht.running = false
			m.mu.Unlock()
			return
		}
		st.dht.next = nil
		m.mu.Unlock()

		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.DHTPutTimeout)
		err := m.cfg.Router.PutValue(ctx, RoutingKey(st.name), data)
		cancel()
		if err != nil && m.ctx.Err() != nil {
			continue // closing: not the DHT's failure; the loop ends
		}

		m.mu.Lock()
		now := m.clock.Now()
		st.dht.last = DHTPut{Seq: seq, At: now, Err: err}
		if err == nil {
			m.c.dhtPuts.Add(1)
			st.dht.okSeq, st.dht.okAt, st.dht.failures = max(st.dht.okSeq, seq), now, 0
		} else {
			m.c.dhtPutsFailed.Add(1)
			m.log.Debug("DHT put failed", "feed", st.name, "seq", seq, "err", err)
			if st.dht.next == nil { // nothing newer queued: try this one again later
				st.dht.failures++
				st.dht.retry, st.dht.retrySeq, st.dht.retryEOL = data, seq, eol
				st.dht.retryAt = now.Add(m.backoff(st.dht.failures))
			}
		}
		m.mu.Unlock()
	}
}

// retryDHTLocked requeues st's failed DHT put when its backoff is over,
// unless the record has expired meanwhile (the DHT would refuse it).
func (m *Manager) retryDHTLocked(st *feedState, now time.Time) {
	d := &st.dht
	if d.retry == nil || d.running || d.next != nil || now.Before(d.retryAt) {
		return
	}
	if !now.Before(d.retryEOL) {
		d.retry = nil
		return
	}
	d.next, d.nextSeq, d.nextEOL, d.retry = d.retry, d.retrySeq, d.retryEOL, nil
	m.startPutterLocked(st)
}
