package feed

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ipfs/boxo/ipns"
)

// Keys in the KV store:
//
//	/feed/index          JSON list of tracked feeds: name, owned, follow options
//	/feed/record/<name>  the newest record held (marshalled IPNS record)
//	/feed/pinned/<name>  the record whose content is pinned
//	/feed/seq/<name>     the last sequence number used by Publish (decimal)
//
// <name> is the base36 libp2p-key CID. Held and pinned records are written
// by the feed's worker shortly after they change, so a crash can lose the
// last few; the sequence number is written before a record is sent, so a
// restarted publisher never reuses one.
const indexKey = "/feed/index"

func recordKey(n ipns.Name) string { return "/feed/record/" + n.String() }
func pinnedKey(n ipns.Name) string { return "/feed/pinned/" + n.String() }
func seqKey(n ipns.Name) string    { return "/feed/seq/" + n.String() }

type indexEntry struct {
	Name   string         `json:"name"`
	Owned  bool           `json:"owned,omitempty"`
	Follow *FollowOptions `json:"follow,omitempty"`
}

// saveIndex writes the list of tracked feeds.
func (m *Manager) saveIndex(ctx context.Context) error {
	if m.cfg.Store == nil {
		return nil
	}
	m.idxMu.Lock()
	defer m.idxMu.Unlock()
	var idx []indexEntry
	for _, fi := range m.List() {
		e := indexEntry{Name: fi.Name.String(), Owned: fi.Owned}
		if fi.Following {
			opts := fi.Options
			e.Follow = &opts
		}
		idx = append(idx, e)
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("feed: save index: %w", err)
	}
	if err := m.cfg.Store.Put(ctx, indexKey, data); err != nil {
		return fmt.Errorf("feed: save index: %w", err)
	}
	return nil
}

// load restores tracked feeds from the store. Records that no longer parse
// are logged and skipped; expired ones are kept, so that their sequence
// numbers still hold off replays.
func (m *Manager) load(ctx context.Context) error {
	if m.cfg.Store == nil {
		return nil
	}
	data, found, err := m.cfg.Store.Get(ctx, indexKey)
	if err != nil {
		return fmt.Errorf("feed: load index: %w", err)
	}
	if !found {
		return nil
	}
	var idx []indexEntry
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("feed: load index: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range idx {
		name, err := ipns.NameFromString(e.Name)
		if err != nil {
			m.log.Warn("skipping unreadable feed in index", "name", e.Name, "err", err)
			continue
		}
		st := &feedState{name: name, owned: e.Owned, follow: e.Follow}
		if !st.tracked() {
			continue
		}
		if st.held, err = m.loadRecord(ctx, name, recordKey(name)); err != nil {
			return err
		}
		if st.pinning() {
			if st.pinned, err = m.loadRecord(ctx, name, pinnedKey(name)); err != nil {
				return err
			}
			if st.held != nil && (st.pinned == nil || st.pinned.Seq < st.held.Seq) {
				st.want = st.held
			}
		}
		m.feeds[nameKey(name)] = st
		m.kickLocked(st)
	}
	return nil
}

func (m *Manager) loadRecord(ctx context.Context, name ipns.Name, key string) (*Record, error) {
	data, found, err := m.cfg.Store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("feed: load %s: %w", key, err)
	}
	if !found {
		return nil, nil
	}
	rec, err := validate(name, data, m.clock.Now(), MaxRecordSize, false)
	if err != nil {
		m.log.Warn("skipping unreadable stored feed record", "key", key, "err", err)
		return nil, nil
	}
	return &rec, nil
}

func (m *Manager) loadSeq(ctx context.Context, name ipns.Name) (uint64, bool, error) {
	if m.cfg.Store == nil {
		return 0, false, nil
	}
	data, found, err := m.cfg.Store.Get(ctx, seqKey(name))
	if err != nil || !found {
		return 0, false, err
	}
	seq, err := strconv.ParseUint(string(data), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("stored sequence %q: %w", data, err)
	}
	return seq, true, nil
}
