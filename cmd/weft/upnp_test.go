package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/node/testnet"
)

// TestUPnPPortMapping puts a node behind a router that runs miniupnpd
// (UPnP IGD and NAT-PMP) and otherwise drops every unsolicited packet. The
// node's NAT manager (nat.port_map) maps its TCP port, the node announces
// the router's address with that port, and a public node dials it there:
// the connection is direct, inbound on the private node, with no relay
// anywhere (relays are off on both). It needs root and miniupnpd
// (scripts/test.sh installs it); without root it skips.
func TestUPnPPortMapping(t *testing.T) {
	if why := testnet.CanNATLab(); why != "" {
		if why == "not root" || runtime.GOOS != "linux" {
			t.Skip("NAT lab needs root on Linux (network namespaces, nftables): " + why)
		}
		t.Fatalf("cannot build the NAT lab: %s", why)
	}
	if why := testnet.CanUPnPRouter(); why != "" {
		t.Fatalf("cannot build a UPnP router: %s", why)
	}
	if testing.Short() {
		t.Skip("builds the weft binary and a NAT lab with miniupnpd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildWeft(t)
	id := fmt.Sprintf("u%03x", os.Getpid()&0xfff)
	lab, err := testnet.NewNATLab(ctx, id, []string{"pub"}, map[string]testnet.NATKind{"u": testnet.NATUPnP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("miniupnpd log:\n%s", tailString(lab.UPnPLog(lab.Private[0]), 3000))
		}
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("remove the lab: %v", err)
		}
		if left := testnet.LabLeftovers(context.Background(), id); len(left) > 0 {
			t.Errorf("lab namespaces left behind: %v", left)
		}
	})
	if err := lab.CheckIsolated(ctx); err != nil {
		t.Fatal(err)
	}
	wan := lab.Private[0].PublicIP
	t.Logf("router %s (miniupnpd) at %s, node at %s", lab.Private[0].Router, wan, lab.Private[0].IP)

	pub := startLabDaemon(t, bin, lab.Public[0], [][2]string{
		{"relay.service", "false"}, {"relay.client", "false"}, {"nat.reachability", "public"},
	})
	u := startLabDaemon(t, bin, lab.Private[0], [][2]string{
		{"nat.port_map", "true"}, {"relay.client", "false"}, {"relay.service", "false"},
		{"nat.hole_punching", "false"},
	})
	// The mapping shows up among u's addresses: the router's WAN address
	// with the TCP port miniupnpd gave.
	var mapped string
	nodetest.WaitFor(t, 60*time.Second, "u announces a port mapping on its router's address", func() bool {
		for _, a := range u.status(t).Addrs {
			if strings.HasPrefix(a, "/ip4/"+wan+"/tcp/") {
				mapped, _, _ = strings.Cut(a, "/p2p/")
				mapped += "/p2p/" + u.id
				return true
			}
		}
		return false
	})
	t.Logf("u announces %s", mapped)
	// Before the dial, the two know nothing of each other.
	if _, ok := pub.peer(t, u.id); ok {
		t.Fatal("pub is connected to u before dialing it")
	}
	pub.cli(t, "connect", mapped)
	var p api.Peer
	nodetest.WaitFor(t, 10*time.Second, "pub holds a direct connection to u", func() bool {
		var ok bool
		p, ok = pub.peer(t, u.id)
		return ok && p.Direct && !p.Relayed
	})
	if !strings.HasPrefix(p.Addr, "/ip4/"+wan+"/tcp/") || p.Direction != "outbound" {
		t.Errorf("pub's connection to u is %+v, want outbound to %s", p, wan)
	}
	q, ok := u.peer(t, pub.id)
	if !ok || q.Relayed || q.Direction != "inbound" {
		t.Errorf("u's connection to pub is %+v (found %v), want inbound and direct", q, ok)
	}
	if st := u.status(t); len(st.NAT.Relays) > 0 {
		t.Errorf("u holds relay reservations %v; relays are off", st.NAT.Relays)
	}
	// The mapping is miniupnpd's (its log names the port), and the router
	// lets nothing else in: a TCP dial to a port nobody mapped is dropped
	// silently.
	port := strings.Split(strings.TrimPrefix(mapped, "/ip4/"+wan+"/tcp/"), "/")[0]
	if log := lab.UPnPLog(lab.Private[0]); !strings.Contains(log, port) {
		t.Errorf("miniupnpd's log does not mention port %s:\n%s", port, tailString(log, 2000))
	}
	probe := lab.Public[0].Exec("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+wan+"/4001")
	if out, err := exec.Command(probe[0], probe[1:]...).CombinedOutput(); err == nil {
		t.Errorf("a TCP dial to an unmapped port of the router was answered (%s)", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 124 {
		t.Errorf("a TCP dial to an unmapped port of the router failed at once (%v: %s), want a silent drop", err, out)
	}
}
