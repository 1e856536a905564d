package testnet

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// The address arithmetic of namespace testnets: a /24 up to 253 nodes
// (nodes .1 to .N, the orchestrator at .254, as before), an aligned /23 or
// /22 beyond, with the orchestrator at the last usable address.
func TestSubnetArithmetic(t *testing.T) {
	cases := []struct {
		nodes  int
		bits   int
		subnet string
		first  string // node 1
		last   string // node `nodes`
		host   string // the orchestrator
	}{
		{1, 24, "10.77.3.0/24", "10.77.3.1", "10.77.3.1", "10.77.3.254"},
		{50, 24, "10.77.207.0/24", "10.77.207.1", "10.77.207.50", "10.77.207.254"},
		{253, 24, "10.77.3.0/24", "10.77.3.1", "10.77.3.253", "10.77.3.254"},
		{254, 23, "10.77.4.0/23", "10.77.4.1", "10.77.4.254", "10.77.5.254"},
		{300, 23, "10.77.4.0/23", "10.77.4.1", "10.77.5.44", "10.77.5.254"},
		{509, 23, "10.77.4.0/23", "10.77.4.1", "10.77.5.253", "10.77.5.254"},
		{510, 22, "10.77.8.0/22", "10.77.8.1", "10.77.9.254", "10.77.11.254"},
		{1000, 22, "10.77.252.0/22", "10.77.252.1", "10.77.255.232", "10.77.255.254"},
		{1021, 22, "10.77.8.0/22", "10.77.8.1", "10.77.11.253", "10.77.11.254"},
	}
	for _, c := range cases {
		if got := subnetBits(c.nodes); got != c.bits {
			t.Errorf("%d nodes: /%d, want /%d", c.nodes, got, c.bits)
		}
		p, err := parseSubnet(c.subnet)
		if err != nil || p.Bits() != c.bits {
			t.Errorf("parse %s: %v, /%d", c.subnet, err, p.Bits())
		}
		got := []string{ipOf(c.subnet, 1), ipOf(c.subnet, c.nodes), hostIPOf(c.subnet)}
		want := []string{c.first, c.last, c.host}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%d nodes in %s: node 1, node %d, orchestrator = %v, want %v", c.nodes, c.subnet, c.nodes, got, want)
		}
		if ipOf(c.subnet, c.nodes) == hostIPOf(c.subnet) {
			t.Errorf("%d nodes in %s: the last node has the orchestrator's address", c.nodes, c.subnet)
		}
		if w := withBits(c.first, c.subnet); !strings.HasSuffix(w, "/"+strings.Split(c.subnet, "/")[1]) {
			t.Errorf("withBits(%s, %s) = %s", c.first, c.subnet, w)
		}
	}
	if n := maxNetnsNodes(); n < MaxNodes {
		t.Errorf("a /%d holds %d nodes, fewer than MaxNodes %d", minSubnetBits, n, MaxNodes)
	}
}

// pickSubnetFrom keeps the /24 choice of old and carves aligned /23s and
// /22s none of whose /24s this machine uses.
func TestPickSubnet(t *testing.T) {
	used := "inet 10.77.8.254/24 scope global wtabch\n10.77.13.0/24 dev br0\n"
	cases := []struct {
		id    string
		bits  int
		used  string
		check func(string) string
	}{
		{"a1b2c3", 24, "", func(s string) string {
			if !strings.HasSuffix(s, ".0/24") {
				return "not a /24"
			}
			return ""
		}},
		{"a1b2c3", 22, used, nil},
		{"ffffff", 22, used, nil},
		{"012345", 23, used, nil},
	}
	for _, c := range cases {
		s, err := pickSubnetFrom(c.used, c.id, c.bits)
		if err != nil {
			t.Fatalf("%s /%d: %v", c.id, c.bits, err)
		}
		p, err := parseSubnet(s)
		if err != nil || p.Bits() != c.bits || p.String() != s {
			t.Fatalf("%s /%d: picked %s (%v)", c.id, c.bits, s, err)
		}
		if p.Contains(netip.MustParseAddr("10.77.0.1")) {
			t.Errorf("%s /%d: %s holds 10.77.0.0", c.id, c.bits, s)
		}
		for _, u := range []string{"10.77.8.1", "10.77.13.1"} {
			if c.used != "" && p.Contains(netip.MustParseAddr(u)) {
				t.Errorf("%s /%d: %s overlaps %s, in use", c.id, c.bits, s, u)
			}
		}
		if c.check != nil {
			if why := c.check(s); why != "" {
				t.Errorf("%s /%d: %s: %s", c.id, c.bits, s, why)
			}
		}
	}
	// Every aligned /22 in use but one: that one is picked.
	var all strings.Builder
	for k := 4; k < 256; k++ {
		if k/4 != 17 {
			all.WriteString("10.77." + strconv.Itoa(k) + ".1\n")
		}
	}
	if s, err := pickSubnetFrom(all.String(), "x", 22); err != nil || s != "10.77.68.0/22" {
		t.Errorf("one free /22: got %s, %v; want 10.77.68.0/22", s, err)
	}
	all.WriteString("10.77.69.1\n")
	if s, err := pickSubnetFrom(all.String(), "x", 22); err == nil {
		t.Errorf("no free /22: got %s", s)
	}
}
