package simlink

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/transport"
	ma "github.com/multiformats/go-multiaddr"
)

// hosts makes the transports of hosts 1 and 2 with the given shapes; host
// 2 listens on port 4001.
func hosts(t *testing.T, n *Network, s1, s2 Shape) (*Transport, *Transport, transport.Listener) {
	t.Helper()
	n.SetShape(AddrOf(1), s1)
	n.SetShape(AddrOf(2), s2)
	var trs [2]*Transport
	for i := range trs {
		key, _, err := ic.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		if trs[i], err = n.Transport(AddrOf(i+1))(key, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	l, err := trs[1].Listen(toMA(netip.AddrPortFrom(AddrOf(2), 4001)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return trs[0], trs[1], l
}

// connect dials host 2 from host 1 and returns both ends.
func connect(t *testing.T, tr1, tr2 *Transport, l transport.Listener) (transport.CapableConn, transport.CapableConn) {
	t.Helper()
	accepted := make(chan transport.CapableConn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	c1, err := tr1.Dial(t.Context(), l.Multiaddr(), tr2.id)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c2 := <-accepted
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return c1, c2
}

// pair opens a stream between hosts 1 and 2 with the given shapes.
func pair(t *testing.T, n *Network, s1, s2 Shape) (network.MuxedStream, network.MuxedStream) {
	t.Helper()
	tr1, tr2, l := hosts(t, n, s1, s2)
	c1, c2 := connect(t, tr1, tr2, l)
	a, err := c1.OpenStream(t.Context())
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	b, err := c2.AcceptStream()
	if err != nil {
		t.Fatalf("accept stream: %v", err)
	}
	return a, b
}

// readAt writes msg on w and returns how long until all of it arrives on r.
func transfer(t *testing.T, w, r network.MuxedStream, msg []byte) time.Duration {
	t.Helper()
	start := time.Now()
	go func() {
		if _, err := w.Write(msg); err != nil {
			t.Errorf("write: %v", err)
		}
	}()
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != string(msg) {
		t.Fatal("bytes changed on the way")
	}
	return time.Since(start)
}

func TestShapes(t *testing.T) {
	cases := []struct {
		name     string
		sender   Shape
		size     int
		min, max time.Duration
	}{
		{"no shape", Shape{}, 100, 0, 0},
		{"latency", Shape{Latency: 20 * time.Millisecond}, 100, 20 * time.Millisecond, 20 * time.Millisecond},
		{"jitter", Shape{Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}, 100, 15 * time.Millisecond, 25 * time.Millisecond},
		{"bandwidth", Shape{Bandwidth: 1 << 20}, 1 << 19, 500 * time.Millisecond, 500 * time.Millisecond},
		{"all lost", Shape{Latency: 10 * time.Millisecond, Loss: 1}, 100, 210 * time.Millisecond, 210 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := New(1)
				a, b := pair(t, n, tc.sender, Shape{Latency: time.Hour})
				msg := make([]byte, tc.size)
				for i := range msg {
					msg[i] = byte(i)
				}
				d := transfer(t, a, b, msg)
				if d < tc.min || d > tc.max {
					t.Fatalf("%d bytes took %v, want %v..%v", tc.size, d, tc.min, tc.max)
				}
			})
		})
	}
}

func TestOrderKeptUnderJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(2)
		a, b := pair(t, n, Shape{Latency: 20 * time.Millisecond, Jitter: 15 * time.Millisecond}, Shape{})
		go func() {
			for i := range 200 {
				a.Write([]byte{byte(i)})
				time.Sleep(time.Millisecond)
			}
		}()
		buf := make([]byte, 200)
		if _, err := io.ReadFull(b, buf); err != nil {
			t.Fatal(err)
		}
		for i, c := range buf {
			if c != byte(i) {
				t.Fatalf("byte %d is %d: order not kept", i, c)
			}
		}
	})
}

func TestPartitionStallsUntilHeal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(3)
		a, b := pair(t, n, Shape{Latency: 10 * time.Millisecond}, Shape{})
		n.Partition([][]netip.Addr{{AddrOf(1)}, {AddrOf(2)}})
		go func() {
			time.Sleep(5 * time.Second)
			n.Heal()
		}()
		if d := transfer(t, a, b, []byte("x")); d != 5*time.Second {
			t.Fatalf("delivered after %v, want at the heal (5s)", d)
		}
	})
}

func TestCloseAndDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(4)
		a, b := pair(t, n, Shape{Latency: 10 * time.Millisecond}, Shape{})
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past deadline: %v", err)
		}
		b.SetReadDeadline(time.Time{})
		a.Write([]byte("bye"))
		a.Close()
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "bye" {
			t.Fatalf("read after peer close: %q, %v", got, err)
		}
		if _, err := a.Write([]byte("x")); err == nil {
			t.Fatal("write after close succeeded")
		}
	})
}

