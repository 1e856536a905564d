package exchange

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/protocol/unixfs"
)

// TestRoundTrip fetches a 20 MiB file between two libp2p hosts, in both
// UnixFS layouts weft writes (raw leaves, and the legacy dag-pb leaves with
// a deeper tree), and checks the bytes, the block count and the batching.
func TestRoundTrip(t *testing.T) {
	data := randBytes(1, 20<<20)
	for _, tc := range []struct {
		name string
		opts func() unixfs.Options
	}{
		{"v1-raw-leaves", unixfs.DefaultOptions},
		{"small-dag-pb", smallOpts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMem()
			root := addFile(t, src, data, tc.opts())
			want := dagBlocks(t, src, root, DAG())

			a, b := newHost(t), newHost(t)
			srv := serve(t, a, src)
			connect(t, b, a)
			dst := newMem()
			f := newFetcher(t, dst, hostStreams{b}, nil)
			st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{a.ID()})
			if err != nil {
				t.Fatal(err)
			}
			if st.Blocks != int64(len(want)) || dst.len() != len(want) {
				t.Fatalf("fetched %d blocks (store has %d), want %d", st.Blocks, dst.len(), len(want))
			}
			// 20 MiB in units of 16 MiB over two streams: no per-block
			// round trip.
			if st.Requests > 3 {
				t.Errorf("%d requests for %d blocks, want at most 3", st.Requests, len(want))
			}
			if !bytes.Equal(catFile(t, dst, root), data) {
				t.Fatal("fetched file differs")
			}
			dst.verifyAll(t)
			if n := dst.puts.Load(); n >= int64(len(want)) && len(want) > 8 {
				t.Logf("note: %d PutMany calls for %d blocks (writer kept up with every block)", n, len(want))
			}
			if ss := srv.Stats(); ss.Blocks != int64(len(want)) {
				t.Errorf("server sent %d blocks, want %d", ss.Blocks, len(want))
			}
			// A second fetch finds everything held and asks nobody.
			st, err = f.Fetch(context.Background(), root, DAG(), nil)
			if err != nil || st.Held != int64(len(want)) || st.Requests != 0 {
				t.Fatalf("refetch: %+v, %v", st, err)
			}
		})
	}
}

// TestOneBlock is the small-content path: one request, one frame, no
// batching delay.
func TestOneBlock(t *testing.T) {
	src := newMem()
	data := randBytes(2, 1024)
	root := addFile(t, src, data, unixfs.DefaultOptions())
	a, b := newHost(t), newHost(t)
	serve(t, a, src)
	connect(t, b, a)
	f := newFetcher(t, newMem(), hostStreams{b}, nil)
	// Warm the connection's protocol negotiation once, as a node that has
	// talked to the peer before would have.
	if _, err := f.Fetch(context.Background(), root, Block(), []peer.ID{a.ID()}); err != nil {
		t.Fatal(err)
	}
	var best time.Duration
	for range 5 {
		dst := newMem()
		f := newFetcher(t, dst, hostStreams{b}, nil)
		start := time.Now()
		st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{a.ID()})
		d := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if st.Blocks != 1 || st.Requests != 1 || !bytes.Equal(catFile(t, dst, root), data) {
			t.Fatalf("stats %+v", st)
		}
		if best == 0 || d < best {
			best = d
		}
	}
	t.Logf("1 KiB fetch over libp2p on 127.0.0.1: best of 5 %v", best)
	if best > 10*time.Millisecond && !raceEnabled {
		t.Errorf("1 KiB fetch took %v, want <= 10ms", best)
	}
}

