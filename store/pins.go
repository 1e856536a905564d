package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	basicnode "github.com/ipld/go-ipld-prime/node/basic"
	"github.com/ipld/go-ipld-prime/traversal"
)

// PinMode says what a pin keeps.
type PinMode uint8

const (
	// Direct keeps the pinned block only.
	Direct PinMode = 1
	// Recursive keeps the pinned block and every block reachable from it.
	Recursive PinMode = 2
)

func (m PinMode) String() string {
	switch m {
	case Direct:
		return "direct"
	case Recursive:
		return "recursive"
	}
	return fmt.Sprintf("PinMode(%d)", uint8(m))
}

// Pin is one entry of the pin set.
type Pin struct {
	Cid  cid.Cid
	Mode PinMode
	Name string // optional, free-form
}

var (
	// ErrNotPinned is returned for a CID that has no pin of its own.
	ErrNotPinned = errors.New("not pinned")
	// ErrUnsupportedCodec is returned when a recursive pin meets a block whose
	// links the store cannot read (it reads dag-pb, raw and dag-cbor).
	ErrUnsupportedCodec = errors.New("unsupported codec for a recursive pin")
)

// Pins is the store's pin set, persisted in the database. A CID has at most
// one pin; adding it again replaces its mode and name. Its methods are safe
// for concurrent use, also with GC.
type Pins struct {
	s *Store
}

func pinKey(c cid.Cid) []byte {
	return append(append([]byte{}, pinPrefix...), c.Bytes()...)
}

// Add pins c. A recursive pin requires the whole DAG below c to be stored
// (fetch it first): if a block is missing, Add fails with an error that
// matches ipld.ErrNotFound and names the block, and pins nothing. Add is safe
// against a concurrent GC: the blocks it has checked cannot be collected
// before the pin is recorded.
func (p *Pins) Add(ctx context.Context, c cid.Cid, mode PinMode, name string) error {
	if mode != Direct && mode != Recursive {
		return fmt.Errorf("pin %s: invalid mode %d", c, mode)
	}
	if !c.Defined() {
		return errors.New("pin: undefined CID")
	}
	ss := p.s.NewSession()
	defer ss.Close()
	var err error
	if mode == Recursive {
		err = walkDAG(ctx, c, map[string]struct{}{}, ss.bs.Get, ss.bs.Has)
	} else {
		var ok bool
		ok, err = ss.bs.Has(ctx, c)
		if err == nil && !ok {
			err = notFound(c)
		}
	}
	if err != nil {
		return fmt.Errorf("pin %s %s: %w", c, mode, err)
	}
	val := append([]byte{byte(mode)}, name...)
	if err := p.write(func(txn *badger.Txn) error { return txn.Set(pinKey(c), val) }); err != nil {
		return fmt.Errorf("pin %s: %w", c, err)
	}
	return nil
}

// Remove unpins c. Its blocks become garbage unless something else keeps
// them. It returns ErrNotPinned if c has no pin.
func (p *Pins) Remove(ctx context.Context, c cid.Cid) error {
	err := p.write(func(txn *badger.Txn) error {
		if _, err := txn.Get(pinKey(c)); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return ErrNotPinned
			}
			return err
		}
		return txn.Delete(pinKey(c))
	})
	if err != nil {
		return fmt.Errorf("unpin %s: %w", c, err)
	}
	return nil
}

// Get returns c's own pin, or ErrNotPinned. It does not look for recursive
// pins that cover c.
func (p *Pins) Get(ctx context.Context, c cid.Cid) (Pin, error) {
	var pin Pin
	err := p.read(func(txn *badger.Txn) error {
		item, err := txn.Get(pinKey(c))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotPinned
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			pin, err = decodePin(c, v)
			return err
		})
	})
	return pin, err
}

// IsPinned reports whether c has a pin of its own (direct or recursive).
func (p *Pins) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	_, err := p.Get(ctx, c)
	if errors.Is(err, ErrNotPinned) {
		return false, nil
	}
	return err == nil, err
}

