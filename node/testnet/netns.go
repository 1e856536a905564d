package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The namespace network: a "switch" namespace holds a bridge; each node's
// namespace has a veth (eth0) whose peer is a port of that bridge; this
// machine gets one more veth into the bridge with the subnet's last usable
// address (.254 of a /24), so the orchestrator reaches every node's API.
// The bridge lives in a
// namespace of its own so that this machine's firewall (Docker's FORWARD
// DROP with br_netfilter, say) never sees node-to-node traffic, and so that
// deleting the namespaces removes everything. Namespaces have no route out
// of their subnet (a /24, or a /23 or /22 past 253 nodes): nodes reach
// each other and the orchestrator, nothing else.

const (
	// SubnetPrefix is the range testnet subnets are carved from.
	SubnetPrefix = "10.77."
	// SwarmPort and APIPort are every node's ports inside its namespace.
	SwarmPort = 4001
	APIPort   = 5001
)

// nsPrefix is the prefix of every namespace of testnet id.
func nsPrefix(id string) string { return "wt-" + id + "-" }

// hostLinkName is the host veth of testnet id (at most 15 bytes).
func hostLinkName(id string) string { return "wt" + id + "h" }

// canNetns says why namespaces cannot be used, or "" if they can.
func canNetns() string {
	if runtime.GOOS != "linux" {
		return "not Linux"
	}
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no 'ip' command (install iproute2)"
	}
	return ""
}

// run runs a command with a bounded time and returns its error with stderr.
func run(ctx context.Context, stdin string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	return string(out), err
}

// A testnet's subnet is a /24 while its nodes and the orchestrator fit
// (253 nodes: .1 to .253, the orchestrator at .254), else a /23 or /22
// aligned inside 10.77.0.0/16. Nodes are host numbers 1, 2, …; the
// orchestrator takes the last usable address (.254 of a /24; of
// 10.77.K.0/22, 10.77.K+3.254).
const (
	minSubnetBits = 22
	maxSubnetBits = 24
)

// subnetBits is the prefix length a testnet of n nodes gets: 24 while
// n nodes and the orchestrator fit, shorter (down to 22) beyond.
func subnetBits(n int) int {
	bits := maxSubnetBits
	for bits > minSubnetBits && usableHosts(bits) < n+1 {
		bits--
	}
	return bits
}

// usableHosts is how many addresses a /bits has for hosts (no network,
// no broadcast address).
func usableHosts(bits int) int { return 1<<(32-bits) - 2 }

// maxNetnsNodes is how many nodes the largest subnet holds beside the
// orchestrator.
func maxNetnsNodes() int { return usableHosts(minSubnetBits) - 1 }

func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if !strings.HasPrefix(s, SubnetPrefix) || p.Bits() < minSubnetBits || p.Bits() > maxSubnetBits || !p.Addr().Is4() {
		return p, fmt.Errorf("%q: want a /24 (or a /23, /22 for more than 253 nodes) inside %s0.0/16, e.g. 10.77.3.0/24", s, SubnetPrefix)
	}
	return p.Masked(), nil
}

// pickSubnet returns a subnet of 10.77.0.0/16 for n nodes (a 10.77.K.0/24,
// or an aligned /23 or /22 when n needs it) of which no address or route
// of this machine uses any /24, starting from a hash of the testnet ID.
func pickSubnet(ctx context.Context, id string, n int) (string, error) {
	addrs, _ := output(ctx, "ip", "-4", "-o", "addr", "show")
	routes, _ := output(ctx, "ip", "-4", "route", "show", "table", "all")
	return pickSubnetFrom(addrs+"\n"+routes, id, subnetBits(n))
}

