package exchange

import (
	"bufio"
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestServerPerPeerLimit: a peer's streams past MaxStreamsPerPeer get
// CodeBusy while another peer is still served, and the slots come back
// when the first peer's streams end.
func TestServerPerPeerLimit(t *testing.T) {
	s, err := NewServer(ServerConfig{Blocks: newMem(), MaxStreams: 8, MaxStreamsPerPeer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peers := newPipes(t)
	peers.peers["greedy"] = func(st Stream) { s.Handle(st, "greedy") }
	peers.peers["other"] = func(st Stream) { s.Handle(st, "other") }
	active := func() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.streams) }

	var held []Stream
	for range 2 {
		st, _ := peers.NewStream(context.Background(), "greedy")
		held = append(held, st)
	}
	waitFor(t, 5*time.Second, func() bool { return active() == 2 })
	st, _ := peers.NewStream(context.Background(), "greedy")
	if fr, err := ReadFrame(newReader(st), nil); err != nil || fr.Type != FrameError || fr.Code != CodeBusy {
		t.Fatalf("third stream of one peer: got %+v, %v; want CodeBusy", fr, err)
	}
	st.Close()

	// Another peer is still served: its request gets an answer, not Busy.
	other, _ := peers.NewStream(context.Background(), "other")
	c := rawCid("absent")
	if err := WriteRequest(other, Request{Wants: []Want{{Cid: c, Scope: Block()}}}); err != nil {
		t.Fatal(err)
	}
	if fr, err := ReadFrame(newReader(other), nil); err != nil || fr.Type != FrameMissing {
		t.Fatalf("other peer: got %+v, %v; want Missing", fr, err)
	}
	other.Close()

	for _, h := range held {
		h.Close()
	}
	waitFor(t, 5*time.Second, func() bool { return active() == 0 })
	again, _ := peers.NewStream(context.Background(), "greedy")
	defer again.Close()
	waitFor(t, 5*time.Second, func() bool { return active() == 1 })
	if got := s.Stats().Busy; got != 1 {
		t.Errorf("Busy = %d, want 1", got)
	}
}

// readSlowly reads st in pieces of n bytes, every, until it fails or ends,
// and returns the bytes read and the error (io.EOF for a clean end).
func readSlowly(st Stream, n int, every time.Duration) (int, error) {
	buf := make([]byte, n)
	total := 0
	for {
		k, err := io.ReadFull(st, buf)
		total += k
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return total, err
		}
		time.Sleep(every)
	}
}

// TestTricklingReaderCutOff: a requester that takes its answer slower
// than the minimum rate (WriteChunk per WriteTimeout) is cut off about
// WriteTimeout after it falls behind, whether it takes 1 KiB every 10 s or
// 2 KiB every second; one that keeps above the rate gets the whole answer.
// Before the minimum rate, a reader taking 2 KiB a second kept its slot
// for the whole answer, since each write (16 KiB at a time) finished
// within the idle timeout. Time is synctest's, so the test takes no wall
// time for the minutes it simulates.
func TestTricklingReaderCutOff(t *testing.T) {
	opts := smallOpts()
	opts.ChunkSize = 8 << 10 // small blocks: small writes, which a plain idle timer lets through
	data := randBytes(7, 512<<10)
	cases := []struct {
		name  string
		piece int
		every time.Duration
		cut   bool
	}{
		{"1KiB every 10s", 1 << 10, 10 * time.Second, true},
		{"2KiB every second", 2 << 10, time.Second, true},
		{"32KiB every second", 32 << 10, time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bs := newMem()
				root := addFile(t, bs, data, opts)
				s, err := NewServer(ServerConfig{Blocks: bs})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				peers := newPipes(t)
				peers.peers["s"] = func(st Stream) { s.Handle(st, "reader") }
				st, _ := peers.NewStream(context.Background(), "s")
				defer st.Close()
				start := time.Now()
				go WriteRequest(st, Request{Wants: []Want{{Cid: root, Scope: DAG()}}})
				n, err := readSlowly(st, tc.piece, tc.every)
				took := time.Since(start)
				if !tc.cut {
					if s.Stats().Slow != 0 || n < len(data) {
						t.Fatalf("a reader above the minimum rate was cut off after %d bytes, %v (%v)", n, took, err)
					}
					return
				}
				// Cut off: WriteTimeout of grace plus what the bytes read
				// earned, and the watchdog's check period (WriteTimeout/8).
				if s.Stats().Slow != 1 || took > 30*time.Second || n >= len(data) {
					t.Fatalf("trickling reader: read %d of %d bytes in %v, Slow = %d; want cut off within 30s", n, len(data), took, s.Stats().Slow)
				}
				t.Logf("cut off after %v, %d bytes", took, n)
				synctest.Wait()
				if h := s.Stats().Held; h != 0 {
					t.Errorf("Held = %d after the stream ended, want 0", h)
				}
			})
		})
	}
}