// After Shutdown a dial fails at once, without the round trip a refused
// dial to a live network costs, and counts as refused.
func TestShutdownRefusesDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(5)
		n.SetShape(AddrOf(1), Shape{Latency: 20 * time.Millisecond})
		n.SetShape(AddrOf(2), Shape{Latency: 20 * time.Millisecond})
		tr := &Transport{net: n, ip: AddrOf(1)}
		raddr := toMA(netip.AddrPortFrom(AddrOf(2), 4001))
		start := time.Now()
		if _, err := tr.dial(t.Context(), raddr, "", &network.NullScope{}); err == nil {
			t.Fatal("dial to a host that does not listen succeeded")
		}
		if d := time.Since(start); d != 40*time.Millisecond {
			t.Fatalf("refused dial took %v, want one round trip (40ms)", d)
		}
		n.Shutdown()
		start = time.Now()
		_, err := tr.dial(t.Context(), raddr, "", &network.NullScope{})
		if err == nil || !strings.Contains(err.Error(), "shut down") {
			t.Fatalf("dial after Shutdown: %v, want refused as shut down", err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("dial after Shutdown took %v, want at once", d)
		}
		if st := n.Stats(); st.Dials != 2 || st.DialsRefused != 2 {
			t.Fatalf("stats %+v, want 2 dials, 2 refused", st)
		}
	})
}

// Connecting costs three round trips (TCP, the choice of security, TLS);
// the peer ID dialed must be the listener's.
func TestDialCostsHandshake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(6)
		tr1, tr2, l := hosts(t, n, Shape{Latency: 10 * time.Millisecond}, Shape{Latency: 20 * time.Millisecond})
		start := time.Now()
		c1, c2 := connect(t, tr1, tr2, l)
		if d := time.Since(start); d != 90*time.Millisecond {
			t.Fatalf("connecting took %v, want three round trips (90ms)", d)
		}
		if c1.RemotePeer() != tr2.id || c2.RemotePeer() != tr1.id || !c2.RemotePublicKey().Equals(tr1.pub) {
			t.Fatal("the ends do not name each other")
		}
		if _, err := tr1.Dial(t.Context(), l.Multiaddr(), tr1.id); err == nil || !strings.Contains(err.Error(), "not "+tr1.id.String()) {
			t.Fatalf("dial naming the wrong peer: %v", err)
		}
	})
}

// A reset reaches the peer's reads one latency later and its writes fail;
// a stream closed for writing still delivers what was written, then EOF.
func TestStreamResetAndHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(7)
		a, b := pair(t, n, Shape{Latency: 10 * time.Millisecond}, Shape{Latency: 10 * time.Millisecond})
		a.Write([]byte("req"))
		a.CloseWrite()
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "req" {
			t.Fatalf("read to EOF: %q, %v", got, err)
		}
		b.Write([]byte("resp"))
		b.Close()
		if got, err = io.ReadAll(a); err != nil || string(got) != "resp" {
			t.Fatalf("the answer after a half close: %q, %v", got, err)
		}

		a, b = pair(t, New(17), Shape{Latency: 10 * time.Millisecond}, Shape{Latency: 10 * time.Millisecond})
		start := time.Now()
		a.Reset()
		if _, err := b.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
			t.Fatalf("read after the peer's reset: %v", err)
		}
		if d := time.Since(start); d != 10*time.Millisecond {
			t.Fatalf("the reset arrived after %v, want one latency (10ms)", d)
		}
		if _, err := b.Write([]byte("x")); !errors.Is(err, network.ErrReset) {
			t.Fatalf("write after the peer's reset: %v", err)
		}
	})
}

// Closing a connection resets its streams; the peer's AcceptStream fails
// one latency later, and no stream is left registered.
func TestConnCloseReachesPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(8)
		tr1, tr2, l := hosts(t, n, Shape{Latency: 15 * time.Millisecond}, Shape{})
		c1, c2 := connect(t, tr1, tr2, l)
		if got := n.OpenConns(); got != 2 {
			t.Fatalf("OpenConns = %d with one connection, want its 2 ends", got)
		}
		s, _ := c1.OpenStream(t.Context())
		r, _ := c2.AcceptStream()
		start := time.Now()
		c1.Close()
		if _, err := c2.AcceptStream(); err == nil {
			t.Fatal("accept on a connection the peer closed succeeded")
		}
		if d := time.Since(start); d != 15*time.Millisecond {
			t.Fatalf("the close arrived after %v, want one latency (15ms)", d)
		}
		if _, err := r.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
			t.Fatalf("read on a stream of a closed connection: %v", err)
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, network.ErrReset) {
			t.Fatalf("write on a stream of a closed connection: %v", err)
		}
		if _, err := c1.OpenStream(t.Context()); err == nil {
			t.Fatal("open stream on a closed connection succeeded")
		}
		c2.Close()
		if m := c1.(*muxConn); len(m.streams) != 0 || n.OpenConns() != 0 {
			t.Fatalf("left registered: %d streams, %d connection ends", len(m.streams), n.OpenConns())
		}
	})
}