// pickSubnetFrom picks a /bits of 10.77.0.0/16 none of whose /24s appears
// in used (the output of ip addr and ip route). A /24 is 10.77.K.0/24
// with K in 1..250 as it has always been; a /23 or /22 starts at a
// multiple of 2 or 4 (never at 10.77.0.0).
func pickSubnetFrom(used, id string, bits int) (string, error) {
	h := fnv.New32a()
	h.Write([]byte(id))
	if bits == maxSubnetBits {
		start := int(h.Sum32() % 250)
		for i := range 250 {
			k := (start+i)%250 + 1
			pfx := fmt.Sprintf("%s%d.", SubnetPrefix, k)
			if !strings.Contains(used, pfx) {
				return pfx + "0/24", nil
			}
		}
		return "", errors.New("every 10.77.K.0/24 is in use on this machine")
	}
	width := 1 << (24 - bits) // /24s per block
	blocks := 256/width - 1   // blocks 1..blocks (block 0 would hold 10.77.0.0)
	start := int(h.Sum32() % uint32(blocks))
	for i := range blocks {
		k := ((start+i)%blocks + 1) * width
		free := true
		for j := range width {
			if strings.Contains(used, fmt.Sprintf("%s%d.", SubnetPrefix, k+j)) {
				free = false
				break
			}
		}
		if free {
			return fmt.Sprintf("%s%d.0/%d", SubnetPrefix, k, bits), nil
		}
	}
	return "", fmt.Errorf("every aligned 10.77.K.0/%d is in use on this machine", bits)
}

// ipOf returns the address of host number i (1-based) in subnet: the
// subnet's network address plus i.
func ipOf(subnet string, i int) string {
	p, _ := netip.ParsePrefix(subnet)
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// hostIPOf is the orchestrator's address in subnet: its last usable one
// (.254 of a /24).
func hostIPOf(subnet string) string {
	p, _ := netip.ParsePrefix(subnet)
	return ipOf(subnet, usableHosts(p.Bits()))
}

// withBits writes ip with subnet's prefix length ("10.77.8.1/22").
func withBits(ip, subnet string) string {
	p, _ := netip.ParsePrefix(subnet)
	return fmt.Sprintf("%s/%d", ip, p.Bits())
}

// setupSwitch makes the switch namespace, its bridge and this machine's
// veth into it. Each name goes into the state before it is made.
func (t *Testnet) setupSwitch(ctx context.Context) error {
	st := t.st
	st.Switch = nsPrefix(st.ID) + "sw"
	st.HostLink = hostLinkName(st.ID)
	st.HostIP = hostIPOf(st.Subnet)
	st.Namespaces = append(st.Namespaces, st.Switch)
	if err := t.save(); err != nil {
		return err
	}
	steps := [][]string{
		{"netns", "add", st.Switch},
		{"-n", st.Switch, "link", "set", "lo", "up"},
		{"-n", st.Switch, "link", "add", "br0", "type", "bridge"},
		{"-n", st.Switch, "link", "set", "br0", "up"},
		{"link", "add", st.HostLink, "type", "veth", "peer", "name", "up0", "netns", st.Switch},
		{"-n", st.Switch, "link", "set", "up0", "master", "br0", "up"},
		{"addr", "add", withBits(st.HostIP, st.Subnet), "dev", st.HostLink},
		{"link", "set", st.HostLink, "up"},
	}
	for _, a := range steps {
		if err := run(ctx, "", "ip", a...); err != nil {
			return err
		}
	}
	// Bridged frames skip the switch namespace's (empty) iptables.
	_ = run(ctx, "", "ip", "netns", "exec", st.Switch, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0")
	st.Shaping = t.chooseShaping(probeShaping(ctx, st.Switch))
	if err := raiseNeighTable(st, len(t.sc.NodeNames())); err != nil {
		t.say("warning: %v", err)
	}
	return t.save()
}

// The kernel's ARP table is one for every namespace, and its default hard
// limit (gc_thresh3 = 1024) is what a full mesh of about 30 nodes needs:
// past it, new neighbours are refused ("neighbor table overflow") and
// connections stall. raiseNeighTable lifts the limits for n nodes and
// records the old values so that down puts them back.
const neighDir = "/proc/sys/net/ipv4/neigh/default/"

func raiseNeighTable(st *State, n int) error {
	need := []int{n*n/2 + 128, n*n + 512, 2*n*n + 1024}
	var old []int
	for i, name := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
		b, err := os.ReadFile(neighDir + name)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		old = append(old, v)
		need[i] = max(need[i], v)
	}
	if need[2] == old[2] {
		return nil
	}
	st.NeighOld, st.NeighSet = old, need
	for i, name := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
		if err := os.WriteFile(neighDir+name, []byte(strconv.Itoa(need[i])), 0o644); err != nil {
			return fmt.Errorf("raise the ARP table limit (%s) for %d nodes: %w", name, n, err)
		}
	}
	return nil
}