// List returns every pin, ordered by CID bytes.
func (p *Pins) List(ctx context.Context) ([]Pin, error) {
	var pins []Pin
	err := p.read(func(txn *badger.Txn) error {
		var err error
		pins, err = listPins(ctx, txn)
		return err
	})
	return pins, err
}

func listPins(ctx context.Context, txn *badger.Txn) ([]Pin, error) {
	var pins []Pin
	opts := badger.DefaultIteratorOptions
	opts.Prefix = pinPrefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		item := it.Item()
		c, err := cid.Cast(item.Key()[len(pinPrefix):])
		if err != nil {
			return nil, fmt.Errorf("corrupt pin key %x: %w", item.Key(), err)
		}
		err = item.Value(func(v []byte) error {
			pin, err := decodePin(c, v)
			pins = append(pins, pin)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return pins, nil
}

func decodePin(c cid.Cid, v []byte) (Pin, error) {
	if len(v) == 0 || (PinMode(v[0]) != Direct && PinMode(v[0]) != Recursive) {
		return Pin{}, fmt.Errorf("corrupt pin record for %s", c)
	}
	return Pin{Cid: c, Mode: PinMode(v[0]), Name: string(v[1:])}, nil
}

func (p *Pins) read(fn func(txn *badger.Txn) error) error {
	if !p.s.enter() {
		return ErrClosed
	}
	defer p.s.leave()
	return p.s.db.View(fn)
}

func (p *Pins) write(fn func(txn *badger.Txn) error) error {
	if !p.s.enter() {
		return ErrClosed
	}
	defer p.s.leave()
	return p.s.update(fn)
}

func notFound(c cid.Cid) error { return ipld.ErrNotFound{Cid: c} }

// walkDAG visits every block reachable from root that is not in seen yet,
// adds it to seen (keyed by CID bytes), reading the blocks
// that can have links with get and checking raw leaves with has only.
func walkDAG(ctx context.Context, root cid.Cid, seen map[string]struct{},
	get func(context.Context, cid.Cid) (blocks.Block, error),
	has func(context.Context, cid.Cid) (bool, error),
) error {
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[c.KeyString()]; ok {
			continue
		}
		seen[c.KeyString()] = struct{}{}
		if c.Type() == cid.Raw {
			ok, err := has(ctx, c)
			if err != nil {
				return err
			}
			if !ok {
				return notFound(c)
			}
			continue
		}
		blk, err := get(ctx, c)
		if err != nil {
			return err
		}
		ls, err := links(c, blk.RawData())
		if err != nil {
			return err
		}
		stack = append(stack, ls...)
	}
	return nil
}

// links decodes the links of a block with the IPLD libraries.
func links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	switch c.Type() {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		n, err := merkledag.DecodeProtobuf(data)
		if err != nil {
			return nil, fmt.Errorf("decode dag-pb block %s: %w", c, err)
		}
		out := make([]cid.Cid, 0, len(n.Links()))
		for _, l := range n.Links() {
			out = append(out, l.Cid)
		}
		return out, nil
	case cid.DagCBOR:
		nb := basicnode.Prototype.Any.NewBuilder()
		if err := dagcbor.Decode(nb, bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("decode dag-cbor block %s: %w", c, err)
		}
		ls, err := traversal.SelectLinks(nb.Build())
		if err != nil {
			return nil, fmt.Errorf("links of dag-cbor block %s: %w", c, err)
		}
		out := make([]cid.Cid, 0, len(ls))
		for _, l := range ls {
			cl, ok := l.(cidlink.Link)
			if !ok {
				return nil, fmt.Errorf("dag-cbor block %s: link %v is not a CID", c, l)
			}
			out = append(out, cl.Cid)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: block %s has codec 0x%x", ErrUnsupportedCodec, c, c.Type())
}
