package testnet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// An IPv4/UDP frame 10.77.3.1 -> 10.77.3.254, an ARP request from
// 10.77.3.1 for 10.77.3.2, and the IPv4 frame behind a VLAN tag.
var (
	frameIPv4 = mustHex("ffffffffffff020000000001" + "0800" + "45000020000040004011" + "0000" + "0a4d0301" + "0a4d03fe" + "0035003500000000")
	frameARP  = mustHex("ffffffffffff020000000001" + "0806" + "0001080006040001" + "020000000001" + "0a4d0301" + "000000000000" + "0a4d0302")
	frameVLAN = mustHex("ffffffffffff020000000001" + "8100" + "0005" + "0800" + "45000020000040004011" + "0000" + "0a4d0301" + "0a4d03fe" + "0035003500000000")
)

func TestFrameAddrs(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name     string
		frame    []byte
		src, dst netip.Addr
		ok       bool
	}{
		{"ipv4", frameIPv4, a("10.77.3.1"), a("10.77.3.254"), true},
		{"arp", frameARP, a("10.77.3.1"), a("10.77.3.2"), true},
		{"vlan", frameVLAN, a("10.77.3.1"), a("10.77.3.254"), true},
		{"short", frameIPv4[:20], netip.Addr{}, netip.Addr{}, false},
		{"ipv4 header cut", frameIPv4[:14+19], netip.Addr{}, netip.Addr{}, false},
		{"ihl beyond frame", append(append([]byte{}, frameIPv4[:14]...), append([]byte{0x4f}, frameIPv4[15:14+20]...)...), netip.Addr{}, netip.Addr{}, false},
		{"ipv6", append(append(append([]byte{}, frameIPv4[:12]...), 0x86, 0xdd), make([]byte, 40)...), netip.Addr{}, netip.Addr{}, false},
		{"empty", nil, netip.Addr{}, netip.Addr{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst, ok := frameAddrs(tc.frame)
			if ok != tc.ok || src != tc.src || dst != tc.dst {
				t.Errorf("got %v %v %v, want %v %v %v", src, dst, ok, tc.src, tc.dst, tc.ok)
			}
		})
	}
}

// FuzzShapedFrame: the shaper reads every frame a node sends, so the
// decoder must take any bytes without panicking, and only say ok for
// frames long enough to hold the addresses it returns.
func FuzzShapedFrame(f *testing.F) {
	for _, s := range [][]byte{frameIPv4, frameARP, frameVLAN, frameIPv4[:16], {}, make([]byte, 14)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		src, dst, ok := frameAddrs(frame)
		if !ok {
			if src.IsValid() || dst.IsValid() {
				t.Fatal("addresses returned with ok false")
			}
			return
		}
		if len(frame) < 14+20 || !src.Is4() || !dst.Is4() {
			t.Fatalf("ok for a %d-byte frame: %v %v", len(frame), src, dst)
		}
	})
}

// needNetnsTAP skips unless namespaces and TAP devices can be made.
func needNetnsTAP(t *testing.T) {
	t.Helper()
	if why := canNetns(); why != "" {
		t.Skipf("needs network namespaces: %s", why)
	}
	if why := tapAvailable(); why != "" {
		t.Skipf("needs TAP devices: %s", why)
	}
}

// ipCmds runs ip commands, failing the test on the first error.
func ipCmds(t testing.TB, steps ...[]string) {
	t.Helper()
	for _, a := range steps {
		if out, err := exec.Command("ip", a...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", a, err, out)
		}
	}
}

// udpEcho answers every datagram on 10.99.0.2:7 inside ns until the test
// ends.
func udpEcho(t *testing.T, ns, addr string) {
	t.Helper()
	var c net.PacketConn
	if err := inNetns(ns, func() (err error) { c, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(buf[:n], from)
		}
	}()
}

