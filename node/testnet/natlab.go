package testnet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// A NAT lab: an "internet" namespace holding a bridge, public hosts on it
// with addresses from a public range, and private hosts each behind a NAT
// router of its own: a namespace with a WAN leg on the bridge and a LAN leg
// (a veth pair) to the host. Nothing is connected to this machine's
// network: the namespaces reach only one another, the orchestrator talks to
// the daemons in them through `ip netns exec`, and CheckIsolated proves
// there is no route out before any traffic flows.
//
// go-multiaddr treats 10/8, 172.16/12, 192.168/16 and 100.64/10 as private
// and 198.18/15 (the benchmark range) as unroutable, and hole punching,
// relay reservations and AutoNAT ignore such addresses; so the internet
// here is a /24 of 11.0.0.0/8, public to go-multiaddr, that exists only
// inside the lab's namespaces.

// NATLabPrefix is the range the lab's internet /24 is carved from.
const NATLabPrefix = "11.77."

// NATKind is how a lab router translates and filters (RFC 4787 terms).
// Every kind drops what it does not let in silently, as home routers do:
// an RST or ICMP answer breaks hole punching. The mapping-keeping kinds
// rely on MASQUERADE keeping the source port, which it does here (one host
// behind each router).
type NATKind string

// NAT kinds a router can be.
const (
	// NATFullCone maps endpoint-independently and filters
	// endpoint-independently: once the host sent from a port, anyone may
	// send to that port of the router (a dynamic nftables set of the mapped
	// ports, each DNATed to the host while fresh).
	NATFullCone NATKind = "full-cone"
	// NATAddressRestricted maps endpoint-independently and filters by
	// address: a remote host the inside host sent to from a port may send
	// to that port from any of its ports (a dynamic set of remote address,
	// protocol and port).
	NATAddressRestricted NATKind = "address-restricted"
	// NATPortRestricted maps endpoint-independently (MASQUERADE keeps the
	// source port where it can) and filters by address and port (conntrack:
	// only replies come in).
	NATPortRestricted NATKind = "port-restricted"
	// NATSymmetric maps endpoint-dependently (MASQUERADE fully-random):
	// every destination sees another port, so hole punching fails and the
	// pair needs the relay. It filters as port-restricted does.
	NATSymmetric NATKind = "symmetric"
	// NATUPnP is a port-restricted router that also runs miniupnpd (UPnP
	// IGD and NAT-PMP on its LAN side), so the host can map a port.
	NATUPnP NATKind = "upnp"
)

// NATKinds lists the kinds, most open first.
var NATKinds = []NATKind{NATFullCone, NATAddressRestricted, NATPortRestricted, NATSymmetric, NATUPnP}

// EndpointIndependent says the kind keeps one outside port per inside
// port, whatever the destination (every kind but symmetric).
func (k NATKind) EndpointIndependent() bool { return k != NATSymmetric }

// ParseNATKind checks a kind's name.
func ParseNATKind(s string) (NATKind, error) {
	for _, k := range NATKinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("NAT kind %q: use full-cone, address-restricted, port-restricted, symmetric or upnp", s)
}

// LabHost is a host of the lab: its namespace and address. A private host's
// Router names its router's namespace and PublicIP the router's WAN address.
type LabHost struct {
	Name     string
	NS       string
	IP       string
	Router   string
	PublicIP string
	Kind     NATKind
}

// NATLab is a built lab; Close removes it.
type NATLab struct {
	ID         string
	Internet   string // the /24 of the public range
	Public     []LabHost
	Private    []LabHost
	namespaces []string
	dir        string      // miniupnpd's config and pid files
	upnpd      []*exec.Cmd // miniupnpd processes, stopped by Close
}

// CanNATLab says why a lab cannot be built here, or "" if it can.
func CanNATLab() string {
	if why := canNetns(); why != "" {
		return why
	}
	for _, c := range []string{"nft", "sysctl"} {
		if _, err := exec.LookPath(c); err != nil {
			return "no '" + c + "' command"
		}
	}
	return ""
}

