package node

import (
	"bytes"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func rawBlock(t *testing.T, data []byte) blocks.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, h))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// closed reports whether ch is closed (everything here is synchronous:
// put closes before it returns).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestArrivals: a waiter is woken by the block's put; the copy is handed
// over once, and is a copy (the fetch reuses its buffer); copies stop at
// arrivalsHeld bytes; after end, wait says no more will come.
func TestArrivals(t *testing.T) {
	a := newArrivals()
	buf := []byte("first block")
	b1 := rawBlock(t, buf)
	ch, ok := a.wait(b1.Cid())
	if !ok {
		t.Fatal("wait refused before the fetch ended")
	}
	if closed(ch) {
		t.Fatal("woken before the block arrived")
	}
	a.put([]blocks.Block{b1})
	if !closed(ch) {
		t.Fatal("not woken by the block's arrival")
	}
	copy(buf, "XXXXX") // the fetch reuses the buffer once put returns
	d, ok := a.take(b1.Cid())
	if !ok || !bytes.Equal(d, []byte("first block")) {
		t.Fatalf("take = %q, %v; want the bytes as they arrived", d, ok)
	}
	if _, ok := a.take(b1.Cid()); ok {
		t.Fatal("the copy was handed over twice")
	}

	big := rawBlock(t, make([]byte, arrivalsHeld))
	small := rawBlock(t, []byte("one byte too many"))
	a.put([]blocks.Block{big, small})
	if _, ok := a.take(small.Cid()); ok {
		t.Fatal("held more than arrivalsHeld bytes")
	}
	if _, ok := a.take(big.Cid()); !ok {
		t.Fatal("a block within the bound was not held")
	}

	pending, ok := a.wait(small.Cid())
	if !ok {
		t.Fatal("wait refused before the fetch ended")
	}
	a.end()
	if !closed(a.done) {
		t.Fatal("done not closed by end")
	}
	if closed(pending) {
		t.Fatal("a waiter's channel closed without its block (it must watch done)")
	}
	if _, ok := a.wait(small.Cid()); ok {
		t.Fatal("wait accepted after the fetch ended")
	}
	a.end() // twice is harmless
}
