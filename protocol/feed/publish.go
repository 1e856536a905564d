package feed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// Publish points the feed of sk at value (an /ipfs/ path; path.FromCid
// makes one from a CID). The sequence number is one above both the record
// held for the feed and the last one Publish used for it (persisted before
// anything is sent); the record is valid for Config.Validity. It is applied
// locally, sent on the feed's topic and put into the DHT.
//
// A non-zero Record with a non-nil error means the record was made and is
// held (and answers catch-ups), but sending it on the topic or putting it
// into the DHT failed; the error says which. Publish blocks on the store,
// gossipsub and the DHT put.
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
		if err := m.cfg.Topics.Publish(ctx, Topic(name), data); err != nil {
			errs = append(errs, fmt.Errorf("feed: publish %s seq %d on topic: %w", name, seq, err))
		}
	}
	if m.cfg.Router != nil {
		if err := m.cfg.Router.PutValue(ctx, RoutingKey(name), data); err != nil {
			errs = append(errs, fmt.Errorf("feed: publish %s seq %d to DHT: %w", name, seq, err))
		}
	}
	return rec, errors.Join(errs...)
}