// restoreNeighTable puts back the limits raiseNeighTable changed, unless
// someone changed them since or another testnet still has namespaces.
func restoreNeighTable(ctx context.Context, st *State) {
	if len(st.NeighOld) != 3 || len(st.NeighSet) != 3 {
		return
	}
	b, err := os.ReadFile(neighDir + "gc_thresh3")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(st.NeighSet[2]) {
		return
	}
	if out, err := output(ctx, "ip", "netns", "list"); err != nil || strings.Contains(out, "wt-") {
		return
	}
	for i, name := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
		_ = os.WriteFile(neighDir+name, []byte(strconv.Itoa(st.NeighOld[i])), 0o644)
	}
}

// probeShaping finds out whether this kernel has netem (latency, jitter,
// loss) and htb (bandwidth).
func probeShaping(ctx context.Context, ns string) string {
	netem := run(ctx, "", "tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms") == nil
	if netem {
		_ = run(ctx, "", "tc", "-n", ns, "qdisc", "del", "dev", "lo", "root")
	}
	htb := run(ctx, "", "tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb") == nil
	if htb {
		_ = run(ctx, "", "tc", "-n", ns, "qdisc", "del", "dev", "lo", "root")
	}
	switch {
	case netem && htb:
		return ShapingNetem
	case htb:
		return ShapingBandwidth
	default:
		return ShapingNone
	}
}

// chooseShaping picks the mechanism from what the kernel has (probed) and
// what the testnet was asked for: the userspace delay line where netem is
// missing and the scenario wants latency, jitter or loss (or always, when
// Options.Shaper says delayline).
func (t *Testnet) chooseShaping(probed string) string {
	switch {
	case t.shaper == ShaperTC:
		return probed
	case t.shaper == ShaperDelayLine:
		if why := tapAvailable(); why != "" {
			t.say("warning: the delay line was asked for but cannot run (%s); shaping with %s", why, probed)
			return probed
		}
		return ShapingDelayLine
	case probed == ShapingNetem || !t.sc.wantsDelay():
		return probed
	case tapAvailable() != "":
		t.say("warning: no sch_netem and no TAP devices (%s): latency, jitter and loss are not applied", tapAvailable())
		return probed
	}
	return ShapingDelayLine
}

// wantsDelay says some link of the scenario (at start or in a shape step)
// has latency, jitter or loss.
func (sc *Scenario) wantsDelay() bool {
	delay := func(s Shape) bool { return s.Latency > 0 || s.Jitter > 0 || s.LossPercent() > 0 }
	if delay(sc.Network.Link) {
		return true
	}
	for _, g := range sc.Groups {
		if g.Link != nil && delay(*g.Link) {
			return true
		}
	}
	for _, st := range sc.Steps {
		if st.Action == "shape" && delay(st.Shape) {
			return true
		}
	}
	return false
}

// ShapingNote says which mechanism shapes this testnet's links and what
// it applies; it starts with the mechanism's name.
func (s *State) ShapingNote() string {
	switch {
	case s.Mode != ModeNetns:
		return "none: no link shaping on loopback (needs root for namespaces)"
	case s.Shaping == ShapingNetem:
		return "netem: tc netem (latency, jitter, loss) and htb (bandwidth)"
	case s.Shaping == ShapingDelayLine:
		return "delayline: userspace delay line on TAP pairs (latency, jitter, loss, bandwidth; this kernel has no sch_netem or it was asked for)"
	case s.Shaping == ShapingBandwidth:
		return "bandwidth-only: htb; this kernel has no sch_netem, so latency, jitter and loss are not applied (the delay line runs when a scenario asks for them, or with --shaper delayline)"
	default:
		return "none: this kernel has neither sch_netem nor sch_htb"
	}
}

