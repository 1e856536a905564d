package testnet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// A testnet with NAT groups is an internet like the NAT lab's: the switch
// namespace's bridge carries a public-looking 11.77.K.0/24 (go-multiaddr
// takes it as public, so AutoNAT, relays and hole punching treat it as the
// internet) that exists only inside the testnet's namespaces. Nodes of
// groups without nat sit on it directly; each node of a NAT group sits
// behind a router namespace of its own (WAN leg on the bridge, LAN
// 10.78.X.0/24 to the node) that translates as its kind says
// (routerRules). This machine has no link into any of it: the
// orchestrator reaches each daemon's API on its namespace's loopback, by
// dialing from a thread inside that namespace (InNetns), and Up proves
// the namespaces isolated before any node starts.

// setupInternet makes the switch namespace and its bridge, with no link
// to this machine.
func (t *Testnet) setupInternet(ctx context.Context) error {
	st := t.st
	st.Switch = nsPrefix(st.ID) + "sw"
	st.Namespaces = append(st.Namespaces, st.Switch)
	if err := t.save(); err != nil {
		return err
	}
	if err := ipSteps(ctx,
		[]string{"netns", "add", st.Switch},
		[]string{"-n", st.Switch, "link", "set", "lo", "up"},
		[]string{"-n", st.Switch, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", st.Switch, "link", "set", "br0", "up"},
	); err != nil {
		return err
	}
	_ = run(ctx, "", "ip", "netns", "exec", st.Switch, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0")
	st.Shaping = probeShaping(ctx, st.Switch)
	if err := raiseNeighTable(st, 2*len(t.sc.NodeNames())); err != nil {
		t.say("warning: %v", err)
	}
	return t.save()
}

// routerNS is the namespace of the router in front of node name.
func routerNS(id, name string) string { return nsPrefix(id) + name + ".r" }

// placeNATNode gives node n (the idx-th, 1-based) of a NAT group its
// addresses: the router's on the internet, the node's on the router's LAN.
func placeNATNode(st *State, n *NodeState, idx int, kind string) {
	n.NAT = kind
	n.Router = routerNS(st.ID, n.Name)
	n.PublicIP = ipOf(st.Subnet, idx)
	n.IP = fmt.Sprintf("10.78.%d.2", idx)
}

// addNATNodeNS makes a NAT node's router and the node's namespace behind
// it, and loads the router's rules.
func (t *Testnet) addNATNodeNS(ctx context.Context, n *NodeState, port int) error {
	st := t.st
	t.mu.Lock()
	st.Namespaces = append(st.Namespaces, n.Router, n.NS)
	err := t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	gw := strings.TrimSuffix(n.IP, ".2") + ".1"
	port0 := fmt.Sprintf("p%d", port)
	if err := ipSteps(ctx,
		[]string{"netns", "add", n.Router},
		[]string{"-n", n.Router, "link", "set", "lo", "up"},
		[]string{"netns", "add", n.NS},
		[]string{"-n", n.NS, "link", "set", "lo", "up"},
		[]string{"-n", st.Switch, "link", "add", port0, "type", "veth", "peer", "name", "wan0", "netns", n.Router},
		[]string{"-n", st.Switch, "link", "set", port0, "master", "br0", "up"},
		[]string{"-n", n.Router, "addr", "add", n.PublicIP + "/24", "dev", "wan0"},
		[]string{"-n", n.Router, "link", "set", "wan0", "up"},
		[]string{"-n", n.Router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", n.NS},
		[]string{"-n", n.Router, "addr", "add", gw + "/24", "dev", "lan0"},
		[]string{"-n", n.Router, "link", "set", "lan0", "up"},
		[]string{"-n", n.NS, "addr", "add", n.IP + "/24", "dev", "eth0"},
		[]string{"-n", n.NS, "link", "set", "eth0", "up"},
		[]string{"-n", n.NS, "route", "add", "default", "via", gw},
	); err != nil {
		return err
	}
	if err := run(ctx, "", "ip", "netns", "exec", n.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := run(ctx, routerRules(NATKind(n.NAT), n.IP), "ip", "netns", "exec", n.Router, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("router of %s: %w", n.Name, err)
	}
	return nil
}

// checkInternetIsolated proves the testnet's namespaces reach nothing
// beyond themselves (see checkIsolated).
func (t *Testnet) checkInternetIsolated(ctx context.Context) error {
	private := map[string]bool{}
	for _, n := range t.st.Nodes {
		if n.NAT != "" {
			private[n.NS] = true
		}
	}
	return checkIsolated(ctx, t.st.Namespaces, private, t.st.Subnet)
}

// nsHTTP returns an HTTP client whose connections are made inside network
// namespace ns, one per namespace, kept for the testnet's life.
func (t *Testnet) nsHTTP(ns string) *http.Client {
	t.httpMu.Lock()
	defer t.httpMu.Unlock()
	if c := t.httpNS[ns]; c != nil {
		return c
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := InNetns(ns, func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
	}
	if t.httpNS == nil {
		t.httpNS = map[string]*http.Client{}
	}
	c := &http.Client{Transport: tr}
	t.httpNS[ns] = c
	return c
}