// NewNATLab builds a lab: public hosts named by public, and one private host
// behind its own router of the given kind for each entry of private. id
// (a few letters) keeps the lab's names apart from other labs and testnets.
// On error everything built so far is removed.
func NewNATLab(ctx context.Context, id string, public []string, private map[string]NATKind) (_ *NATLab, err error) {
	if why := CanNATLab(); why != "" {
		return nil, errors.New("NAT lab: " + why)
	}
	for _, k := range private {
		if _, err := ParseNATKind(string(k)); err != nil {
			return nil, err
		}
		if k == NATUPnP {
			if why := CanUPnPRouter(); why != "" {
				return nil, errors.New("NAT lab: " + why)
			}
		}
	}
	l := &NATLab{ID: id}
	defer func() {
		if err != nil {
			l.Close(context.WithoutCancel(ctx))
		}
	}()
	if l.Internet, err = pickLabSubnet(ctx, id); err != nil {
		return nil, err
	}
	pfx := "wn-" + id + "-"
	inet := pfx + "inet"
	if err := l.addNS(ctx, inet); err != nil {
		return nil, err
	}
	if err := ipSteps(ctx,
		[]string{"-n", inet, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", inet, "link", "set", "br0", "up"},
	); err != nil {
		return nil, err
	}
	_ = run(ctx, "", "ip", "netns", "exec", inet, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0")
	port := 0
	// wan plugs namespace ns into the internet bridge as dev with ip.
	wan := func(ns, dev, ip string) error {
		port++
		p := fmt.Sprintf("p%d", port)
		return ipSteps(ctx,
			[]string{"-n", inet, "link", "add", p, "type", "veth", "peer", "name", dev, "netns", ns},
			[]string{"-n", inet, "link", "set", p, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", ip + "/24", "dev", dev},
			[]string{"-n", ns, "link", "set", dev, "up"},
		)
	}
	for i, name := range public {
		h := LabHost{Name: name, NS: pfx + name, IP: ipOf(l.Internet, 10+i)}
		if err := l.addNS(ctx, h.NS); err != nil {
			return nil, err
		}
		if err := wan(h.NS, "eth0", h.IP); err != nil {
			return nil, err
		}
		l.Public = append(l.Public, h)
	}
	names := make([]string, 0, len(private))
	for name := range private {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		kind := private[name]
		lan := fmt.Sprintf("10.78.%d.0/24", i+1)
		h := LabHost{
			Name: name, NS: pfx + name, IP: ipOf(lan, 2), Kind: kind,
			Router: pfx + "r" + name, PublicIP: ipOf(l.Internet, 100+i),
		}
		for _, ns := range []string{h.Router, h.NS} {
			if err := l.addNS(ctx, ns); err != nil {
				return nil, err
			}
		}
		if err := wan(h.Router, "wan0", h.PublicIP); err != nil {
			return nil, err
		}
		if err := ipSteps(ctx,
			[]string{"-n", h.Router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"-n", h.Router, "addr", "add", ipOf(lan, 1) + "/24", "dev", "lan0"},
			[]string{"-n", h.Router, "link", "set", "lan0", "up"},
			[]string{"-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"-n", h.NS, "route", "add", "default", "via", ipOf(lan, 1)},
		); err != nil {
			return nil, err
		}
		if err := run(ctx, "", "ip", "netns", "exec", h.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			return nil, err
		}
		if err := run(ctx, routerRules(kind, h.IP), "ip", "netns", "exec", h.Router, "nft", "-f", "-"); err != nil {
			return nil, fmt.Errorf("router %s: %w", h.Router, err)
		}
		if kind == NATUPnP {
			if err := l.startUPnPd(h, lan); err != nil {
				return nil, err
			}
		}
		l.Private = append(l.Private, h)
	}
	return l, nil
}

// routerRules is the nftables ruleset of a router of the given kind, with
// host the inside host's address: source NAT out of wan0, and on wan0 only
// what the kind lets in (always replies: conntrack ESTABLISHED, RELATED);
// the rest is dropped silently, to the router and through it. A upnp
// router's table also has the chains miniupnpd fills (its config names
// them).
func routerRules(kind NATKind, host string) string {
	masq := "masquerade"
	if kind == NATSymmetric {
		masq = "masquerade random,fully-random"
	}
	// What comes in through wan0 besides replies: full-cone and
	// address-restricted DNAT what their sets allow to the host (and the
	// forward chain lets DNATed packets through); upnp jumps to
	// miniupnpd's chains.
	var sets, dnat, track, pre, fwd, post string
	l4 := "meta l4proto { tcp, udp } "
	switch kind {
	case NATFullCone:
		sets = "\tset mapped { type inet_proto . inet_service; flags dynamic,timeout; timeout 5m; }\n"
		track = "\t\tiifname \"lan0\" oifname \"wan0\" " + l4 + "update @mapped { meta l4proto . th sport }\n"
		dnat = "\t\tiifname \"wan0\" " + l4 + "meta l4proto . th dport @mapped dnat ip to " + host + "\n"
	case NATAddressRestricted:
		sets = "\tset peers { type ipv4_addr . inet_proto . inet_service; flags dynamic,timeout; timeout 5m; }\n"
		track = "\t\tiifname \"lan0\" oifname \"wan0\" " + l4 + "update @peers { ip daddr . meta l4proto . th sport }\n"
		dnat = "\t\tiifname \"wan0\" " + l4 + "ip saddr . meta l4proto . th dport @peers dnat ip to " + host + "\n"
	case NATUPnP:
		pre = "\t\tjump prerouting_miniupnpd\n"
		post = "\t\tjump postrouting_miniupnpd\n"
		fwd = "\t\tiifname \"wan0\" jump miniupnpd\n"
	}
	if dnat != "" {
		fwd = "\t\tiifname \"wan0\" ct status dnat accept\n"
	}
	rules := `table inet weftnat {
` + sets + `	chain wan_dnat {
		type nat hook prerouting priority dstnat; policy accept;
` + pre + dnat + `	}
	chain wan_snat {
		type nat hook postrouting priority srcnat; policy accept;
` + post + `		oifname "wan0" ` + masq + `
	}
	chain wan_forward {
		type filter hook forward priority filter; policy accept;
` + track + `		iifname "wan0" ct state established,related accept
` + fwd + `		iifname "wan0" drop
	}
	chain wan_input {
		type filter hook input priority filter; policy accept;
		iifname "wan0" ct state established,related accept
		iifname "wan0" drop
	}
`
	if kind == NATUPnP {
		rules += "\tchain miniupnpd {\n\t}\n\tchain prerouting_miniupnpd {\n\t}\n\tchain postrouting_miniupnpd {\n\t}\n"
	}
	return rules + "}\n"
}

// miniupnpdPath is where Debian's miniupnpd package puts the daemon.
const miniupnpdPath = "/usr/sbin/miniupnpd"

// CanUPnPRouter says why a upnp router cannot be built here, or "" if it
// can: it needs miniupnpd (Debian package miniupnpd, nftables flavour).
func CanUPnPRouter() string {
	if _, err := os.Stat(miniupnpdPath); err != nil {
		return "no " + miniupnpdPath + " (apt-get install miniupnpd)"
	}
	return ""
}

// startUPnPd runs miniupnpd in h's router: UPnP IGD and NAT-PMP on lan0
// for the LAN's /24, mappings into the chains routerRules made. The
// router's WAN address is in the lab's 11.77.K.0/24, which miniupnpd
// accepts (it refuses reserved ranges such as 198.18/15 and private ones).
func (l *NATLab) startUPnPd(h LabHost, lan string) error {
	if l.dir == "" {
		d, err := os.MkdirTemp("", "weft-natlab-"+l.ID+"-")
		if err != nil {
			return fmt.Errorf("miniupnpd dir: %w", err)
		}
		l.dir = d
	}
	conf := filepath.Join(l.dir, h.Name+"-miniupnpd.conf")
	u := fnv.New64a()
	u.Write([]byte(l.ID + h.Name))
	x := u.Sum64()
	text := fmt.Sprintf(`ext_ifname=wan0
listening_ip=lan0
port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
notify_interval=30
clean_ruleset_interval=600
uuid=%08x-%04x-4%03x-8%03x-%012x
upnp_table_name=weftnat
upnp_nat_table_name=weftnat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 %s 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, uint32(x), uint16(x>>32), uint16(x>>40)&0xfff, uint16(x>>48)&0xfff, x&0xffffffffffff, lan)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return fmt.Errorf("miniupnpd config: %w", err)
	}
	logf, err := os.Create(filepath.Join(l.dir, h.Name+"-miniupnpd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	args := h.routerExec(miniupnpdPath, "-d", "-f", conf, "-P", filepath.Join(l.dir, h.Name+"-miniupnpd.pid"))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start miniupnpd in %s: %w", h.Router, err)
	}
	l.upnpd = append(l.upnpd, cmd)
	return nil
}

// UPnPLog returns what the miniupnpd of h's router wrote so far.
func (l *NATLab) UPnPLog(h LabHost) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, h.Name+"-miniupnpd.log"))
	return string(b)
}

func (h LabHost) routerExec(args ...string) []string {
	return append([]string{"ip", "netns", "exec", h.Router}, args...)
}

// CheckIsolated proves that no namespace of the lab can reach beyond it:
// see checkIsolated.
func (l *NATLab) CheckIsolated(ctx context.Context) error {
	private := map[string]bool{}
	for _, h := range l.Private {
		private[h.NS] = true
	}
	return checkIsolated(ctx, l.namespaces, private, l.Internet)
}

// checkIsolated proves that none of namespaces can reach beyond them: each
// has only the links a lab or NAT testnet makes (none into this machine's
// namespace), no route outside the internet range and the routers' LANs (a
// private host's default route goes to its router), and no address of
// the internet /24 is on this machine.
func checkIsolated(ctx context.Context, namespaces []string, private map[string]bool, internet string) error {
	inLab := func(route string) bool {
		f := strings.Fields(route)
		if len(f) == 0 {
			return true
		}
		dst := f[0]
		if dst == "default" {
			return false
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			if a, err2 := netip.ParseAddr(dst); err2 == nil {
				p = netip.PrefixFrom(a, 32)
			} else {
				return false
			}
		}
		return strings.HasPrefix(p.Addr().String(), NATLabPrefix) || strings.HasPrefix(p.Addr().String(), "10.78.")
	}
	for _, ns := range namespaces {
		out, err := output(ctx, "ip", "-n", ns, "-4", "route", "show")
		if err != nil {
			return fmt.Errorf("routes of %s: %w", ns, err)
		}
		for _, r := range strings.Split(strings.TrimSpace(out), "\n") {
			if inLab(r) || private[ns] && strings.HasPrefix(r, "default via 10.78.") {
				continue
			}
			return fmt.Errorf("namespace %s has a route out of the lab: %q", ns, r)
		}
		links, err := output(ctx, "ip", "-n", ns, "-o", "link", "show")
		if err != nil {
			return fmt.Errorf("links of %s: %w", ns, err)
		}
		for _, ln := range strings.Split(strings.TrimSpace(links), "\n") {
			if f := strings.Fields(ln); len(f) > 1 {
				dev := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
				switch {
				case dev == "lo" || dev == "br0" || dev == "eth0" || dev == "wan0" || dev == "lan0" || strings.HasPrefix(dev, "p"):
				default:
					return fmt.Errorf("namespace %s has an unexpected link %q", ns, dev)
				}
			}
		}
	}
	// No address of the internet range is on this machine.
	addrs, _ := output(ctx, "ip", "-4", "-o", "addr", "show")
	if pfx := strings.TrimSuffix(internet, "0/24"); strings.Contains(addrs, " "+pfx) {
		return fmt.Errorf("this machine has an address in the lab's range %s", internet)
	}
	return nil
}

// Exec returns the command line that runs args inside host h's namespace.
func (h LabHost) Exec(args ...string) []string {
	return append([]string{"ip", "netns", "exec", h.NS}, args...)
}

// Close removes every namespace of the lab (and with them their links and
// rules). It can run more than once.
func (l *NATLab) Close(ctx context.Context) error {
	var errs []error
	for _, c := range l.upnpd {
		// `ip netns exec` execs miniupnpd: the PID is the daemon's.
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	l.upnpd = nil
	if l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
		l.dir = ""
	}
	for i := len(l.namespaces) - 1; i >= 0; i-- {
		if err := run(ctx, "", "ip", "netns", "del", l.namespaces[i]); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	l.namespaces = nil
	return errors.Join(errs...)
}

// LabLeftovers lists the namespaces of lab id still on the machine.
func LabLeftovers(ctx context.Context, id string) []string {
	out, _ := output(ctx, "ip", "netns", "list")
	var left []string
	for _, ln := range strings.Split(out, "\n") {
		if f := strings.Fields(ln); len(f) > 0 && strings.HasPrefix(f[0], "wn-"+id+"-") {
			left = append(left, f[0])
		}
	}
	return left
}

func (l *NATLab) addNS(ctx context.Context, ns string) error {
	l.namespaces = append(l.namespaces, ns)
	return ipSteps(ctx, []string{"netns", "add", ns}, []string{"-n", ns, "link", "set", "lo", "up"})
}

func ipSteps(ctx context.Context, steps ...[]string) error {
	for _, a := range steps {
		if err := run(ctx, "", "ip", a...); err != nil {
			return err
		}
	}
	return nil
}

// pickLabSubnet returns an 11.77.K.0/24 that no address or route of this
// machine uses, starting from a hash of the lab ID.
func pickLabSubnet(ctx context.Context, id string) (string, error) {
	addrs, _ := output(ctx, "ip", "-4", "-o", "addr", "show")
	routes, _ := output(ctx, "ip", "-4", "route", "show", "table", "all")
	used := addrs + "\n" + routes
	h := fnv.New32a()
	h.Write([]byte(id))
	start := int(h.Sum32() % 250)
	for i := range 250 {
		k := (start+i)%250 + 1
		pfx := fmt.Sprintf("%s%d.", NATLabPrefix, k)
		if !strings.Contains(used, pfx) {
			return pfx + "0/24", nil
		}
	}
	return "", errors.New("every " + NATLabPrefix + "K.0/24 is in use on this machine")
}
