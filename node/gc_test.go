package node_test

import (
	"bytes"
	"crypto/sha256"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
	"io"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
	"github.com/weft-p2p/weft/store"
)

// streamSum is the sha256 of newSHAStream(seed, size).
func streamSum(seed string, size int64) []byte {
	h := sha256.New()
	io.Copy(h, newSHAStream(seed, size))
	return h.Sum(nil)
}

// catSum reads c on n and returns the byte count and sha256.
func catSum(t *testing.T, n *node.Node, c cid.Cid) (int64, []byte) {
	t.Helper()
	h := sha256.New()
	cw := &countWriter{w: h}
	if err := n.Cat(t.Context(), c, 0, -1, cw, nil); err != nil {
		t.Fatalf("cat %s: %v", c, err)
	}
	return cw.n, h.Sum(nil)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestPinsSurviveRestartAndGCReclaims adds a small and a 100 MiB file
// (both pinned), restarts the node on the same repo and checks both pins
// and both files; then unpins the large one and collects: GC must free
// exactly the large file's blocks, keep the small one readable, and give
// most of the 100 MiB back to the file system.
func TestPinsSurviveRestartAndGCReclaims(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MiB")
	}
	const (
		smallSize = 3<<20 + 17
		bigSize   = 100 << 20
	)
	quiet := func(c *node.Config) { c.DHT.BootstrapInterval = node.Duration(time.Hour) }
	dir := nodetest.Init(t, nodetest.Options{})
	n := nodetest.StartRepo(t, dir, quiet)
	ctx := t.Context()
	opts := unixfs.DefaultOptions()
	small, err := n.Add(ctx, files.NewReaderFile(newSHAStream("gc-small", smallSize)), opts, true, "small", nil)
	if err != nil {
		t.Fatalf("add small: %v", err)
	}
	afterSmall := n.Store().Stat()
	big, err := n.Add(ctx, files.NewReaderFile(newSHAStream("gc-big", bigSize)), opts, true, "big", nil)
	if err != nil {
		t.Fatalf("add big: %v", err)
	}
	withBig := n.Store().Stat()
	bigBlocks := withBig.Blocks - afterSmall.Blocks
	bigBytes := withBig.BlockBytes - afterSmall.BlockBytes
	if bigBytes < bigSize {
		t.Fatalf("store grew by %d bytes for a %d-byte file", bigBytes, bigSize)
	}

	// Restart on the same repo: both pins and both files are still there.
	if err := n.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	n = nodetest.StartRepo(t, dir, quiet)
	pins, err := n.Store().Pins().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range pins {
		if p.Mode != store.Recursive {
			t.Errorf("pin %s (%s) has mode %v, want recursive", p.Cid, p.Name, p.Mode)
		}
		got[p.Cid.String()] = p.Name
	}
	if len(got) != 2 || got[small.String()] != "small" || got[big.String()] != "big" {
		t.Fatalf("pins after restart: %v; want %s=small, %s=big", got, small, big)
	}
	if st := n.Store().Stat(); st.Blocks != withBig.Blocks || st.BlockBytes != withBig.BlockBytes {
		t.Fatalf("store after restart: %+v; before: %+v", st, withBig)
	}
	for _, f := range []struct {
		c    cid.Cid
		seed string
		size int64
	}{{small, "gc-small", smallSize}, {big, "gc-big", bigSize}} {
		if size, sum := catSum(t, n, f.c); size != f.size || !bytes.Equal(sum, streamSum(f.seed, f.size)) {
			t.Fatalf("cat %s after restart: %d bytes, sha256 %x; want %d bytes", f.seed, size, sum, f.size)
		}
	}

	// GC with both pinned frees nothing.
	res, err := n.Store().GC(ctx)
	if err != nil {
		t.Fatalf("gc with everything pinned: %v", err)
	}
	if res.BlocksFreed != 0 {
		t.Fatalf("gc with everything pinned freed %d blocks", res.BlocksFreed)
	}

	if err := n.Unpin(ctx, big); err != nil {
		t.Fatalf("unpin big: %v", err)
	}
	before := n.Store().Stat()
	res, err = n.Store().GC(ctx)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	after := n.Store().Stat()
	t.Logf("GC freed %d blocks (%.1f MiB), %d live, in %v; disk %.1f MiB -> %.1f MiB (GC saw %.1f -> %.1f)",
		res.BlocksFreed, mib(res.BytesFreed), res.LiveBlocks, res.Duration.Round(time.Millisecond),
		mib(before.DiskBytes), mib(after.DiskBytes), mib(res.DiskBefore), mib(res.DiskAfter))
	if res.BlocksFreed != bigBlocks || res.BytesFreed != bigBytes {
		t.Errorf("GC freed %d blocks, %d bytes; the big file had %d blocks, %d bytes",
			res.BlocksFreed, res.BytesFreed, bigBlocks, bigBytes)
	}
	if res.LiveBlocks != afterSmall.Blocks {
		t.Errorf("GC kept %d live blocks; the small file has %d", res.LiveBlocks, afterSmall.Blocks)
	}
	if after.Blocks != afterSmall.Blocks || after.BlockBytes != afterSmall.BlockBytes {
		t.Errorf("store after GC: %+v; want what the small file alone took: %+v", after, afterSmall)
	}
	if has, _ := n.Store().Blockstore().Has(ctx, big); has {
		t.Errorf("big file's root still stored after unpin and GC")
	}
	if size, sum := catSum(t, n, small); size != smallSize || !bytes.Equal(sum, streamSum("gc-small", smallSize)) {
		t.Fatalf("cat small after GC: %d bytes, sha256 %x", size, sum)
	}
	// Most of the 100 MiB must go back to the file system. Badger gives
	// value log space back a whole file at a time and never the file being
	// written, so up to one value log file may stay.
	const slack = store.DefaultValueLogFileSize + 8<<20
	if shrank := before.DiskBytes - after.DiskBytes; shrank < bigSize-slack {
		t.Errorf("disk %.1f MiB -> %.1f MiB: shrank by %.1f MiB after collecting a 100 MiB file",
			mib(before.DiskBytes), mib(after.DiskBytes), mib(shrank))
	}

	// The same on a node that has not restarted since the add: the file's
	// tail is then in the value log file Badger is still writing.
	again, err := n.Add(ctx, files.NewReaderFile(newSHAStream("gc-big-2", bigSize)), opts, true, "again", nil)
	if err != nil {
		t.Fatalf("add again: %v", err)
	}
	if err := n.Unpin(ctx, again); err != nil {
		t.Fatalf("unpin again: %v", err)
	}
	before = n.Store().Stat()
	res, err = n.Store().GC(ctx)
	if err != nil {
		t.Fatalf("gc again: %v", err)
	}
	after = n.Store().Stat()
	t.Logf("without restart: GC freed %d blocks (%.1f MiB); disk %.1f MiB -> %.1f MiB",
		res.BlocksFreed, mib(res.BytesFreed), mib(before.DiskBytes), mib(after.DiskBytes))
	if shrank := before.DiskBytes - after.DiskBytes; shrank < bigSize-slack {
		t.Errorf("without restart: disk %.1f MiB -> %.1f MiB: shrank by %.1f MiB after collecting a 100 MiB file",
			mib(before.DiskBytes), mib(after.DiskBytes), mib(shrank))
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// newSHAStream streams the kubo-cids.json input of (seed, size).
func newSHAStream(seed string, size int64) *unixfstest.Input { return unixfstest.NewInput(seed, size) }
