package store

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

var (
	_ datastore.Batching            = (*Datastore)(nil)
	_ datastore.PersistentDatastore = (*Datastore)(nil)
)

// Datastore is the go-datastore view of the store's key-value namespace
// (keys under "d/" in the database; blocks, pins and metadata are out of its
// reach). It implements datastore.Batching and datastore.PersistentDatastore.
// Values are copied in and out, so callers may reuse their buffers.
type Datastore struct {
	s *Store
}

func dsKey(k datastore.Key) []byte {
	ks := k.String()
	b := make([]byte, 0, len(dsPrefix)+len(ks))
	return append(append(b, dsPrefix...), ks...)
}

func (d *Datastore) read(fn func(txn *badger.Txn) error) error {
	if !d.s.enter() {
		return ErrClosed
	}
	defer d.s.leave()
	err := d.s.db.View(fn)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return datastore.ErrNotFound
	}
	return err
}

func (d *Datastore) write(fn func(txn *badger.Txn) error) error {
	if !d.s.enter() {
		return ErrClosed
	}
	defer d.s.leave()
	return d.s.update(fn)
}

// Get returns the value of key, or datastore.ErrNotFound.
func (d *Datastore) Get(ctx context.Context, key datastore.Key) ([]byte, error) {
	var v []byte
	err := d.read(func(txn *badger.Txn) error {
		item, err := txn.Get(dsKey(key))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// Has reports whether key has a value.
func (d *Datastore) Has(ctx context.Context, key datastore.Key) (bool, error) {
	err := d.read(func(txn *badger.Txn) error {
		_, err := txn.Get(dsKey(key))
		return err
	})
	if errors.Is(err, datastore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// GetSize returns the length of key's value, or -1 and datastore.ErrNotFound.
func (d *Datastore) GetSize(ctx context.Context, key datastore.Key) (int, error) {
	size := -1
	err := d.read(func(txn *badger.Txn) error {
		item, err := txn.Get(dsKey(key))
		if err != nil {
			return err
		}
		size, err = valueLen(item)
		return err
	})
	if err != nil {
		return -1, err
	}
	return size, nil
}

// Put sets key's value.
func (d *Datastore) Put(ctx context.Context, key datastore.Key, value []byte) error {
	return d.write(func(txn *badger.Txn) error { return txn.Set(dsKey(key), value) })
}

// Delete removes key; deleting a missing key is not an error.
func (d *Datastore) Delete(ctx context.Context, key datastore.Key) error {
	return d.write(func(txn *badger.Txn) error { return txn.Delete(dsKey(key)) })
}

// Sync makes every write so far durable (an fsync of Badger's logs). Writes
// survive a killed process without it; Sync guards against power loss.
func (d *Datastore) Sync(ctx context.Context, prefix datastore.Key) error {
	if d.s.cfg.InMemory {
		return nil
	}
	if !d.s.enter() {
		return ErrClosed
	}
	defer d.s.leave()
	return d.s.db.Sync()
}

// Close does nothing: the Store owns the database.
func (d *Datastore) Close() error { return nil }

// DiskUsage returns the disk space of the whole store, blocks included:
// they share one database.
func (d *Datastore) DiskUsage(ctx context.Context) (uint64, error) {
	if d.s.cfg.InMemory {
		return 0, nil
	}
	n, err := dirSize(d.s.cfg.Path)
	return uint64(n), err
}

// Batch returns a batch whose Commit applies its writes in order. A large
// batch is split into several Badger transactions, so a failed Commit may
// have applied a prefix of it.
func (d *Datastore) Batch(ctx context.Context) (datastore.Batch, error) {
	return &dsBatch{d: d}, nil
}

type dsOp struct {
	key    []byte
	value  []byte
	delete bool
}

type dsBatch struct {
	d   *Datastore
	ops []dsOp
}

func (b *dsBatch) Put(ctx context.Context, key datastore.Key, value []byte) error {
	b.ops = append(b.ops, dsOp{key: dsKey(key), value: append([]byte(nil), value...)})
	return nil
}

func (b *dsBatch) Delete(ctx context.Context, key datastore.Key) error {
	b.ops = append(b.ops, dsOp{key: dsKey(key), delete: true})
	return nil
}

func (b *dsBatch) Commit(ctx context.Context) error {
	if !b.d.s.enter() {
		return ErrClosed
	}
	defer b.d.s.leave()
	ops := b.ops
	b.ops = nil
	for len(ops) > 0 {
		n, err := b.commitSome(ops)
		if err != nil {
			return fmt.Errorf("commit datastore batch: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

// commitSome applies as many ops as fit in one transaction.
func (b *dsBatch) commitSome(ops []dsOp) (int, error) {
	var n int
	err := b.d.s.update(func(txn *badger.Txn) error {
		n = 0
		for _, op := range ops {
			var err error
			if op.delete {
				err = txn.Delete(op.key)
			} else {
				err = txn.Set(op.key, op.value)
			}
			if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
				return nil // commit what fits; the caller goes on with the rest
			}
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Query runs q over the namespace. Keys come out in order straight from
// Badger (ascending, or descending with OrderByKeyDescending) and the query
// streams; any other order makes it collect and sort the matching entries
// in memory. The results hold a read snapshot until closed, and stop when
// the store closes.
func (d *Datastore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if !d.s.enter() {
		return nil, ErrClosed
	}
	prefix := append([]byte(nil), dsPrefix...)
	if p := cleanPrefix(q.Prefix); p != "" {
		prefix = append(prefix, p+"/"...)
	}
	reverse, sorted := false, true
	switch {
	case len(q.Orders) == 0:
	case isOrderByKey(q.Orders[0]):
	case isOrderByKeyDescending(q.Orders[0]):
		reverse = true
	default:
		sorted = false
	}
	// Filters and orders may look at values even when the caller wants keys
	// only.
	needValues := !q.KeysOnly || len(q.Filters) > 0 || !sorted
	s := d.s

	if !sorted {
		// Collect, sort, then apply offset and limit.
		var entries []query.Entry
		err := s.db.View(func(txn *badger.Txn) error {
			return scan(ctx, s, txn, prefix, false, needValues, func(e query.Entry) (bool, error) {
				if passes(q.Filters, e) {
					entries = append(entries, e)
				}
				return true, nil
			})
		})
		s.leave()
		if err != nil {
			return nil, err
		}
		query.Sort(q.Orders, entries)
		entries = window(entries, q.Offset, q.Limit)
		if q.KeysOnly {
			for i := range entries {
				entries[i].Value = nil
			}
		}
		return query.ResultsWithEntries(q, entries), nil
	}

	return query.ResultsWithContext(q, func(qctx context.Context, out chan<- query.Result) {
		defer s.leave()
		txn := s.db.NewTransaction(false)
		defer txn.Discard()
		skip, sent := q.Offset, 0
		err := scan(ctx, s, txn, prefix, reverse, needValues, func(e query.Entry) (bool, error) {
			if !passes(q.Filters, e) {
				return true, nil
			}
			if skip > 0 {
				skip--
				return true, nil
			}
			if q.KeysOnly {
				e.Value = nil
			}
			select {
			case out <- query.Result{Entry: e}:
			case <-qctx.Done():
				return false, nil
			case <-s.ctx.Done(): // the store is closing; don't wait for a reader
				return false, nil
			}
			sent++
			return q.Limit <= 0 || sent < q.Limit, nil
		})
		if err != nil {
			select {
			case out <- query.Result{Error: err}:
			case <-qctx.Done():
			case <-s.ctx.Done():
			}
		}
	}), nil
}

// scan calls fn with the entries under prefix until fn returns false, the
// context ends or the store closes.
func scan(ctx context.Context, s *Store, txn *badger.Txn, prefix []byte, reverse, values bool,
	fn func(query.Entry) (bool, error),
) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.Reverse = reverse
	opts.PrefetchValues = values
	opts.PrefetchSize = 16
	it := txn.NewIterator(opts)
	defer it.Close()
	if reverse {
		it.Seek(append(append([]byte(nil), prefix...), 0xff))
	} else {
		it.Rewind()
	}
	for ; it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.ctx.Err(); err != nil {
			return ErrClosed
		}
		item := it.Item()
		e := query.Entry{Key: string(item.Key()[len(dsPrefix):])}
		var err error
		if values {
			e.Value, err = item.ValueCopy(nil)
			e.Size = len(e.Value)
		} else {
			e.Size, err = valueLen(item)
		}
		if err != nil {
			return err
		}
		more, err := fn(e)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// cleanPrefix normalises a query prefix the way go-datastore's naive query
// does: "/" and "" mean everything, and "/a/" matches children of "/a".
func cleanPrefix(p string) string {
	if p == "" {
		return ""
	}
	if p[0] != '/' {
		p = "/" + p
	}
	p = path.Clean(p)
	if p == "/" {
		return ""
	}
	return p
}

func isOrderByKey(o query.Order) bool {
	switch o.(type) {
	case query.OrderByKey, *query.OrderByKey:
		return true
	}
	return false
}

func isOrderByKeyDescending(o query.Order) bool {
	switch o.(type) {
	case query.OrderByKeyDescending, *query.OrderByKeyDescending:
		return true
	}
	return false
}

func passes(filters []query.Filter, e query.Entry) bool {
	for _, f := range filters {
		if !f.Filter(e) {
			return false
		}
	}
	return true
}

func window(entries []query.Entry, offset, limit int) []query.Entry {
	if offset > 0 {
		if offset >= len(entries) {
			return nil
		}
		entries = entries[offset:]
	}
	if limit > 0 && limit < len(entries) {
		entries = entries[:limit]
	}
	return entries
}