// TestServerHeldBounded: while streams stall (their requesters read
// nothing), what the Server holds for them stays within the per-stream
// bound documented on ServerStats, and all of it is given back when they
// are cut off.
func TestServerHeldBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newMem()
		root := addFile(t, bs, randBytes(8, 4<<20), smallOpts())
		const streams = 8
		s, err := NewServer(ServerConfig{Blocks: bs, MaxStreamsPerPeer: streams})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		peers := newPipes(t)
		peers.peers["s"] = func(st Stream) { s.Handle(st, peer.ID("staller")) }
		for range streams {
			st, _ := peers.NewStream(context.Background(), "s")
			defer st.Close()
			go WriteRequest(st, Request{Wants: []Want{{Cid: root, Scope: DAG()}}})
			go bufio.NewReader(st).Peek(1) // reads the first bytes, then nothing
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		// The bound of ServerStats.Held for one peer: its streams'
		// buffers, its share of the read-ahead budget, and PeerReads
		// blocks being read (smallOpts: leaves of 64 KiB and a little
		// framing, inner nodes far smaller).
		bound := int64(streams*StreamBuffers) + s.cfg.PeerReadAheadBytes + PeerReads*(64<<10+1<<10)
		if st := s.Stats(); st.MaxHeld > bound || st.Held == 0 {
			t.Fatalf("held %d (peak %d) for %d stalled streams, bound %d", st.Held, st.MaxHeld, streams, bound)
		}
		time.Sleep(time.Minute) // the write watchdogs cut them off
		synctest.Wait()
		if st := s.Stats(); st.Held != 0 || st.Slow != streams {
			t.Fatalf("after the cut: Held %d, Slow %d; want 0, %d", st.Held, st.Slow, streams)
		}
	})
}

// TestFetchPastBusyStreams: a provider that serves a requester fewer
// streams than the fetch opens (MaxStreamsPerPeer 2, StreamsPerProvider
// 3) refuses one as busy; the fetch goes on over the other two and gets
// everything from that provider, rather than dropping it.
func TestFetchPastBusyStreams(t *testing.T) {
	src := newMem()
	root := addFile(t, src, randBytes(9, 4<<20), smallOpts())
	want := dagBlocks(t, src, root, DAG())
	s, err := NewServer(ServerConfig{Blocks: src, MaxStreamsPerPeer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := newHost(t), newHost(t)
	a.SetStreamHandler(ProtocolID, func(st network.Stream) { s.Handle(st, st.Conn().RemotePeer()) })
	connect(t, b, a)
	dst := newMem()
	f := newFetcher(t, dst, hostStreams{b}, func(c *Config) { c.StreamsPerProvider = 3; c.UnitBytes = 256 << 10 })
	st, err := f.Fetch(context.Background(), root, DAG(), []peer.ID{a.ID()})
	if err != nil {
		t.Fatalf("fetch from a provider that refused one stream: %v", err)
	}
	if st.Blocks != int64(len(want)) {
		t.Fatalf("fetched %d blocks, want %d", st.Blocks, len(want))
	}
	if s.Stats().Busy == 0 {
		t.Fatal("the provider never refused a stream; the test tests nothing")
	}
}
