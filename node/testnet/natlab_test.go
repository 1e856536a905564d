package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// newTestLab builds a NAT lab for a test, checks it is isolated before any
// traffic, and removes it (and checks nothing is left) on cleanup. It skips
// only when the lab cannot be built for want of root or Linux.
func newTestLab(t *testing.T, public []string, private map[string]NATKind) *NATLab {
	t.Helper()
	if why := CanNATLab(); why != "" {
		if why == "not root" || runtime.GOOS != "linux" {
			t.Skip("NAT lab needs root on Linux (network namespaces, nftables): " + why)
		}
		t.Fatalf("cannot build the NAT lab: %s", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := fmt.Sprintf("k%03x", os.Getpid()&0xfff)
	lab, err := NewNATLab(ctx, id, public, private)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("remove the lab: %v", err)
		}
		if left := LabLeftovers(context.Background(), id); len(left) > 0 {
			t.Errorf("lab namespaces left behind: %v", left)
		}
	})
	if err := lab.CheckIsolated(ctx); err != nil {
		t.Fatal(err)
	}
	return lab
}

// udpIn opens a UDP socket on addr inside namespace ns.
func udpIn(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := InNetns(ns, func() error {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp4", a)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads one datagram within d; ok is false on a timeout.
func recv(t *testing.T, c *net.UDPConn, d time.Duration) (string, *net.UDPAddr, bool) {
	t.Helper()
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDP(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", nil, false
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n]), from, true
}

// TestNATKinds probes every router of a NAT lab from two outside hosts and
// checks it maps and filters as its kind says (RFC 4787): the inside host
// sends from one UDP port to outside host 1; then host 1 from another port
// and host 2 (never contacted) send to the mapping host 1 saw, and host 1
// answers from the contacted port; last, the inside host sends from the
// same port to host 2, whose view of the mapping must be host 1's unless
// the NAT is symmetric.
func TestNATKinds(t *testing.T) {
	type want struct {
		sameMapping   bool // endpoint-independent mapping
		fromOtherPort bool // filtering lets in another port of a contacted host
		fromOtherHost bool // filtering lets in a host never contacted
	}
	kinds := map[NATKind]want{
		NATFullCone:          {sameMapping: true, fromOtherPort: true, fromOtherHost: true},
		NATAddressRestricted: {sameMapping: true, fromOtherPort: true},
		NATPortRestricted:    {sameMapping: true},
		NATSymmetric:         {},
	}
	private := map[string]NATKind{}
	for k := range kinds {
		private[string(k)] = k
	}
	lab := newTestLab(t, []string{"o1", "o2"}, private)
	o1, o2 := lab.Public[0], lab.Public[1]
	for _, h := range lab.Private {
		t.Run(string(h.Kind), func(t *testing.T) {
			w := kinds[h.Kind]
			// Fresh ports per kind: no mapping or conntrack entry is shared.
			port := 20000 + 100*len(h.Name)
			in := udpIn(t, h.NS, fmt.Sprintf("%s:%d", h.IP, port))
			a := udpIn(t, o1.NS, fmt.Sprintf("%s:%d", o1.IP, port+1))
			a2 := udpIn(t, o1.NS, fmt.Sprintf("%s:%d", o1.IP, port+2))
			b := udpIn(t, o2.NS, fmt.Sprintf("%s:%d", o2.IP, port+1))
			send := func(c *net.UDPConn, to *net.UDPAddr, msg string) {
				t.Helper()
				if _, err := c.WriteToUDP([]byte(msg), to); err != nil {
					t.Fatalf("send %s: %v", msg, err)
				}
			}
			send(in, a.LocalAddr().(*net.UDPAddr), "out1")
			msg, m1, ok := recv(t, a, 3*time.Second)
			if !ok || msg != "out1" {
				t.Fatalf("outside host 1 got nothing from the inside host (%q)", msg)
			}
			if m1.IP.String() != h.PublicIP {
				t.Fatalf("outside host 1 sees %s, want the router's %s", m1, h.PublicIP)
			}
			t.Logf("%s: inside %s:%d is %s to host 1", h.Kind, h.IP, port, m1)
			for _, p := range []struct {
				name string
				from *net.UDPConn
				want bool
			}{
				{"another port of host 1", a2, w.fromOtherPort},
				{"host 2, never contacted", b, w.fromOtherHost},
				{"host 1's contacted port (a reply)", a, true},
			} {
				send(p.from, m1, "in")
				_, from, got := recv(t, in, 700*time.Millisecond)
				if got != p.want {
					t.Errorf("%s: a datagram from %s to the mapping let in: %v, want %v", h.Kind, p.name, got, p.want)
				}
				if got && from.String() != p.from.LocalAddr().String() {
					t.Errorf("%s: datagram from %s arrived from %s, want the sender's address", h.Kind, p.name, from)
				}
			}
			send(in, b.LocalAddr().(*net.UDPAddr), "out2")
			var m2 *net.UDPAddr
			// Host 2's socket may still hold nothing else: it sent, never got.
			msg, m2, ok = recv(t, b, 3*time.Second)
			if !ok || msg != "out2" {
				t.Fatalf("outside host 2 got nothing from the inside host (%q)", msg)
			}
			t.Logf("%s: inside %s:%d is %s to host 2", h.Kind, h.IP, port, m2)
			if same := m1.String() == m2.String(); same != w.sameMapping {
				t.Errorf("%s: host 1 sees %s and host 2 sees %s: same mapping %v, want %v", h.Kind, m1, m2, same, w.sameMapping)
			}
		})
	}
}
