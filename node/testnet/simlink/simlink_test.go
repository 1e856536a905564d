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

	"github.com/libp2p/go-libp2p/core/network"
)

// pair makes a connection between hosts 1 and 2 with the given shapes.
func pair(t *testing.T, n *Network, s1, s2 Shape) (*conn, *conn) {
	t.Helper()
	n.SetShape(AddrOf(1), s1)
	n.SetShape(AddrOf(2), s2)
	a, b := n.newConnPair(netip.AddrPortFrom(AddrOf(1), 1), netip.AddrPortFrom(AddrOf(2), 2))
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// readAt writes msg on w and returns how long until all of it arrives on r.
func transfer(t *testing.T, w, r *conn, msg []byte) time.Duration {
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
