package exchange

import (
	"context"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/protocol/unixfs"
)

// The transfer benchmarks move the same 256 MiB file (weft's default
// import: 1 MiB raw leaves) between two libp2p hosts on 127.0.0.1, with
// in-memory blockstores, three ways:
//
//	BenchmarkFetchNative   this package, from one provider
//	BenchmarkFetchNative3  this package, from three providers at once
//	BenchmarkFetchBitswap  boxo Bitswap, as weft uses it with other IPFS nodes
//	BenchmarkStreamCeiling the same bytes copied over one plain libp2p stream
//
// Run them together and compare MB/s:
//
//	go test -run '^$' -bench 'Fetch|Ceiling' -benchtime 3x -count 3 ./protocol/exchange/
const benchSize = 256 << 20

var benchData struct {
	once sync.Once
	src  *memBlocks
	root cid.Cid
	raw  [][]byte // the leaves' bytes, for the ceiling
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start: with both hosts in
// this process, it is what one transfer costs the machine.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

func benchFile(b *testing.B) (*memBlocks, cid.Cid) {
	benchData.once.Do(func() {
		src := newMem()
		root := addFile(b, src, randBytes(9, benchSize), unixfs.DefaultOptions())
		benchData.src, benchData.root = src, root
		for _, c := range dagBlocks(b, src, root, DAG()) {
			blk, _ := src.Get(context.Background(), c)
			benchData.raw = append(benchData.raw, blk.RawData())
		}
	})
	return benchData.src, benchData.root
}

func BenchmarkFetchNative(b *testing.B) {
	src, root := benchFile(b)
	a, h := newHost(b), newHost(b)
	serve(b, a, src)
	connect(b, h, a)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b, cpuTime())
	for range b.N {
		dst := newMem()
		f := newFetcher(b, dst, hostStreams{h}, nil)
		st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{a.ID()})
		if err != nil {
			b.Fatal(err)
		}
		if st.Bytes < benchSize {
			b.Fatalf("fetched %d bytes", st.Bytes)
		}
	}
}

// BenchmarkFetchNative3 fetches from three providers at once, split in
// units of the default size.
func BenchmarkFetchNative3(b *testing.B) {
	src, root := benchFile(b)
	h := newHost(b)
	var ids []peer.ID
	for range 3 {
		a := newHost(b)
		serve(b, a, src)
		connect(b, h, a)
		ids = append(ids, a.ID())
	}
	b.SetBytes(benchSize)
	b.ResetTimer()
	defer reportCPU(b, cpuTime())
	for range b.N {
		dst := newMem()
		f := newFetcher(b, dst, hostStreams{h}, nil)
		st, err := f.Fetch(context.Background(), root, DAG(), ids)
		if err != nil {
			b.Fatal(err)
		}
		if st.Bytes < benchSize {
			b.Fatalf("fetched %d bytes", st.Bytes)
		}
	}
}

func BenchmarkStreamCeiling(b *testing.B) {
	benchFile(b)
	a, h := newHost(b), newHost(b)
	const proto = "/weft/bench/ceiling"
	a.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		for _, blk := range benchData.raw {
			if _, err := s.Write(blk); err != nil {
				s.Reset()
				return
			}
		}
	})
	connect(b, h, a)
	var total int64
	for _, r := range benchData.raw {
		total += int64(len(r))
	}
	b.SetBytes(total)
	b.ResetTimer()
	defer reportCPU(b, cpuTime())
	for range b.N {
		s, err := h.NewStream(context.Background(), a.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, s)
		if err != nil || n != total {
			b.Fatalf("copied %d bytes: %v", n, err)
		}
		s.Close()
	}
}

type noRouting struct{}

func (noRouting) FindProvidersAsync(context.Context, cid.Cid, int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo)
	close(ch)
	return ch
}

func BenchmarkFetchBitswap(b *testing.B) {
	src, root := benchFile(b)
	a := newHost(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := bitswap.New(ctx, bsnet.NewFromIpfsHost(a), noRouting{}, src)
	defer server.Close()
	b.SetBytes(benchSize)
	b.ResetTimer()
	var cpu time.Duration
	defer func() { b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op") }()
	for range b.N {
		b.StopTimer()
		h := newHost(b)
		dst := newMem()
		client := bitswap.New(ctx, bsnet.NewFromIpfsHost(h), noRouting{}, dst)
		connect(b, h, a)
		dag := merkledag.NewDAGService(blockservice.New(dst, client))
		b.StartTimer()
		start := cpuTime()
		if err := merkledag.FetchGraph(ctx, root, dag, merkledag.Concurrency(32)); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		b.StopTimer()
		client.Close()
		h.Close()
		b.StartTimer()
	}
}