// addNodeNS makes a node's namespace and its link to the bridge.
func (t *Testnet) addNodeNS(ctx context.Context, n *NodeState, port int) error {
	st := t.st
	t.mu.Lock()
	st.Namespaces = append(st.Namespaces, n.NS)
	err := t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	port0 := switchPort(port)
	steps := [][]string{
		{"netns", "add", n.NS},
		{"-n", n.NS, "link", "set", "lo", "up"},
		{"-n", st.Switch, "link", "add", port0, "type", "veth", "peer", "name", "eth0", "netns", n.NS},
		{"-n", st.Switch, "link", "set", port0, "master", "br0", "up"},
		{"-n", n.NS, "addr", "add", withBits(n.IP, st.Subnet), "dev", "eth0"},
		{"-n", n.NS, "link", "set", "eth0", "up"},
	}
	if st.Shaping == ShapingDelayLine {
		// Two TAP devices instead of a veth pair; the shaper joins them.
		steps = [][]string{
			{"netns", "add", n.NS},
			{"-n", n.NS, "link", "set", "lo", "up"},
			{"-n", st.Switch, "tuntap", "add", "dev", port0, "mode", "tap"},
			{"-n", st.Switch, "link", "set", port0, "master", "br0", "up"},
			{"-n", n.NS, "tuntap", "add", "dev", "eth0", "mode", "tap"},
			{"-n", n.NS, "addr", "add", withBits(n.IP, st.Subnet), "dev", "eth0"},
			{"-n", n.NS, "link", "set", "eth0", "up"},
		}
	}
	for _, a := range steps {
		if err := run(ctx, "", "ip", a...); err != nil {
			return err
		}
	}
	return nil
}

// applyShape shapes what a node sends to other nodes: an htb root whose
// default class carries the shape (rate, and a netem leaf for latency,
// jitter and loss where the kernel has it); traffic to this machine (the
// orchestrator's API calls) goes through an unshaped class, so
// measurements are not skewed by the shaping.
func (t *Testnet) applyShape(ctx context.Context, n *NodeState, s Shape) error {
	st := t.st
	if st.Mode != ModeNetns {
		t.setShape(n, s)
		return nil
	}
	if st.Shaping == ShapingDelayLine {
		return t.shapeDelayLine(ctx, n, s)
	}
	if st.Shaping == ShapingNone {
		if !s.IsZero() {
			return errors.New("this kernel has neither sch_netem nor sch_htb: links cannot be shaped")
		}
		return nil
	}
	if s.IsZero() && n.Shape.IsZero() {
		return nil
	}
	tc := func(args ...string) error { return run(ctx, "", "tc", append([]string{"-n", n.NS}, args...)...) }
	rate := "10gbit"
	if s.Bandwidth != "" {
		bps, err := parseBandwidth(s.Bandwidth)
		if err != nil {
			return err
		}
		rate = fmt.Sprintf("%dbit", bps)
	}
	if n.Shape.IsZero() {
		// First shape on this node: build the tree.
		_ = tc("qdisc", "del", "dev", "eth0", "root")
		if err := tc("qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "20"); err != nil {
			return err
		}
		if err := tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit", "quantum", "200000"); err != nil {
			return err
		}
		if err := tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", rate, "quantum", "200000"); err != nil {
			return err
		}
		// A NAT testnet's API traffic stays on the namespace's loopback.
		if st.HostIP != "" {
			if err := tc("filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
				"match", "ip", "dst", st.HostIP+"/32", "flowid", "1:10"); err != nil {
				return err
			}
		}
	} else if err := tc("class", "change", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", rate, "quantum", "200000"); err != nil {
		return err
	}
	if st.Shaping == ShapingNetem {
		if s.Latency > 0 || s.Jitter > 0 || s.LossPercent() > 0 {
			args := []string{"qdisc", "replace", "dev", "eth0", "parent", "1:20", "handle", "20:", "netem", "limit", "10000"}
			if s.Latency > 0 || s.Jitter > 0 {
				args = append(args, "delay", fmt.Sprintf("%dus", s.Latency.D().Microseconds()))
				if s.Jitter > 0 {
					args = append(args, fmt.Sprintf("%dus", s.Jitter.D().Microseconds()))
				}
			}
			if l := s.LossPercent(); l > 0 {
				args = append(args, "loss", fmt.Sprintf("%g%%", l))
			}
			if err := tc(args...); err != nil {
				return err
			}
		} else {
			_ = tc("qdisc", "del", "dev", "eth0", "parent", "1:20", "handle", "20:")
		}
	}
	t.setShape(n, s)
	return nil
}

