package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// Benchmarks of the content path, each beside its ceiling in the same run:
//
//	BenchmarkContentAdd/sha256   SHA-256 over the bytes an add reads
//	BenchmarkContentAdd/add      node.Add of those bytes into Badger
//	BenchmarkContentFetch/stream a plain libp2p stream of the same size between the two hosts
//	BenchmarkContentFetch/fetch  node B fetches over Bitswap what node A added
//
// scripts/bench/content.sh runs them and prints medians and ratios.

const benchBytes = 256 << 20

// benchNonce makes every generated input new, so no add or fetch finds
// blocks it already has.
var benchNonce atomic.Uint64

// benchPattern yields size bytes of a random 1 MiB pattern, stamped every
// 64 KiB with a per-input nonce and the offset, so that no two chunks of
// any size from 64 KiB up are alike, within or across inputs. Reading costs
// one copy, as reading a file would.
type benchPattern struct {
	pattern []byte
	nonce   uint64
	left    int64
	off     int64
}

var basePattern = func() []byte {
	p := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return p
}()

func newBenchPattern(size int64) *benchPattern {
	p := make([]byte, len(basePattern))
	copy(p, basePattern)
	return &benchPattern{pattern: p, nonce: benchNonce.Add(1), left: size}
}

func (r *benchPattern) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	const stamp = 64 << 10
	at := r.off % int64(len(r.pattern))
	end := min(int64(len(r.pattern)), at+r.left, (at/stamp+1)*stamp)
	if at%stamp == 0 {
		binary.LittleEndian.PutUint64(r.pattern[at:], r.nonce)
		binary.LittleEndian.PutUint64(r.pattern[at+8:], uint64(r.off))
	}
	n := copy(b, r.pattern[at:end])
	r.off += int64(n)
	r.left -= int64(n)
	return n, nil
}

func benchTune(c *node.Config) {
	c.DHT.BootstrapInterval = node.Duration(time.Hour)
	c.Content.FetchTimeout = node.Duration(2 * time.Minute)
}

// BenchmarkContentAdd adds 256 MiB to a node (Badger on disk, pinned, as
// `weft add` does) beside SHA-256 over the same bytes from the same reader.
func BenchmarkContentAdd(b *testing.B) {
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(benchBytes)
		buf := make([]byte, 1<<20)
		for i := 0; i < b.N; i++ {
			h := sha256.New()
			if _, err := io.CopyBuffer(h, newBenchPattern(benchBytes), buf); err != nil {
				b.Fatal(err)
			}
			h.Sum(nil)
		}
	})
	b.Run("add", func(b *testing.B) {
		n := nodetest.Start(b, nodetest.Options{Tune: benchTune})
		opts := unixfs.DefaultOptions()
		b.SetBytes(benchBytes)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := n.Add(context.Background(), files.NewReaderFile(newBenchPattern(benchBytes)), opts, true, "", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

const benchCopyProto = protocol.ID("/weft-bench/copy/1.0.0")

// BenchmarkContentFetch moves 256 MiB from node A over 127.0.0.1: first
// over a plain libp2p stream to node B (the ceiling: same connection,
// security and muxer), then as a native-exchange fetch by B ("fetch"), and
// as a Bitswap fetch by node C, which has the native exchange switched off
// ("bitswap"). "small" is B fetching a fresh 1 KiB file from A.
func BenchmarkContentFetch(b *testing.B) {
	a := nodetest.Start(b, nodetest.Options{Tune: benchTune})
	bn := nodetest.Start(b, nodetest.Options{Tune: benchTune})
	cn := nodetest.Start(b, nodetest.Options{Tune: func(c *node.Config) {
		benchTune(c)
		c.Content.Native = false
	}})
	ctx := context.Background()
	if err := bn.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
		b.Fatal(err)
	}
	if err := cn.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
		b.Fatal(err)
	}
	a.Network().Host.SetStreamHandler(benchCopyProto, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(s, newBenchPattern(benchBytes), buf); err != nil {
			s.Reset()
			return
		}
		s.CloseWrite()
		io.Copy(io.Discard, s) // until B closes its side
	})
	b.Cleanup(func() { a.Network().Host.RemoveStreamHandler(benchCopyProto) })

	b.Run("stream", func(b *testing.B) {
		b.SetBytes(benchBytes)
		buf := make([]byte, 1<<20)
		for i := 0; i < b.N; i++ {
			s, err := bn.Network().Host.NewStream(ctx, a.ID(), benchCopyProto)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, s, buf)
			s.Close()
			if err != nil || n != benchBytes {
				b.Fatalf("stream copied %d bytes: %v", n, err)
			}
		}
	})
	// fetchBy fetches b.N fresh 256 MiB files that A adds, timing only the
	// fetches by dst.
	fetchBy := func(dst *node.Node) func(b *testing.B) {
		return func(b *testing.B) {
			opts := unixfs.DefaultOptions()
			b.SetBytes(benchBytes)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root, err := a.Add(ctx, files.NewReaderFile(newBenchPattern(benchBytes)), opts, true, "", nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := dst.Fetch(ctx, root); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("fetch", fetchBy(bn))
	b.Run("bitswap", fetchBy(cn))
	b.Run("small", func(b *testing.B) {
		opts := unixfs.DefaultOptions()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			data := make([]byte, 1024)
			copy(data, fmt.Sprintf("small file %d %d", i, time.Now().UnixNano()))
			root, err := a.Add(ctx, files.NewBytesFile(data), opts, true, "", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := bn.Cat(ctx, root, 0, -1, io.Discard, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
