package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/node/testnet"
)

// labDaemon is a weft daemon running inside a NAT lab namespace.
type labDaemon struct {
	h    testnet.LabHost
	bin  string
	dir  string
	id   string
	cmd  *exec.Cmd
	logf string
	done chan struct{}
}

// cli runs the weft CLI inside the daemon's namespace (its API listens on
// the namespace's loopback) and returns stdout, failing the test on error.
func (d *labDaemon) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.try(args...)
	if err != nil {
		t.Fatalf("%s: weft %s: %v", d.h.Name, strings.Join(args, " "), err)
	}
	return out
}

func (d *labDaemon) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := d.h.Exec(append([]string{d.bin}, append(args, "--repo", d.dir)...)...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (d *labDaemon) status(t *testing.T) api.Status {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(d.cli(t, "status", "--json")), &st); err != nil {
		t.Fatalf("%s: status: %v", d.h.Name, err)
	}
	return st
}

// peer returns d's view of its connection to p, if it has one.
func (d *labDaemon) peer(t *testing.T, p string) (api.Peer, bool) {
	t.Helper()
	var ps []api.Peer
	if err := json.Unmarshal([]byte(d.cli(t, "peers", "--json")), &ps); err != nil {
		t.Fatalf("%s: peers: %v", d.h.Name, err)
	}
	i := slices.IndexFunc(ps, func(x api.Peer) bool { return x.ID == p })
	if i < 0 {
		return api.Peer{}, false
	}
	return ps[i], true
}

func (d *labDaemon) addr(transport string) string {
	if transport == "quic-v1" {
		return fmt.Sprintf("/ip4/%s/udp/4001/quic-v1/p2p/%s", d.h.IP, d.id)
	}
	return fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", d.h.IP, d.id)
}

// startLabDaemon inits a repo (local profile, listening on the host's
// address in its namespace), applies settings and runs `weft daemon` in h's namespace.
// The process is killed by its PID on cleanup.
func startLabDaemon(t *testing.T, bin string, h testnet.LabHost, settings [][2]string) *labDaemon {
	t.Helper()
	d := &labDaemon{h: h, bin: bin, dir: filepath.Join(t.TempDir(), h.Name), done: make(chan struct{})}
	if code, _, stderr := weftQuiet("init", "--repo", d.dir, "--listen", "/ip4/"+h.IP+"/tcp/4001", "--listen", "/ip4/"+h.IP+"/udp/4001/quic-v1", "--api", "127.0.0.1:5001"); code != 0 {
		t.Fatalf("init %s: %s", h.Name, stderr)
	}
	for _, kv := range settings {
		if code, _, stderr := weftQuiet("config", "set", "--repo", d.dir, kv[0], kv[1]); code != 0 {
			t.Fatalf("%s: config set %s %s: %s", h.Name, kv[0], kv[1], stderr)
		}
	}
	cfg, err := node.ReadConfig(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	d.id = cfg.PeerID
	d.logf = filepath.Join(t.TempDir(), h.Name+".log")
	logf, err := os.Create(d.logf)
	if err != nil {
		t.Fatal(err)
	}
	full := h.Exec(bin, "daemon", "--repo", d.dir, "--log-level", "info")
	d.cmd = exec.Command(full[0], full[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Hole punching says what it tries in the log shown on failure.
	d.cmd.Env = append(os.Environ(), "GOLOG_LOG_LEVEL=p2p-holepunch=debug")
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", h.Name, err)
	}
	logf.Close()
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Signal(syscall.SIGKILL) // `ip netns exec` execs the daemon: this PID is it
			<-d.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(d.logf)
			t.Logf("%s log (last 3000 bytes):\n%s", h.Name, tailString(string(b), 3000))
		}
	})
	nodetest.WaitFor(t, 60*time.Second, h.Name+" daemon answers", func() bool {
		select {
		case <-d.done:
			b, _ := os.ReadFile(d.logf)
			t.Fatalf("%s exited:\n%s", h.Name, b)
		default:
		}
		_, err := d.try("id")
		return err == nil
	})
	return d
}