// shapeDelayLine records n's shape and, once the shaper runs, hands it to
// the shaper (before it starts, the shaper reads every shape from its
// configuration).
func (t *Testnet) shapeDelayLine(ctx context.Context, n *NodeState, s Shape) error {
	if _, err := lineShapeOf(s); err != nil {
		return err
	}
	t.setShape(n, s)
	if t.st.ShaperPID == 0 {
		return nil
	}
	if err := t.writeShaperConfig(); err != nil {
		return err
	}
	if _, err := shaperCall(ctx, t.st.ShaperSock, shaperRequest{Op: "shape", Node: n.Name, Shape: s}); err != nil {
		return fmt.Errorf("shape %s: %w", n.Name, err)
	}
	return nil
}

// setShape records n's shape under t.mu: other nodes' goroutines save the
// state (which reads every node) while this one is shaped.
func (t *Testnet) setShape(n *NodeState, s Shape) {
	t.mu.Lock()
	n.Shape = s
	t.mu.Unlock()
}

// blackhole makes n drop everything it would send to ips (a partition),
// or, with del, stops doing so.
func blackhole(ctx context.Context, n *NodeState, ips []string, del bool) error {
	if len(ips) == 0 {
		return nil
	}
	var b strings.Builder
	verb := "add"
	if del {
		verb = "del"
	}
	for _, ip := range ips {
		fmt.Fprintf(&b, "route %s blackhole %s/32\n", verb, ip)
	}
	return run(ctx, b.String(), "ip", "-n", n.NS, "-force", "-batch", "-")
}

// teardownNetns deletes every namespace and link of the testnet: those in
// the state, and any other with its prefix (made just before a crash).
func teardownNetns(ctx context.Context, st *State) []error {
	var errs []error
	names := map[string]bool{}
	for _, ns := range st.Namespaces {
		names[ns] = true
	}
	for _, ns := range Leftovers(ctx, st.ID).Namespaces {
		names[ns] = true
	}
	for ns := range names {
		if err := run(ctx, "", "ip", "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	link := hostLinkName(st.ID)
	if st.HostLink != "" {
		link = st.HostLink
	}
	// The host veth goes when its peer's namespace does; the kernel does
	// that asynchronously, so delete it ourselves if it is still there.
	_ = run(ctx, "", "ip", "link", "del", link)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if l := Leftovers(ctx, st.ID); l.Empty() {
			restoreNeighTable(ctx, st)
			return errs
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := Leftovers(ctx, st.ID); !l.Empty() {
		errs = append(errs, fmt.Errorf("still present after teardown: %s", l))
	}
	return errs
}

// Leftover lists what a testnet ID still has on this machine.
type Leftover struct {
	Namespaces []string
	Links      []string
}

// Empty says nothing is left.
func (l Leftover) Empty() bool { return len(l.Namespaces) == 0 && len(l.Links) == 0 }

func (l Leftover) String() string {
	return fmt.Sprintf("namespaces %v, links %v", l.Namespaces, l.Links)
}

// Leftovers lists the namespaces and host links with testnet id's prefix.
func Leftovers(ctx context.Context, id string) Leftover {
	var l Leftover
	if out, err := output(ctx, "ip", "netns", "list"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && strings.HasPrefix(f[0], nsPrefix(id)) {
				l.Namespaces = append(l.Namespaces, f[0])
			}
		}
	}
	if out, err := output(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 1 {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if strings.HasPrefix(name, "wt"+id) {
					l.Links = append(l.Links, name)
				}
			}
		}
	}
	return l
}
