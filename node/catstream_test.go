package node_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestCatStreamsFromPeer: B cats a file of many 1 MiB leaves that only A
// holds, whole and in ranges that start and end inside and on the edges of
// leaves, each on a fresh node (so every cat streams while its native
// fetch runs, arrivals.go), and the bytes are the file's.
func TestCatStreamsFromPeer(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	data := randomBytes(7, 24<<20+12345)
	root := addBytes(t, a, data)
	for _, tc := range []struct {
		name           string
		offset, length int64
	}{
		{"whole", 0, -1},
		{"inside one leaf", 3<<20 + 17, 1000},
		{"across leaves", 1<<20 - 1, 5<<20 + 2},
		{"from a leaf edge to the end", 20 << 20, -1},
		{"last bytes", int64(len(data)) - 10, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := nodetest.Start(t, nodetest.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := b.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
				t.Fatal(err)
			}
			catAndCompare(ctx, t, b, root.String(), data, tc.offset, tc.length)
		})
	}
}

func catAndCompare(ctx context.Context, t *testing.T, n *node.Node, c string, data []byte, offset, length int64) {
	t.Helper()
	want := data[offset:]
	if length >= 0 {
		want = want[:length]
	}
	r, err := nodetest.Client(n).Cat(ctx, c, offset, length)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil {
		t.Fatalf("cat: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("cat offset %d length %d: %d bytes, not the file's %d", offset, length, got.Len(), len(want))
	}
}