// TestRange fetches the blocks behind a byte range and nothing else.
func TestRange(t *testing.T) {
	src := newMem()
	data := randBytes(3, 5<<20)
	root := addFile(t, src, data, smallOpts())
	peers := newPipes(t)
	peers.peers["p"] = serverPeer(t, src)
	for _, rg := range []struct{ off, n int64 }{
		{0, 1}, {100_000, 200_000}, {3<<20 + 5, 1 << 20}, {int64(len(data)) - 10, -1}, {1 << 20, 0},
	} {
		dst := newMem()
		f := newFetcher(t, dst, peers, nil)
		st, err := f.Fetch(context.Background(), root, Range(rg.off, rg.n), []peer.ID{"p"})
		if err != nil {
			t.Fatal(err)
		}
		want := dagBlocks(t, src, root, Range(rg.off, rg.n))
		if st.Blocks != int64(len(want)) {
			t.Errorf("range %v: fetched %d blocks, want %d", rg, st.Blocks, len(want))
		}
		if all := len(dagBlocks(t, src, root, DAG())); len(want) >= all/2 {
			t.Errorf("range %v: %d of %d blocks: not selective", rg, len(want), all)
		}
		// Independently of the walk: the store holds exactly the nodes
		// whose byte span meets the range, and their leaves hold its bytes.
		n := rg.n
		if n < 0 {
			n = int64(len(data)) - rg.off
		}
		need, got := spans(t, src, root, uint64(rg.off), uint64(rg.off+n))
		if len(need) != dst.len() {
			t.Errorf("range %v: stored %d blocks, the range needs %d", rg, dst.len(), len(need))
		}
		for _, c := range need {
			if ok, _ := dst.Has(context.Background(), c); !ok {
				t.Errorf("range %v: %s not fetched", rg, c)
			}
		}
		if !bytes.Equal(got, data[rg.off:rg.off+n]) {
			t.Fatalf("range %v: wrong bytes", rg)
		}
	}
}

// spans returns the nodes of the file at root whose byte span meets
// [lo, hi) (the root always), and the file's bytes in that range.
func spans(t *testing.T, bs *memBlocks, root cid.Cid, lo, hi uint64) ([]cid.Cid, []byte) {
	var need []cid.Cid
	var out []byte
	var visit func(c cid.Cid, start uint64) uint64
	visit = func(c cid.Cid, start uint64) uint64 {
		nd, err := dagOf(bs).Get(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		fsn, err := ft.ExtractFSNode(nd)
		if err != nil {
			t.Fatal(err)
		}
		size := fsn.FileSize()
		if start+size <= lo || start >= hi {
			if c != root {
				return size
			}
		}
		need = append(need, c)
		if d := fsn.Data(); len(d) > 0 {
			from, to := max(lo, start), min(hi, start+uint64(len(d)))
			if from < to {
				out = append(out, d[from-start:to-start]...)
			}
		}
		pos := start + uint64(len(fsn.Data()))
		for _, l := range nd.Links() {
			pos += visit(l.Cid, pos)
		}
		return size
	}
	visit(root, 0)
	return need, out
}

// TestBadProviders: a provider that sends a wrong block, blocks out of
// order, too many blocks or an oversize frame is dropped at that point,
// with an error naming it; nothing unverified is stored, and another
// provider finishes the job.
func TestBadProviders(t *testing.T) {
	src := newMem()
	data := randBytes(4, 2<<20)
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	get := func(c cid.Cid) []byte {
		b, _ := src.Get(context.Background(), c)
		return b.RawData()
	}
	block := func(c cid.Cid) []byte { return AppendFrame(nil, Frame{Type: FrameBlock, Data: get(c)}) }
	end := AppendFrame(nil, Frame{Type: FrameEnd})

	cases := []struct {
		name   string
		script func(w io.Writer)
		want   error
		stored int // blocks the bad provider gets stored
	}{
		{"wrong first block", func(w io.Writer) {
			w.Write(AppendFrame(nil, Frame{Type: FrameBlock, Data: []byte("not the block")}))
		}, ErrBadBlock, 0},
		{"corrupt block midway", func(w io.Writer) {
			for _, c := range order[:5] {
				w.Write(block(c))
			}
			bad := bytes.Clone(get(order[5]))
			bad[len(bad)/2] ^= 1
			w.Write(AppendFrame(nil, Frame{Type: FrameBlock, Data: bad}))
		}, ErrBadBlock, 5},
		{"out of order", func(w io.Writer) {
			w.Write(block(order[0]))
			w.Write(block(order[1]))
			w.Write(block(order[3]))
			w.Write(block(order[2]))
		}, ErrBadBlock, 2},
		{"too many blocks", func(w io.Writer) {
			for _, c := range order {
				w.Write(block(c))
			}
			w.Write(block(order[1]))
			w.Write(end)
		}, nil, -1}, // everything arrived; the extra block only marks the peer bad
		{"oversize frame", func(w io.Writer) {
			w.Write(block(order[0]))
			w.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, byte(FrameBlock)}) // claims 4 GiB
			w.Write(make([]byte, 1<<16))
		}, ErrProtocol, 1},
		{"garbage frame", func(w io.Writer) {
			w.Write([]byte{3, 0x7f, 1, 2})
		}, ErrProtocol, 0},
		{"missing for another cid", func(w io.Writer) {
			w.Write(AppendFrame(nil, Frame{Type: FrameMissing, Cid: order[3]}))
		}, ErrProtocol, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peers := newPipes(t)
			peers.peers["bad"] = scriptedPeer(func(_ Request, w io.Writer) { tc.script(w) })
			dst := newMem()
			f := newFetcher(t, dst, peers, nil)
			var before, after runtimeMem
			before.read()
			st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"bad"})
			after.read()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				err = st.Peers["bad"].Err
			} else if !errors.Is(err, tc.want) || !errors.Is(err, ErrIncomplete) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Peer != "bad" || !pe.Bad() {
				t.Fatalf("err %v does not name the bad peer", err)
			}
			dst.verifyAll(t)
			if tc.stored >= 0 && dst.len() != tc.stored {
				t.Errorf("stored %d blocks, want %d", dst.len(), tc.stored)
			}
			if d := after.total - before.total; d > 16<<20 {
				t.Errorf("a bad provider made the fetch allocate %d MiB", d>>20)
			}
			if st.Peers["bad"].Err == nil {
				t.Error("Stats.Peers does not record the failure")
			}

			// With an honest provider beside it, the fetch completes.
			peers.peers["good"] = serverPeer(t, src)
			dst2 := newMem()
			f2 := newFetcher(t, dst2, peers, func(c *Config) { c.UnitBytes = 256 << 10 })
			if _, err := f2.Fetch(context.Background(), root, DAG(), []peer.ID{"bad", "good"}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(catFile(t, dst2, root), data) {
				t.Fatal("wrong bytes")
			}
			dst2.verifyAll(t)
			if f.Totals().BadPeers != 1 {
				t.Errorf("totals %+v", f.Totals())
			}
		})
	}
}

