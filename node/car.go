package node

import (
	"fmt"
	"io"
	"net/http"

	"github.com/ipfs/boxo/verifcid"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/protocol/exchange"
)

// carBatch is how many blocks readCAR hands on at once.
const carBatch = 64

// readCAR decodes a CAR (v1 or v2) from r, each block verified against its
// CID by go-car, and hands the blocks to put in batches of up to carBatch.
// It returns the CAR's roots and how many blocks it read. A malformed CAR
// gives a 400 error saying after how many blocks, a block weft would not
// read back (importable) a 422 before it reaches put; put's errors come
// back as they are.
func readCAR(r io.Reader, put func([]blocks.Block) error) ([]cid.Cid, int64, error) {
	br, err := carv2.NewBlockReader(r)
	if err != nil {
		return nil, 0, badRequest("bad CAR: %v", err)
	}
	var count int64
	batch := make([]blocks.Block, 0, carBatch)
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, count, badRequest("bad CAR after %d blocks: %v", count, err)
		}
		if err := importable(b); err != nil {
			return nil, count, &httpError{http.StatusUnprocessableEntity,
				fmt.Errorf("CAR block %d refused, nothing pinned: %w", count+1, err)}
		}
		batch = append(batch, b)
		count++
		if len(batch) == carBatch {
			if err := put(batch); err != nil {
				return nil, count, err
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := put(batch); err != nil {
			return nil, count, err
		}
	}
	return br.Roots, count, nil
}

// importable checks a CAR block weft could serve and read back: a hash
// boxo's verifcid allows and a size peers send.
func importable(b blocks.Block) error {
	c := b.Cid()
	if err := verifcid.ValidateCid(verifcid.DefaultAllowlist, c); err != nil {
		name := "unknown"
		if dh, derr := mh.Decode(c.Hash()); derr == nil {
			name = dh.Name
		}
		return fmt.Errorf("block %s uses hash %s, which weft does not accept: %w", c, name, err)
	}
	if len(b.RawData()) > exchange.MaxBlockSize {
		return fmt.Errorf("block %s is %d bytes, more than the %d any peer sends or fetches", c, len(b.RawData()), exchange.MaxBlockSize)
	}
	return nil
}