// waitLog waits up to 10 s for a line of d's log that holds every one of
// parts, and logs it.
func (d *labDaemon) waitLog(t *testing.T, what string, parts ...string) {
	t.Helper()
	nodetest.WaitFor(t, 10*time.Second, d.h.Name+"'s log records "+what, func() bool {
		log, _ := os.ReadFile(d.logf)
		for _, ln := range strings.Split(string(log), "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(ln, p) }) {
				t.Logf("%s: %s", d.h.Name, ln[max(0, strings.Index(ln, "msg=")):])
				return true
			}
		}
		return false
	})
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestNATHolePunch builds a small internet in network namespaces: a relay
// and three observers with public addresses, and nodes A and B each behind
// its own NAT router (MASQUERADE, replies only inward, everything else
// dropped silently). A and B reserve slots on the relay, B connects to A
// through it, hole punching (DCUtR) upgrades the pair to a direct
// connection, weft closes the relayed one, and B fetches a file from A.
// C, behind a symmetric NAT, then connects to A through the relay and the
// sweep punch gives them a direct QUIC connection; D, symmetric too,
// fetches from C over the relay. The times from the relayed connects to
// the direct connections, and the fetch rates, are logged. It needs root (namespaces, nftables); without root it says so and skips.
func TestNATHolePunch(t *testing.T) {
	if why := testnet.CanNATLab(); why != "" {
		if why == "not root" || runtime.GOOS != "linux" {
			t.Skip("NAT lab needs root on Linux (network namespaces, nftables): " + why)
		}
		t.Fatalf("cannot build the NAT lab: %s", why)
	}
	if testing.Short() {
		t.Skip("builds the weft binary and a NAT lab of 16 namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildWeft(t)

	id := fmt.Sprintf("%04x", os.Getpid()&0xffff)
	lab, err := testnet.NewNATLab(ctx, id, []string{"relay", "o1", "o2", "o3"},
		map[string]testnet.NATKind{"a": testnet.NATPortRestricted, "b": testnet.NATPortRestricted, "c": testnet.NATSymmetric, "d": testnet.NATSymmetric,
			"e": testnet.NATAddressRestricted, "f": testnet.NATFullCone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("remove the lab: %v", err)
		}
		if left := testnet.LabLeftovers(context.Background(), id); len(left) > 0 {
			t.Errorf("lab namespaces left behind: %v", left)
		}
	})
	// Before any traffic: nothing in the lab can reach this machine's
	// network or beyond.
	if err := lab.CheckIsolated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range lab.Private {
		t.Logf("lab internet %s: %s at %s behind router %s (%s)", lab.Internet, h.Name, h.IP, h.PublicIP, h.Kind)
	}

	started := time.Now()
	relay := startLabDaemon(t, bin, lab.Public[0], [][2]string{
		{"relay.service", "true"}, {"relay.client", "false"},
		{"nat.autonat_service", "true"}, {"nat.reachability", "public"},
		// Room for the throughput measurement over the relay.
		{"relay.connection_data", "64MiB"},
	})
	var public []*labDaemon
	public = append(public, relay)
	for _, h := range lab.Public[1:] {
		public = append(public, startLabDaemon(t, bin, h, [][2]string{
			{"relay.client", "false"}, {"nat.autonat_service", "true"},
			{"bootstrap", fmt.Sprintf("[%q]", relay.addr("tcp"))},
		}))
	}
	// Over TCP to all four public peers: an observed address is trusted
	// after 4 distinct observers (go-libp2p's threshold), and AutoNAT then
	// checks it.
	var boot []string
	for _, p := range public {
		boot = append(boot, p.addr("tcp"))
	}
	bootTOML, _ := json.Marshal(boot)
	private := map[string]*labDaemon{}
	for _, h := range lab.Private {
		// dht.mode auto, as in the public profile: a node judged private is
		// a DHT client, so others do not dial it (through its relay) for
		// routing before the test does.
		private[h.Name] = startLabDaemon(t, bin, h, [][2]string{
			{"dht.mode", "auto"},
			{"relay.static", fmt.Sprintf("[%q]", relay.addr("tcp"))},
			{"bootstrap", string(bootTOML)},
		})
	}
	a, b, c, d, e, f := private["a"], private["b"], private["c"], private["d"], private["e"], private["f"]

	// AutoNAT gives everyone the right verdict within 60 s of start: the
	// observers (not forced, unlike the relay) and F, behind a full-cone
	// router that lets anyone in at its mapping, public; the nodes behind
	// the port-restricted and symmetric routers private; and E, behind an
	// address-restricted router, private too: AutoNAT's dial-backs come
	// from servers E has contacted and get in, but peers E never contacted
	// (reach witnesses) cannot reach it.
	verdicts := func() string {
		var out []string
		for _, x := range append(public[1:], a, b, c, d, e, f) {
			out = append(out, x.h.Name+"="+x.status(t).NAT.Reachability)
		}
		return strings.Join(out, " ")
	}
	want := "o1=public o2=public o3=public a=private b=private c=private d=private e=private f=public"
	nodetest.WaitFor(t, time.Until(started.Add(60*time.Second)), "AutoNAT verdicts "+want, func() bool {
		return verdicts() == want
	})
	t.Logf("AutoNAT verdicts right %v after the first daemon started", time.Since(started).Round(100*time.Millisecond))
	// E's private verdict came from the witnesses, F's public one stood
	// their test.
	for _, w := range []struct {
		d    *labDaemon
		line string
	}{{e, "peers never contacted cannot reach this node"}, {f, "a peer never contacted reached this node"}} {
		w.d.waitLog(t, "the reach witnesses' answer", w.line)
	}

	for _, x := range []*labDaemon{a, b, c, d} {
		nodetest.WaitFor(t, 90*time.Second, x.h.Name+" holds a reservation on the relay", func() bool {
			return slices.Contains(x.status(t).NAT.Relays, relay.id)
		})
	}
	// AutoNAT: A and B, behind routers that keep their port, learn their
	// outside address from the observers and are judged private.
	for _, d := range []*labDaemon{a, b} {
		var st api.Status
		nodetest.WaitFor(t, 90*time.Second, d.h.Name+" observes its router's address and is judged private", func() bool {
			st = d.status(t)
			return st.NAT.Reachability == "private" && slices.ContainsFunc(st.NAT.Observed, func(o string) bool {
				return strings.HasPrefix(o, "/ip4/"+d.h.PublicIP+"/tcp/")
			})
		})
		t.Logf("%s: reachability %s %v, observed %v", d.h.Name, st.NAT.Reachability, st.NAT.Transports, st.NAT.Observed)
	}
	circuit := relay.addr("tcp") + "/p2p-circuit/p2p/" + a.id
	start := time.Now()
	b.cli(t, "connect", circuit)
	var direct api.Peer
	nodetest.WaitFor(t, 60*time.Second, "B's connection to A turns direct and the relayed one is closed", func() bool {
		p, ok := b.peer(t, a.id)
		if !ok || p.Conns != direct.Conns || p.Relayed != direct.Relayed || p.Direct != direct.Direct {
			t.Logf("%v: B's connection to A: %+v", time.Since(start).Round(time.Millisecond), p)
		}
		direct = p
		return ok && p.Direct && !p.Relayed
	})
	took := time.Since(start)
	t.Logf("relayed connect to direct connection: %v, over %s (%s, %s)", took.Round(time.Millisecond), direct.Transport, direct.Addr, direct.Direction)
	// A, which got the inbound relayed connection, ran DCUtR: its log says
	// the punch worked (go-libp2p's holepunch debug line).
	a.waitLog(t, "a successful hole punch to B", "hole punching with successful", b.id)
	if !strings.HasPrefix(direct.Addr, "/ip4/"+lab.Private[0].PublicIP+"/") {
		t.Errorf("B's direct connection to A goes to %s, want A's router %s", direct.Addr, lab.Private[0].PublicIP)
	}

	// A file from A to B over the direct connection.
	data := make([]byte, 32<<20)
	rand.Read(data)
	src := filepath.Join(t.TempDir(), "data.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cid := strings.TrimSpace(a.cli(t, "add", "-q", src))
	fstart := time.Now()
	got := b.cli(t, "cat", cid)
	fd := time.Since(fstart)
	if got != string(data) {
		t.Fatalf("B fetched %d bytes from A that differ from the %d added", len(got), len(data))
	}
	t.Logf("fetch of %d MiB from A to B over the direct connection: %v (%.1f MiB/s, incl. CLI start)", len(data)>>20, fd.Round(time.Millisecond), float64(len(data))/(1<<20)/fd.Seconds())

	// The routers drop what nobody asked for: a dial from a public host to
	// A's outside address times out (no RST, no ICMP), so the direct
	// connection above came from hole punching.
	probe := lab.Public[3].Exec("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/"+lab.Private[0].PublicIP+"/4001")
	if out, err := exec.Command(probe[0], probe[1:]...).CombinedOutput(); err == nil {
		t.Errorf("an unsolicited TCP dial to A's router was answered: the router does not filter (%s)", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 124 {
		t.Errorf("an unsolicited TCP dial to A's router failed at once (%v: %s), want a silent drop (timeout)", err, out)
	}

	// C is behind a symmetric NAT, which gives each destination a fresh
	// port: DCUtR cannot punch it against A's port-restricted router. The
	// sweep does: C probes A's mapping, A sprays C's router's ports until a
	// probe comes through, then dials QUIC to the port it came from.
	start = time.Now()
	c.cli(t, "connect", circuit)
	nodetest.WaitFor(t, 60*time.Second, "C's connection to A turns direct (sweep) and the relayed one is closed", func() bool {
		p, ok := c.peer(t, a.id)
		direct = p
		return ok && p.Direct && !p.Relayed
	})
	t.Logf("C (symmetric) to A (port-restricted): relayed connect to direct connection: %v, over %s (%s)", time.Since(start).Round(time.Millisecond), direct.Transport, direct.Addr)
	if direct.Transport != "quic-v1" {
		t.Errorf("C's direct connection to A is over %s, want quic-v1 (the sweep punches UDP)", direct.Transport)
	}
	a.waitLog(t, "the sweep's direct connection to C", "sweep punch: direct connection", c.id)
	fstart = time.Now()
	got = c.cli(t, "cat", cid)
	fd = time.Since(fstart)
	if got != string(data) {
		t.Fatalf("C fetched %d bytes from A that differ from the %d added", len(got), len(data))
	}
	t.Logf("fetch of %d MiB from A to C over the swept direct connection: %v (%.1f MiB/s, incl. CLI start)", len(data)>>20, fd.Round(time.Millisecond), float64(len(data))/(1<<20)/fd.Seconds())

	// D and C are both behind symmetric NATs: neither mapping can be
	// found from the other side, and the pair stays on the relay, which
	// carries the same fetch (this relay allows 64 MiB per connection).
	cidC := strings.TrimSpace(c.cli(t, "add", "-q", src))
	d.cli(t, "connect", relay.addr("tcp")+"/p2p-circuit/p2p/"+c.id)
	fstart = time.Now()
	got = d.cli(t, "cat", cidC)
	fd = time.Since(fstart)
	if got != string(data) {
		t.Fatalf("D fetched %d bytes from C over the relay that differ from the %d added", len(got), len(data))
	}
	p, ok := d.peer(t, c.id)
	if !ok || !p.Relayed || p.Direct {
		t.Errorf("D's connection to C is %+v, want relayed only (symmetric NATs on both sides)", p)
	}
	t.Logf("fetch of %d MiB from C to D over the relay: %v (%.1f MiB/s, incl. CLI start)", len(data)>>20, fd.Round(time.Millisecond), float64(len(data))/(1<<20)/fd.Seconds())
}

// TestPrintNAT: `weft status` shows the verdict with its per-transport
// parts, the relay service and the relays held.
func TestPrintNAT(t *testing.T) {
	var buf bytes.Buffer
	tw := newTable(&buf)
	printNAT(tw, api.NATStatus{
		Reachability: "private",
		Transports:   map[string]string{"tcp": "private", "quic-v1": "unknown"},
		Observed:     []string{"/ip4/11.0.0.1/tcp/4001"},
		Relays:       []string{"12D3KooWRelayA", "12D3KooWRelayB"},
	})
	tw.Flush()
	var lines []string // with runs of spaces made one
	for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		lines = append(lines, strings.Join(strings.Fields(ln), " "))
	}
	want := []string{
		"reachability private (quic-v1 unknown, tcp private)",
		"relay service off",
		"relays 12D3KooWRelayA",
		"12D3KooWRelayB",
		"observed /ip4/11.0.0.1/tcp/4001",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("status lines\n%q\nwant\n%q", lines, want)
	}
}