// A connection cut by a partition for StallTimeout is closed at both ends;
// one healed before that is not.
func TestStallTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(9)
		tr1, tr2, l := hosts(t, n, Shape{Latency: 10 * time.Millisecond}, Shape{})
		c1, c2 := connect(t, tr1, tr2, l)
		n.Partition([][]netip.Addr{{AddrOf(1)}, {AddrOf(2)}})
		time.Sleep(time.Minute)
		n.Heal()
		time.Sleep(StallTimeout)
		if c1.IsClosed() || c2.IsClosed() {
			t.Fatal("a connection healed in time was closed")
		}
		n.Partition([][]netip.Addr{{AddrOf(1)}, {AddrOf(2)}})
		time.Sleep(StallTimeout + time.Second)
		if !c1.IsClosed() || !c2.IsClosed() {
			t.Fatalf("after StallTimeout cut: closed %v, %v; want both", c1.IsClosed(), c2.IsClosed())
		}
	})
}

// Deliveries fall on whole milliseconds whatever the jitter, and stay
// within the jitter's bounds.
func TestDeliveriesOnQuantum(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(10)
		a, b := pair(t, n, Shape{Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}, Shape{})
		time.Sleep(337 * time.Microsecond) // off the millisecond grid
		for i := range 50 {
			start := time.Now()
			d := transfer(t, a, b, []byte{byte(i)})
			if at := start.Add(d); at.Round(Quantum) != at {
				t.Fatalf("delivery %d at %v: not on a whole millisecond", i, at)
			}
			if d < 15*time.Millisecond-Quantum || d > 25*time.Millisecond+Quantum {
				t.Fatalf("delivery %d after %v, want 20ms ± 5ms (± the quantum)", i, d)
			}
		}
	})
}

func TestAddrPort(t *testing.T) {
	ap := netip.AddrPortFrom(AddrOf(258), 40001)
	if got, err := addrPort(toMA(ap)); err != nil || got != ap {
		t.Fatalf("addrPort(toMA(%v)) = %v, %v", ap, got, err)
	}
	for _, s := range []string{"/ip6/::1/tcp/1", "/ip4/10.0.0.1/udp/1", "/ip4/10.0.0.1/tcp/1/ws", "/ip4/10.0.0.1"} {
		if _, err := addrPort(ma.StringCast(s)); err == nil {
			t.Errorf("addrPort(%s) accepted", s)
		}
	}
}

// A connection keeps one order across its streams: what is written on one
// stream never arrives before what was written earlier on another.
func TestOrderAcrossStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(11)
		tr1, tr2, l := hosts(t, n, Shape{Latency: 20 * time.Millisecond, Jitter: 15 * time.Millisecond}, Shape{})
		c1, c2 := connect(t, tr1, tr2, l)
		for i := range 30 {
			var ws [2]network.MuxedStream
			var rs [2]network.MuxedStream
			for k := range ws {
				ws[k], _ = c1.OpenStream(t.Context())
				rs[k], _ = c2.AcceptStream()
			}
			ws[0].Write([]byte{1})
			ws[1].Write([]byte{2})
			var at [2]time.Time
			done := make(chan int, 2)
			for k := range rs {
				go func() {
					rs[k].Read(make([]byte, 1))
					at[k] = time.Now()
					done <- k
				}()
			}
			<-done
			<-done
			if at[1].Before(at[0]) {
				t.Fatalf("round %d: the later write arrived %v before the earlier one", i, at[0].Sub(at[1]))
			}
		}
	})
}

// shareCPU queues each host's work after its earlier work, and slows it
// by the hosts busy beyond the cores when it starts.
func TestShareCPU(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(d float64) time.Time { return t0.Add(time.Duration(d * float64(time.Millisecond))) }
	a, b, c := AddrOf(1), AddrOf(2), AddrOf(3)
	type res struct {
		dst      netip.Addr
		at, want float64
	}
	for _, tc := range []struct {
		name  string
		cores int
		steps []res
	}{
		{"one host queues", 2, []res{{a, 0, 1}, {a, 0, 2}, {a, 0.5, 3}, {a, 10, 11}}},
		{"within the cores, full speed", 2, []res{{a, 0, 1}, {b, 0, 1}, {a, 0, 2}}},
		{"beyond the cores, shared", 1, []res{{a, 0, 1}, {b, 0, 2}, {c, 0.5, 3.5}, {a, 5, 6}}},
		{"idle again, full speed", 1, []res{{a, 0, 1}, {b, 0.5, 2.5}, {a, 3, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(1)
			n.SetCPU(CPU{Cores: tc.cores, PerWrite: time.Millisecond})
			n.mu.Lock()
			defer n.mu.Unlock()
			for i, s := range tc.steps {
				if got := n.shareCPU(s.dst, ms(s.at)); !got.Equal(ms(s.want)) {
					t.Fatalf("work %d for %v at %vms: done at %v, want %vms", i, s.dst, s.at, got.Sub(t0), s.want)
				}
			}
		})
	}
}
