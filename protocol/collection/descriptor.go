package collection

import (
	"crypto/rand"
	"fmt"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Descriptor is a collection's genesis block: its name, its creator's key
// and its default replication factor. The CID of the encoded descriptor is
// the collection's ID, so the ID commits to the creator's key and no one
// else can ever become the creator. It needs no signature: anyone may write
// a descriptor naming any key, but only the holder of that key can write to
// the collection it defines.
//
// Wire form (KindDescriptor):
//
//	kind, version, name string, creator key, replication uvarint,
//	nonce bytes
type Descriptor struct {
	Name        string
	CreatorKey  crypto.PubKey
	Creator     peer.ID // derived from CreatorKey
	Replication int     // default R for items that do not set one; >= 1
	Nonce       []byte  // makes two collections with the same name and creator distinct
}

// NewDescriptor makes the descriptor of a new collection created by key,
// with a random nonce.
func NewDescriptor(name string, creator crypto.PubKey, replication int) (*Descriptor, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("new collection: nonce: %w", err)
	}
	id, err := peer.IDFromPublicKey(creator)
	if err != nil {
		return nil, fmt.Errorf("new collection: creator key: %w", err)
	}
	d := &Descriptor{Name: name, CreatorKey: creator, Creator: id, Replication: replication, Nonce: nonce}
	if err := d.validate(); err != nil {
		return nil, fmt.Errorf("new collection: %w", err)
	}
	return d, nil
}

func (d *Descriptor) validate() error {
	switch {
	case d.Name == "" || len(d.Name) > MaxNameLen:
		return malformed("descriptor: name must have 1 to %d bytes", MaxNameLen)
	case d.CreatorKey == nil:
		return malformed("descriptor: no creator key")
	case d.Replication < 1 || d.Replication > MaxReplication:
		return malformed("descriptor: replication %d outside 1..%d", d.Replication, MaxReplication)
	case len(d.Nonce) > maxNonceLen:
		return tooLarge("descriptor: nonce of %d bytes, limit %d", len(d.Nonce), maxNonceLen)
	}
	return nil
}

// Encode returns the canonical encoding.
func (d *Descriptor) Encode() []byte {
	var e encoder
	e.header(KindDescriptor)
	e.str(d.Name)
	e.bytes(marshalKey(d.CreatorKey))
	e.uvarint(uint64(d.Replication))
	e.bytes(d.Nonce)
	return e.b
}

// Block returns the encoded descriptor as a block; its CID is the
// collection ID.
func (d *Descriptor) Block() blocks.Block { return newBlock(d.Encode()) }

// ID returns the collection ID.
func (d *Descriptor) ID() cid.Cid { return d.Block().Cid() }

// DecodeDescriptor decodes and validates an encoded descriptor.
func DecodeDescriptor(data []byte) (*Descriptor, error) {
	if len(data) > MaxBlockSize {
		return nil, tooLarge("descriptor: %d bytes", len(data))
	}
	d := decoder{b: data}
	d.header(KindDescriptor, "descriptor")
	var out Descriptor
	out.Name = d.str("descriptor name", MaxNameLen)
	out.CreatorKey, out.Creator = d.pubkey("descriptor creator")
	r := d.uvarint("descriptor replication")
	out.Nonce = append([]byte(nil), d.bytes("descriptor nonce", maxNonceLen)...)
	d.end("descriptor")
	if d.err != nil {
		return nil, d.err
	}
	if r > MaxReplication {
		return nil, malformed("descriptor: replication %d above %d", r, MaxReplication)
	}
	out.Replication = int(r)
	if err := out.validate(); err != nil {
		return nil, err
	}
	return &out, nil
}