// udpRTTs sends n pings from inside ns to addr and returns the round
// trips of those answered (a lost ping times out after 1 s).
func udpRTTs(t *testing.T, ns, addr string, n int) []time.Duration {
	t.Helper()
	var c net.Conn
	if err := inNetns(ns, func() (err error) { c, err = net.Dial("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []time.Duration
	buf := make([]byte, 64)
	for i := range n {
		msg := []byte{byte(i), byte(i >> 8), 'p'}
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			k, err := c.Read(buf)
			if err != nil {
				break // lost
			}
			if k == 3 && buf[0] == msg[0] && buf[1] == msg[1] {
				out = append(out, time.Since(start))
				break
			}
		}
	}
	return out
}

func medianOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// tapPairs makes a bridge namespace and two node namespaces a (10.99.0.1)
// and b (10.99.0.2) whose links are TAP pairs on the bridge, ports p1 and
// p2, as a delay-line testnet builds them; the test's cleanup deletes them.
// The namespaces have no link to this machine.
func tapPairs(tb testing.TB) (sw, a, b string) {
	tb.Helper()
	id := newID()
	sw, a, b = "wts"+id+"-sw", "wts"+id+"-a", "wts"+id+"-b"
	tb.Cleanup(func() {
		for _, ns := range []string{a, b, sw} {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	ipCmds(tb,
		[]string{"netns", "add", sw}, []string{"netns", "add", a}, []string{"netns", "add", b},
		[]string{"-n", sw, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", sw, "link", "set", "br0", "up"},
	)
	for i, ns := range []string{a, b} {
		port := switchPort(i + 1)
		ipCmds(tb,
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", sw, "tuntap", "add", "dev", port, "mode", "tap"},
			[]string{"-n", sw, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns, "tuntap", "add", "dev", "eth0", "mode", "tap"},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("10.99.0.%d/24", i+1), "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	return sw, a, b
}

// BenchmarkShaperTCP measures one TCP stream from a to b through the
// shaper: unshaped, and with 1 ms each way.
func BenchmarkShaperTCP(b *testing.B) {
	if why := canNetns(); why != "" {
		b.Skipf("needs network namespaces: %s", why)
	}
	for _, bc := range []struct {
		name  string
		shape Shape
	}{
		{"unshaped", Shape{}},
		{"1ms", Shape{Latency: Duration(time.Millisecond)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sw, na, nb := tapPairs(b)
			s, err := NewShaper(ShaperConfig{Seed: 1, Links: []ShaperLink{
				{Node: "a", NodeNS: na, NodeDev: "eth0", SwitchNS: sw, SwitchDev: "p1", Shape: bc.shape},
				{Node: "b", NodeNS: nb, NodeDev: "eth0", SwitchNS: sw, SwitchDev: "p2", Shape: bc.shape},
			}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var ln net.Listener
			if err := inNetns(nb, func() (err error) { ln, err = net.Listen("tcp4", "10.99.0.2:9000"); return err }); err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			got := make(chan int64, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- 0
					return
				}
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				got <- n
			}()
			var c net.Conn
			if err := inNetns(na, func() (err error) { c, err = net.DialTimeout("tcp4", "10.99.0.2:9000", 10*time.Second); return err }); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			if n := <-got; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("%d bytes arrived of %d", n, int64(b.N)*int64(len(buf)))
			}
		})
	}
}

// TestRunShaper builds two namespaces whose links are TAP pairs on a
// bridge, runs the shaper on them, and measures UDP round trips: 20 ms
// each way gives about 40 ms; a reshape over the control socket to 5 ms
// brings it down; 100% loss stops the pings; stopping the shaper removes
// its socket.
func TestRunShaper(t *testing.T) {
	needNetnsTAP(t)
	sw, a, b := tapPairs(t)
	dir := t.TempDir()
	shape := Shape{Latency: Duration(20 * time.Millisecond)}
	cfg := ShaperConfig{Socket: filepath.Join(dir, "shaper.sock"), Seed: 1, Links: []ShaperLink{
		{Node: "a", NodeNS: a, NodeDev: "eth0", SwitchNS: sw, SwitchDev: "p1", Shape: shape},
		{Node: "b", NodeNS: b, NodeDev: "eth0", SwitchNS: sw, SwitchDev: "p2", Shape: shape},
	}}
	js, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, ShaperFile), js, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunShaper(ctx, dir, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := shaperCall(ctx, cfg.Socket, shaperRequest{Op: "ping"}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("shaper did not answer: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("shaper ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	udpEcho(t, b, "10.99.0.2:7")

	udpRTTs(t, a, "10.99.0.2:7", 2) // neighbour discovery
	rtts := udpRTTs(t, a, "10.99.0.2:7", 21)
	m := medianOf(rtts)
	t.Logf("20ms each way: median RTT %v over %d pings", m, len(rtts))
	if len(rtts) < 20 || m < 40*time.Millisecond || m > 80*time.Millisecond {
		t.Fatalf("median RTT %v over %d answered pings, want about 40ms", m, len(rtts))
	}

	for _, n := range []string{"a", "b"} {
		if _, err := shaperCall(ctx, cfg.Socket, shaperRequest{Op: "shape", Node: n, Shape: Shape{Latency: Duration(5 * time.Millisecond)}}); err != nil {
			t.Fatal(err)
		}
	}
	rtts = udpRTTs(t, a, "10.99.0.2:7", 21)
	m2 := medianOf(rtts)
	t.Logf("5ms each way: median RTT %v", m2)
	if len(rtts) < 20 || m2 < 10*time.Millisecond || m2 > 30*time.Millisecond {
		t.Fatalf("after reshape to 5ms: median RTT %v over %d pings, want about 10ms", m2, len(rtts))
	}

	if _, err := shaperCall(ctx, cfg.Socket, shaperRequest{Op: "shape", Node: "a", Shape: Shape{Loss: "100%"}}); err != nil {
		t.Fatal(err)
	}
	if got := udpRTTs(t, a, "10.99.0.2:7", 3); len(got) != 0 {
		t.Fatalf("%d pings answered through a link with 100%% loss", len(got))
	}
	r, err := shaperCall(ctx, cfg.Socket, shaperRequest{Op: "stats"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Stats["a"].Lost < 3 || r.Stats["a"].Sent < 40 || r.Stats["b"].Sent < 40 {
		t.Errorf("stats %+v", r.Stats)
	}
	if _, err := shaperCall(ctx, cfg.Socket, shaperRequest{Op: "shape", Node: "nobody"}); err == nil {
		t.Error("shaping an unknown node succeeded")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunShaper: %v", err)
	}
	done <- nil // for the cleanup
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}