// TestMissing: a provider that lacks blocks says so; another fills in, or
// the fetch reports what is missing.
func TestMissing(t *testing.T) {
	src := newMem()
	data := randBytes(5, 1<<20)
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	partial := src.clone()
	partial.drop(func(c cid.Cid) bool { return !c.Equals(order[3]) && !c.Equals(order[7]) })

	peers := newPipes(t)
	peers.peers["partial"] = serverPeer(t, partial)
	peers.peers["full"] = serverPeer(t, src)

	dst := newMem()
	f := newFetcher(t, dst, peers, nil)
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"partial"})
	var fe *FetchError
	if !errors.As(err, &fe) || fe.Missing != 2 || !fe.First.Equals(order[3]) {
		t.Fatalf("err = %v", err)
	}
	if st.Peers["partial"].Missing != 2 || dst.len() != len(order)-2 {
		t.Fatalf("stats %+v, stored %d", st, dst.len())
	}
	// The rest comes from the full provider; nothing is asked twice.
	st, err = f.Fetch(context.Background(), root, DAG(), []peer.ID{"partial", "full"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 2 || st.Held != int64(len(order)-2) {
		t.Fatalf("resume stats %+v", st)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
}

// TestMissingStartsSpare: with one provider in use at a time, a provider
// that lacks blocks brings in the next one, which has them.
func TestMissingStartsSpare(t *testing.T) {
	src := newMem()
	data := randBytes(9, 1<<20)
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	partial := src.clone()
	partial.drop(func(c cid.Cid) bool { return !c.Equals(order[0]) }) // the root only

	peers := newPipes(t)
	peers.peers["partial"] = serverPeer(t, partial)
	peers.peers["full"] = serverPeer(t, src)
	dst := newMem()
	f := newFetcher(t, dst, peers, func(c *Config) { c.MaxProviders = 1 })
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"partial", "full"})
	if err != nil {
		t.Fatalf("fetch: %v (stats %+v)", err, st)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
}

// TestStall: a provider that goes quiet loses its work to the others.
func TestStall(t *testing.T) {
	src := newMem()
	data := randBytes(6, 2<<20)
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	peers := newPipes(t)
	quiet := make(chan struct{})
	t.Cleanup(func() { close(quiet) }) // before peers waits for its goroutines
	peers.peers["slow"] = scriptedPeer(func(_ Request, w io.Writer) {
		b, _ := src.Get(context.Background(), order[0])
		w.Write(AppendFrame(nil, Frame{Type: FrameBlock, Data: b.RawData()}))
		<-quiet
	})
	peers.peers["good"] = serverPeer(t, src)
	dst := newMem()
	f := newFetcher(t, dst, peers, func(c *Config) { c.StallTimeout = 200 * time.Millisecond })
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"slow", "good"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
	if e := st.Peers["slow"].Err; e != nil && !errors.Is(e, ErrStalled) {
		t.Fatalf("slow peer error %v", e)
	}
	if got := st.Peers["slow"].Blocks + st.Peers["good"].Blocks; got != int64(len(order)) {
		t.Errorf("%d blocks received for %d: something was fetched twice", got, len(order))
	}
}

// TestProvidersKilled fetches from 3 libp2p providers and kills one half
// way: the fetch completes, byte-identical, and no block is fetched twice.
// Then a fetch whose only provider dies resumes from another without
// refetching what it got.
func TestProvidersKilled(t *testing.T) {
	data := randBytes(7, 16<<20)
	src := newMem()
	root := addFile(t, src, data, smallOpts())
	order := dagBlocks(t, src, root, DAG())
	total := len(order)

	b := newHost(t)
	dst := newMem()
	var ids []peer.ID
	var victim *memBlocks
	for i := range 3 {
		h := newHost(t)
		bs := src.clone()
		if i == 1 {
			victim = bs
			var once sync.Once
			bs.onGet = func(cid.Cid) {
				// Killed half way through its share (a third of the DAG),
				// so half way through the fetch: counted on its side, as
				// the requester writes in batches of several MiB.
				if bs.gets.Load() >= int64(total/6) {
					once.Do(func() { go h.Close() })
				}
			}
		}
		serve(t, h, bs)
		connect(t, b, h)
		ids = append(ids, h.ID())
	}
	f := newFetcher(t, dst, hostStreams{b}, func(c *Config) { c.UnitBytes = 1 << 20 })
	st, err := f.Fetch(context.Background(), root, DAG(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
	var sum int64
	for p, ps := range st.Peers {
		t.Logf("provider %s: %d blocks, %d requests, err %v", p.ShortString(), ps.Blocks, ps.Requests, ps.Err)
		sum += ps.Blocks
	}
	if sum != int64(total) || st.Blocks != int64(total) || dst.written.Load() != int64(total) {
		t.Errorf("received %d, wrote %d blocks for a DAG of %d: some were fetched twice", sum, dst.written.Load(), total)
	}
	if ps := st.Peers[ids[1]]; ps.Err == nil || ps.Blocks == 0 {
		t.Errorf("the killed provider: %+v", ps)
	}
	t.Logf("the victim served %d blocks before it was killed", victim.gets.Load())

	// Resume across fetches: the only provider dies; a later fetch from
	// another continues where the first stopped.
	h1, h2 := newHost(t), newHost(t)
	bs1 := src.clone()
	var served atomic.Int64
	bs1.onGet = func(cid.Cid) {
		if served.Add(1) == int64(total/2) {
			go h1.Close()
		}
	}
	serve(t, h1, bs1)
	serve(t, h2, src.clone())
	connect(t, b, h1)
	connect(t, b, h2)
	dst = newMem()
	f = newFetcher(t, dst, hostStreams{b}, nil)
	st, err = f.Fetch(context.Background(), root, DAG(), []peer.ID{h1.ID()})
	if err == nil || !errors.Is(err, ErrIncomplete) {
		t.Fatalf("fetch from a dying provider: %v", err)
	}
	got := dst.len()
	if got == 0 || got >= total {
		t.Fatalf("stored %d of %d before the provider died", got, total)
	}
	st, err = f.Fetch(context.Background(), root, DAG(), []peer.ID{h2.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Held != int64(got) || st.Blocks != int64(total-got) {
		t.Fatalf("resume: held %d fetched %d, want %d and %d", st.Held, st.Blocks, got, total-got)
	}
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes after resume")
	}
}

// TestCancel: a cancelled fetch returns promptly with the context's error.
func TestCancel(t *testing.T) {
	src := newMem()
	root := addFile(t, src, randBytes(8, 1<<20), smallOpts())
	peers := newPipes(t)
	quiet := make(chan struct{})
	t.Cleanup(func() { close(quiet) }) // before peers waits for its goroutines
	peers.peers["quiet"] = scriptedPeer(func(Request, io.Writer) { <-quiet })
	f := newFetcher(t, newMem(), peers, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := f.Fetch(ctx, root, DAG(), []peer.ID{"quiet"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// TestServerLimits: a malformed request gets CodeBadRequest, and streams
// over MaxStreams get CodeBusy.
func TestServerLimits(t *testing.T) {
	s, err := NewServer(ServerConfig{Blocks: newMem(), MaxStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peers := newPipes(t)
	peers.peers["s"] = func(st Stream) { s.Handle(st, "x") }

	st, _ := peers.NewStream(context.Background(), "s")
	st.Write([]byte{3, 0xff, 0xff, 0xff})
	fr, err := ReadFrame(newReader(st), nil)
	if err != nil || fr.Type != FrameError || fr.Code != CodeBadRequest {
		t.Fatalf("got %+v, %v", fr, err)
	}
	st.Close()
	active := func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.streams) }
	waitFor(t, time.Second, func() bool { return s.Stats().Streams == 1 && active() == 0 })

	hold, _ := peers.NewStream(context.Background(), "s")
	defer hold.Close()
	waitFor(t, time.Second, func() bool { return active() == 1 })
	st, _ = peers.NewStream(context.Background(), "s")
	fr, err = ReadFrame(newReader(st), nil)
	if err != nil || fr.Type != FrameError || fr.Code != CodeBusy {
		t.Fatalf("got %+v, %v", fr, err)
	}
	st.Close()
}

// slowGetter serves each block after a delay.
type slowGetter struct {
	Getter
	delay time.Duration
}

func (s slowGetter) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	time.Sleep(s.delay)
	return s.Getter.Get(ctx, c)
}

// TestSlowProviderPreempted: a provider far slower than another loses the
// request it holds once the fast one runs out of work, and the fetch ends
// long before the slow one would have finished.
func TestSlowProviderPreempted(t *testing.T) {
	src := newMem()
	data := randBytes(12, 4<<20)
	root := addFile(t, src, data, smallOpts())
	total := len(dagBlocks(t, src, root, DAG()))
	peers := newPipes(t)
	peers.peers["slow"] = serverPeer(t, slowGetter{src, 200 * time.Millisecond})
	peers.peers["fast"] = serverPeer(t, src)
	dst := newMem()
	f := newFetcher(t, dst, peers, func(c *Config) {
		c.UnitBytes = 1 << 20
		// One lane each: with several, the fast provider's lanes can take
		// every unit before the slow one's first request.
		c.StreamsPerProvider = 1
	})
	start := time.Now()
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{"slow", "fast"})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatal("wrong bytes")
	}
	slow := st.Peers["slow"]
	t.Logf("in %v: slow %+v, fast %+v", d, slow, st.Peers["fast"])
	if slow.Preempted == 0 || slow.Err != nil {
		t.Errorf("the slow provider was not preempted: %+v", slow)
	}
	// The fast provider took over the slow one's work: it delivered most
	// of the DAG (no wall-clock assertion: the machine may be loaded).
	if fast := st.Peers["fast"]; fast.Blocks <= slow.Blocks {
		t.Errorf("fast provider sent %d blocks, slow %d: work did not move", fast.Blocks, slow.Blocks)
	}
	if got := slow.Blocks + st.Peers["fast"].Blocks; got != int64(total) {
		t.Errorf("%d blocks received for %d", got, total)
	}
}

// viewBlocks adds boxo's Viewer to memBlocks, as weft's store has it.
type viewBlocks struct{ *memBlocks }

func (v viewBlocks) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	b, err := v.Get(ctx, c)
	if err != nil {
		return err
	}
	return fn(b.RawData())
}

// TestServerViewer serves through View (the bytes are only lent to the
// callback) and reads blocks of every size.
func TestServerViewer(t *testing.T) {
	src := newMem()
	data := randBytes(13, 3<<20+17)
	root := addFile(t, src, data, unixfs.DefaultOptions())
	peers := newPipes(t)
	peers.peers["v"] = serverPeer(t, viewBlocks{src})
	dst := newMem()
	st, err := newFetcher(t, dst, peers, nil).Fetch(context.Background(), root, DAG(), []peer.ID{"v"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 5 || !bytes.Equal(catFile(t, dst, root), data) {
		t.Fatalf("stats %+v", st)
	}
}
