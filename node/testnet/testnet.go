package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/proc"
)

// Options say where and how a testnet runs.
type Options struct {
	Dir      string    // testnet directory: state, repos, logs (created; must not hold a live testnet)
	Bin      string    // weft binary the daemons run (default: this executable)
	Mode     string    // overrides the scenario's network.mode when set
	Progress io.Writer // start-up progress ("12/50 nodes ready"); nil: quiet
	// StartConcurrency bounds daemons starting at once (default 2 per core,
	// at least 4).
	StartConcurrency int
	// Shaper chooses how latency, jitter and loss are applied in netns
	// mode: "" (auto: tc netem where the kernel has it, else the userspace
	// delay line when the scenario asks for any of them), "delayline"
	// (always the delay line) or "tc" (never the delay line).
	Shaper string
}

// Shaper choices of Options.Shaper.
const (
	ShaperAuto      = ""
	ShaperDelayLine = "delayline"
	ShaperTC        = "tc"
)

// Testnet is a running set of weft daemons. Its methods are safe for
// concurrent use.
type Testnet struct {
	st       *State
	sc       *Scenario
	progress io.Writer
	conc     int

	mu    sync.Mutex
	outMu sync.Mutex
	procs map[string]*proc.Process // started by this process
	rng   *rand.Rand

	shaper     string        // Options.Shaper
	shaperProc *proc.Process // the shaper, if this process started it
	shaperMu   sync.Mutex    // serialises writes of the shaper's config

	httpMu sync.Mutex
	httpNS map[string]*http.Client // API clients dialing inside a namespace (NAT testnets)
}

// State returns the testnet's state (read-only for callers).
func (t *Testnet) State() *State { return t.st }

func (t *Testnet) save() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.saveLocked()
}

func (t *Testnet) saveLocked() error { return t.st.save() }

func (t *Testnet) say(format string, args ...any) {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if t.progress != nil {
		fmt.Fprintf(t.progress, format+"\n", args...)
	}
}

// Up makes a testnet for the scenario's groups, starts every node not
// marked no_start, and returns once they answer on their API. On error it
// tears down what it made, unless keep is set (then Down cleans up).
func Up(ctx context.Context, sc *Scenario, o Options) (t *Testnet, err error) {
	if o.Dir == "" {
		return nil, errors.New("testnet: no directory given")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if st, err := LoadState(dir); err == nil {
		return nil, fmt.Errorf("a testnet (id %s, %d nodes) is already up in %s: 'weft testnet down --dir %s' first", st.ID, len(st.Nodes), dir, dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("testnet dir: %w", err)
	}
	bin := o.Bin
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the weft binary: %w", err)
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	mode := sc.Network.Mode
	if o.Mode != "" {
		mode = o.Mode
	}
	if mode == ModeSim {
		return nil, errors.New("a simulated testnet runs a scenario in one process ('weft testnet run FILE --mode sim'); it cannot be brought up for other commands")
	}
	st := &State{ID: newID(), Dir: dir, Bin: bin, Created: time.Now().UTC(), Scenario: sc.Name, Seed: sc.Seed, Topology: sc.Network.Topology}
	why := canNetns()
	switch {
	case mode == ModeLoopback:
		st.Mode, st.Why = ModeLoopback, "asked for"
	case why == "":
		st.Mode = ModeNetns
	case mode == ModeNetns:
		return nil, fmt.Errorf("network namespaces unavailable: %s", why)
	case sc.HasNAT():
		return nil, fmt.Errorf("groups behind a NAT need network namespaces, unavailable here: %s", why)
	default:
		st.Mode, st.Why = ModeLoopback, why
	}
	switch o.Shaper {
	case ShaperAuto, ShaperDelayLine, ShaperTC:
	default:
		return nil, fmt.Errorf("shaper %q: want delayline or tc (or nothing for auto)", o.Shaper)
	}
	conc := o.StartConcurrency
	if conc <= 0 {
		conc = 4
	}
	t = &Testnet{st: st, sc: sc, progress: o.Progress, conc: conc, procs: map[string]*proc.Process{},
		rng: rand.New(rand.NewPCG(uint64(sc.Seed), 0x7765667421)), shaper: o.Shaper}
	if err := t.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			t.say("start-up failed; tearing down")
			if derr := t.Down(context.Background(), false); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	if st.Mode == ModeNetns && sc.HasNAT() {
		st.Internet = true
		if st.Subnet, err = pickLabSubnet(ctx, st.ID); err != nil {
			return t, err
		}
		t.say("testnet %s: %d nodes in network namespaces on the internet %s (only inside them), some behind NAT routers", st.ID, len(sc.NodeNames()), st.Subnet)
		if err := t.setupInternet(ctx); err != nil {
			return t, err
		}
		t.say("shaping: %s", st.ShapingNote())
	} else if st.Mode == ModeNetns {
		st.Subnet = sc.Network.Subnet
		if st.Subnet == "" {
			if st.Subnet, err = pickSubnet(ctx, st.ID, len(sc.NodeNames())); err != nil {
				return t, err
			}
		}
		t.say("testnet %s: %d nodes in network namespaces on %s (shaping: %s)", st.ID, len(sc.NodeNames()), st.Subnet, "probing")
		if err := t.setupSwitch(ctx); err != nil {
			return t, err
		}
		t.say("shaping: %s", st.ShapingNote())
	} else {
		t.say("testnet %s: %d nodes on 127.0.0.1 (%s: no namespaces, no link shaping)", st.ID, len(sc.NodeNames()), st.Why)
	}
	if err := t.makeNodes(ctx); err != nil {
		return t, err
	}
	if env := daemonProcs(len(st.Nodes)); env != "" {
		t.say("%d daemons on %d cores: each runs with %s (set GOMAXPROCS to choose)", len(st.Nodes), runtime.NumCPU(), env)
	}
	if st.Internet {
		// Before any traffic: nothing in the testnet reaches beyond it.
		if err := t.checkInternetIsolated(ctx); err != nil {
			return t, err
		}
	}
	var start []string
	for _, g := range sc.Groups {
		if g.NoStart {
			continue
		}
		for i := 1; i <= g.Count; i++ {
			start = append(start, nodeName(g.Name, i))
		}
	}
	if err := t.Start(ctx, start); err != nil {
		return t, err
	}
	return t, nil
}

// makeNodes initialises every repo, makes the namespaces and writes the
// bootstrap lists of the topology.
func (t *Testnet) makeNodes(ctx context.Context) error {
	st, sc := t.st, t.sc
	shapes := map[string]Shape{}
	for _, g := range sc.Groups {
		for i := 1; i <= g.Count; i++ {
			name := nodeName(g.Name, i)
			n := &NodeState{Name: name, Group: g.Name,
				Repo: filepath.Join(st.Dir, "nodes", name), Log: filepath.Join(st.Dir, "logs", name+".log")}
			if st.Mode == ModeNetns {
				n.NS = nsPrefix(st.ID) + name
				n.IP = ipOf(st.Subnet, len(st.Nodes)+1)
				if g.NAT != "" {
					placeNATNode(st, n, len(st.Nodes)+1, g.NAT)
				}
				n.Swarm = fmt.Sprintf("/ip4/%s/tcp/%d", n.IP, SwarmPort)
				n.API = fmt.Sprintf("%s:%d", n.IP, APIPort)
				if st.Internet {
					// Reached from a thread inside the namespace (nsHTTP).
					n.API = fmt.Sprintf("127.0.0.1:%d", APIPort)
				}
			} else {
				n.IP = "127.0.0.1"
				sp, err := freePort()
				if err != nil {
					return err
				}
				ap, err := freePort()
				if err != nil {
					return err
				}
				n.Swarm = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", sp)
				n.API = fmt.Sprintf("127.0.0.1:%d", ap)
			}
			s := sc.Network.Link
			if g.Link != nil {
				s = s.merge(*g.Link)
			}
			shapes[name] = s
			st.Nodes = append(st.Nodes, n)
		}
	}
	if err := t.save(); err != nil {
		return err
	}
	// Repos first (peer IDs are needed for the bootstrap lists).
	err := t.parallel(st.Nodes, 8, func(n *NodeState) error {
		listen := []string{n.Swarm}
		if sc.Network.QUIC {
			listen = append(listen, strings.Replace(n.Swarm, "/tcp/", "/udp/", 1)+"/quic-v1")
		}
		io := node.InitOptions{Listen: listen, API: n.API}
		if st.Mode != ModeNetns {
			io.Gateway = "127.0.0.1:0" // loopback nodes share 8080: each takes a free port
		}
		cfg, err := node.InitRepo(n.Repo, io)
		if err != nil {
			return fmt.Errorf("init %s: %w", n.Name, err)
		}
		n.PeerID = cfg.PeerID
		n.Token = node.ReadToken(n.Repo)
		return nil
	})
	if err != nil {
		return err
	}
	boot := t.topology()
	err = t.parallel(st.Nodes, 8, func(n *NodeState) error {
		cfg, err := node.ReadConfig(n.Repo)
		if err != nil {
			return err
		}
		cfg.Bootstrap = boot[n.Name]
		cfg.Swarm.EnableQUIC = sc.Network.QUIC
		// A testnet node should find its peers again soon after a heal.
		cfg.DHT.BootstrapInterval = node.Duration(30 * time.Second)
		if err := applyConfig(&cfg, sc.Config); err != nil {
			return fmt.Errorf("%s: config: %w", n.Name, err)
		}
		if g := sc.GroupOf(n.Name); g != nil {
			if err := applyConfig(&cfg, g.Config); err != nil {
				return fmt.Errorf("%s: group config: %w", n.Name, err)
			}
		}
		return node.SaveConfigFile(n.Repo, cfg)
	})
	if err != nil {
		return err
	}
	t.say("%d repos initialised", len(st.Nodes))
	if st.Mode == ModeNetns {
		idx := map[string]int{}
		for i, n := range st.Nodes {
			idx[n.Name] = i + 1
		}
		err = t.parallel(st.Nodes, 4, func(n *NodeState) error {
			add := t.addNodeNS
			if n.NAT != "" {
				add = t.addNATNodeNS
			}
			if err := add(ctx, n, idx[n.Name]); err != nil {
				return fmt.Errorf("namespace for %s: %w", n.Name, err)
			}
			return t.applyShape(ctx, n, shapes[n.Name])
		})
		if err != nil {
			return err
		}
		t.say("%d namespaces linked to the bridge", len(st.Nodes))
		if st.Shaping == ShapingDelayLine {
			if err := t.startShaper(ctx); err != nil {
				return err
			}
		}
	} else {
		for _, n := range st.Nodes {
			n.Shape = shapes[n.Name]
		}
	}
	return t.save()
}

// topology returns each node's bootstrap list.
func (t *Testnet) topology() map[string][]string {
	nodes := t.st.Nodes
	addr := func(n *NodeState) string { return n.Swarm + "/p2p/" + n.PeerID }
	out := map[string][]string{}
	add := func(a, b *NodeState) {
		if a == b {
			return
		}
		for _, s := range out[a.Name] {
			if s == addr(b) {
				return
			}
		}
		out[a.Name] = append(out[a.Name], addr(b))
	}
	switch {
	case t.st.Internet:
		// Everyone knows every public node: they are the only ones
		// reachable at start, and an observed address counts once 4 peers
		// saw it.
		for _, n := range nodes {
			for _, m := range nodes {
				if m.NAT == "" {
					add(n, m)
				}
			}
		}
	case t.sc.Network.Topology == "ring":
		for i, n := range nodes {
			if len(nodes) > 1 {
				add(n, nodes[(i+1)%len(nodes)])
				add(n, nodes[(i+len(nodes)-1)%len(nodes)])
			}
		}
	case t.sc.Network.Topology == "random":
		for i, n := range nodes[1:] {
			// Earlier nodes only, so the graph is connected.
			k := min(t.sc.Network.Degree, i+1)
			for _, j := range t.rng.Perm(i + 1)[:k] {
				add(n, nodes[j])
			}
		}
	default: // star
		for _, n := range nodes[1:] {
			add(n, nodes[0])
		}
	}
	for _, n := range nodes {
		if out[n.Name] == nil {
			out[n.Name] = []string{}
		}
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// parallel runs fn over nodes with at most conc at once and returns every
// error.
func (t *Testnet) parallel(nodes []*NodeState, conc int, fn func(*NodeState) error) error {
	return parallel(nodes, conc, fn)
}

func parallel(nodes []*NodeState, conc int, fn func(*NodeState) error) error {
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(n); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (t *Testnet) nodes(names []string) ([]*NodeState, error) {
	out := make([]*NodeState, 0, len(names))
	for _, name := range names {
		n, err := t.st.Node(name)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Client returns an API client for a node.
func (t *Testnet) Client(n *NodeState) *api.Client {
	if n.Token == "" {
		n.Token = node.ReadToken(n.Repo)
	}
	if t.st.Internet && n.NS != "" {
		return api.NewClientHTTP(n.API, n.Token, t.nsHTTP(n.NS))
	}
	return api.NewClient(n.API, n.Token)
}

// Start starts the named nodes (those not running) and waits until each
// answers on its API, printing progress.
func (t *Testnet) Start(ctx context.Context, names []string) error {
	ns, err := t.nodes(names)
	if err != nil {
		return err
	}
	var todo []*NodeState
	for _, n := range ns {
		if !n.alive() {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	// A node starts once the nodes it bootstraps from that come before it
	// answer, so its first bootstrap round finds them listening (a refused
	// dial would put the peer in libp2p's dial backoff for seconds).
	// Nodes are scheduled in order, so waiting on earlier ones never
	// deadlocks the pool.
	done := map[string]chan struct{}{}
	for _, n := range todo {
		done[n.Name] = make(chan struct{})
	}
	byAddr := map[string]*NodeState{}
	for _, n := range t.st.Nodes {
		byAddr[n.Swarm+"/p2p/"+n.PeerID] = n
	}
	deps := map[string][]chan struct{}{}
	for _, n := range todo {
		cfg, err := node.ReadConfig(n.Repo)
		if err != nil {
			return err
		}
		for _, b := range cfg.Bootstrap {
			if m := byAddr[b]; m != nil && t.index(m) < t.index(n) && done[m.Name] != nil {
				deps[n.Name] = append(deps[n.Name], done[m.Name])
			}
		}
	}
	var ready int
	var mu sync.Mutex
	began := time.Now()
	err = t.parallel(todo, t.conc, func(n *NodeState) error {
		defer close(done[n.Name])
		for _, d := range deps[n.Name] {
			select {
			case <-d:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := t.startOne(ctx, n); err != nil {
			return err
		}
		mu.Lock()
		ready++
		r := ready
		mu.Unlock()
		if len(todo) > 1 && (r == len(todo) || r%max(1, len(todo)/10) == 0) {
			t.say("%d/%d nodes ready (%.1fs)", r, len(todo), time.Since(began).Seconds())
		}
		return nil
	})
	if err != nil {
		return err
	}
	if t.st.Mode == ModeLoopback && t.st.Partition != nil {
		if err := t.applyPartition(ctx, t.st.Partition, false); err != nil {
			return err
		}
	}
	t.dialBootstrap(ctx, todo)
	return nil
}

// dialBootstrap has each node dial its bootstrap list once more: nodes
// start in parallel, so a node's first bootstrap round may have run before
// its peers listened, and the next round is only due much later.
func (t *Testnet) dialBootstrap(ctx context.Context, ns []*NodeState) {
	_ = t.parallel(ns, 8, func(n *NodeState) error {
		cfg, err := node.ReadConfig(n.Repo)
		if err != nil {
			return nil
		}
		c := t.Client(n)
		for _, b := range cfg.Bootstrap {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = c.Connect(cctx, b) // a partitioned or stopped peer may not answer
			cancel()
		}
		return nil
	})
}

// daemonProcs is the GOMAXPROCS setting ("GOMAXPROCS=1") for the daemons
// of a testnet of n nodes, or "" to leave Go's default. With many more
// daemons than cores (over 25 a core) each is idle most of the time, and an
// idle Go process with several Ps spins up one more thread per wake-up
// looking for work: measured in a 30-daemon swarm on 2 cores, GOMAXPROCS=1 cut idle CPU from
// 0.22% to 0.15% of a core per daemon and anonymous memory from 19.8 to
// 14.6 MiB. A GOMAXPROCS in the environment wins.
func daemonProcs(n int) string {
	if _, set := os.LookupEnv("GOMAXPROCS"); set || n <= 25*runtime.NumCPU() {
		return ""
	}
	return "GOMAXPROCS=1"
}

// startOne starts a node's daemon and waits for its API.
func (t *Testnet) startOne(ctx context.Context, n *NodeState) error {
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== testnet: start %d at %s ===\n", n.Starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	args := []string{t.st.Bin, "daemon", "--repo", n.Repo}
	if n.NS != "" {
		args = append([]string{"ip", "netns", "exec", n.NS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "WEFT_PATH="+n.Repo)
	if env := daemonProcs(len(t.st.Nodes)); env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	// Its own session: a Ctrl-C meant for the testnet command does not
	// reach the daemons before the testnet stops them itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p, err := proc.Start(cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	t.mu.Lock()
	n.mu.Lock()
	n.PID = p.PID
	n.PIDStart = procStart(n.PID)
	n.Starts++
	n.mu.Unlock()
	t.procs[n.Name] = p
	err = t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	c := t.Client(n)
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 0; ; attempt++ {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited during start-up: %s", n.Name, tail(n.Log, 5))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		id, err := c.ID(cctx)
		cancel()
		if err == nil && id.ID == n.PeerID {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer on %s within 90s (%v): %s", n.Name, n.API, err, tail(n.Log, 5))
		}
		time.Sleep(time.Duration(min(50*(attempt+1), 250)) * time.Millisecond)
	}
}

// Kill sends SIGKILL to the named nodes and waits until they are gone.
func (t *Testnet) Kill(ctx context.Context, names []string) error {
	return t.stop(ctx, names, syscall.SIGKILL)
}

// Stop stops the named nodes gracefully (SIGTERM, then SIGKILL after 15s).
func (t *Testnet) Stop(ctx context.Context, names []string) error {
	return t.stop(ctx, names, syscall.SIGTERM)
}

func (t *Testnet) stop(ctx context.Context, names []string, sig syscall.Signal) error {
	ns, err := t.nodes(names)
	if err != nil {
		return err
	}
	return t.parallel(ns, 16, func(n *NodeState) error {
		if err := n.signal(sig); err != nil {
			return fmt.Errorf("signal %s (pid %d): %w", n.Name, n.PID, err)
		}
		if !waitGone(n, 15*time.Second, t.process(n.Name)) {
			_ = n.signal(syscall.SIGKILL)
			if !waitGone(n, 5*time.Second, t.process(n.Name)) {
				return fmt.Errorf("%s (pid %d) did not exit", n.Name, n.PID)
			}
		}
		return nil
	})
}

func (t *Testnet) process(name string) *proc.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.procs[name]
}

// waitGone waits until n's process has exited (and, if this process
// started it, has been reaped).
func waitGone(n *NodeState, d time.Duration, p *proc.Process) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p != nil {
			select {
			case <-p.Done():
				return true
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		if !n.alive() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Restart stops the named nodes gracefully if they run, and starts them
// again on the same repos.
func (t *Testnet) Restart(ctx context.Context, names []string) error {
	if err := t.Stop(ctx, names); err != nil {
		return err
	}
	return t.Start(ctx, names)
}

// Partition cuts the testnet into groups of node names: nodes of different
// groups can no longer reach each other. Nodes in no group keep reaching
// everyone. A new partition replaces the current one.
func (t *Testnet) Partition(ctx context.Context, groups [][]string) error {
	if t.st.Partition != nil {
		if err := t.Heal(ctx); err != nil {
			return err
		}
	}
	t.mu.Lock()
	t.st.Partition = groups
	err := t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	return t.applyPartition(ctx, groups, false)
}

// Heal ends the partition.
func (t *Testnet) Heal(ctx context.Context) error {
	if t.st.Partition == nil {
		return nil
	}
	if err := t.applyPartition(ctx, t.st.Partition, true); err != nil {
		return err
	}
	t.mu.Lock()
	t.st.Partition = nil
	err := t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	// Dial across the healed cut now, as each node's next bootstrap round
	// would, so convergence times measure the protocols rather than the
	// bootstrap period.
	var live []*NodeState
	for _, n := range t.st.Nodes {
		if n.alive() {
			live = append(live, n)
		}
	}
	t.dialBootstrap(ctx, live)
	return nil
}

func (t *Testnet) applyPartition(ctx context.Context, groups [][]string, heal bool) error {
	groupOf := map[string]int{}
	for gi, g := range groups {
		for _, name := range g {
			groupOf[name] = gi + 1
		}
	}
	var members []*NodeState
	for _, n := range t.st.Nodes {
		if groupOf[n.Name] != 0 {
			members = append(members, n)
		}
	}
	others := func(n *NodeState) (ips, ids []string) {
		for _, o := range members {
			if groupOf[o.Name] != groupOf[n.Name] {
				ips = append(ips, o.IP)
				ids = append(ids, o.PeerID)
			}
		}
		return
	}
	return t.parallel(members, 8, func(n *NodeState) error {
		ips, ids := others(n)
		if t.st.Mode == ModeNetns {
			return blackhole(ctx, n, ips, heal)
		}
		if !n.alive() {
			return nil // a restart re-applies the partition
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if heal {
			return t.Client(n).Unblock(cctx, ids)
		}
		return t.Client(n).Block(cctx, ids)
	})
}

// Shape changes the link shape of the named nodes.
func (t *Testnet) Shape(ctx context.Context, names []string, s Shape) error {
	ns, err := t.nodes(names)
	if err != nil {
		return err
	}
	if err := t.parallel(ns, 4, func(n *NodeState) error { return t.applyShape(ctx, n, s) }); err != nil {
		return err
	}
	return t.save()
}

// Down stops every process of the testnet and removes its namespaces and
// links; with removeDir it also deletes the testnet directory.
func (t *Testnet) Down(ctx context.Context, removeDir bool) error {
	return downState(ctx, t.st, removeDir, t.procs, t.shaperProc)
}

// Down tears down the testnet whose state is in dir, whatever happened to
// the command that made it.
func Down(ctx context.Context, dir string, removeDir bool) error {
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	return downState(ctx, st, removeDir, nil, nil)
}

func downState(ctx context.Context, st *State, removeDir bool, procs map[string]*proc.Process, shaper *proc.Process) error {
	var errs []error
	// SIGTERM everything, give the daemons 10s to close their stores, then
	// SIGKILL what is left.
	for _, n := range st.Nodes {
		_ = n.signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range st.Nodes {
		if !waitGone(n, time.Until(deadline), procs[n.Name]) {
			_ = n.signal(syscall.SIGKILL)
			if !waitGone(n, 5*time.Second, procs[n.Name]) {
				errs = append(errs, fmt.Errorf("%s (pid %d) did not exit", n.Name, n.PID))
			}
		}
	}
	if err := stopShaper(st, shaper); err != nil {
		errs = append(errs, err)
	}
	if st.Mode == ModeNetns {
		errs = append(errs, teardownNetns(ctx, st)...)
	}
	if len(errs) == 0 {
		if removeDir {
			if err := os.RemoveAll(st.Dir); err != nil {
				errs = append(errs, err)
			}
		} else if err := os.Remove(filepath.Join(st.Dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Open attaches to the testnet whose state is in dir (for status, logs,
// exec and scenario steps from another command).
func Open(dir string) (*Testnet, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	sc := &Scenario{Name: st.Scenario, Seed: st.Seed, Network: Network{Topology: st.Topology}}
	return &Testnet{st: st, sc: sc, conc: 4, procs: map[string]*proc.Process{}, rng: rand.New(rand.NewPCG(uint64(st.Seed), 1))}, nil
}

// NodeStatus is one line of `weft testnet status`.
type NodeStatus struct {
	Name     string  `json:"name"`
	Running  bool    `json:"running"`
	PID      int     `json:"pid,omitempty"`
	IP       string  `json:"ip"`
	API      string  `json:"api"`
	PeerID   string  `json:"peer_id"`
	Peers    int     `json:"peers"`
	RSSBytes int64   `json:"rss_bytes"`
	CPUSecs  float64 `json:"cpu_seconds"`
	Starts   int     `json:"starts"`
	Shape    string  `json:"shape"`
	Error    string  `json:"error,omitempty"`
}

// Status asks every node for its peer count and reads its RSS and CPU.
func (t *Testnet) Status(ctx context.Context) []NodeStatus {
	out := make([]NodeStatus, len(t.st.Nodes))
	_ = t.parallel(t.st.Nodes, 8, func(n *NodeState) error {
		i := t.index(n)
		s := NodeStatus{Name: n.Name, IP: n.IP, API: n.API, PeerID: n.PeerID, Starts: n.Starts, Shape: n.Shape.String()}
		if n.alive() {
			pid, _ := n.proc()
			s.Running, s.PID = true, pid
			u := sampleProc(pid)
			s.RSSBytes, s.CPUSecs = u.RSS, u.CPU
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			peers, err := t.Client(n).Peers(cctx)
			cancel()
			if err != nil {
				s.Error = err.Error()
			}
			s.Peers = len(peers)
		}
		out[i] = s
		return nil
	})
	return out
}

func (t *Testnet) index(n *NodeState) int { return nodeIndex(t.st, n) }

// nodeIndex is n's position in st.Nodes, or -1.
func nodeIndex(st *State, n *NodeState) int {
	for i, m := range st.Nodes {
		if m == n {
			return i
		}
	}
	return -1
}

// Command returns a command that runs args inside a node's namespace (if
// any) with WEFT_PATH and WEFT_API_TOKEN set to that node's. A leading
// "weft" is replaced by the testnet's binary.
func (t *Testnet) Command(name string, args []string) (*exec.Cmd, error) {
	n, err := t.st.Node(name)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return nil, errors.New("no command given (e.g. -- weft peers)")
	}
	if args[0] == "weft" {
		args = append([]string{t.st.Bin}, args[1:]...)
	}
	if n.NS != "" {
		args = append([]string{"ip", "netns", "exec", n.NS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "WEFT_PATH="+n.Repo, "WEFT_API_TOKEN="+node.ReadToken(n.Repo))
	return cmd, nil
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, " | ")
}

// procUsage is a process's resident memory and CPU time.
type procUsage struct {
	RSS int64
	CPU float64 // seconds, user + system
}

// sampleProc reads pid's usage; what cannot be read stays zero.
func sampleProc(pid int) procUsage {
	var u procUsage
	if m, err := proc.ReadMem(pid); err == nil {
		u.RSS = m.RSS
	}
	if st, err := proc.ReadStat(pid); err == nil {
		u.CPU = st.CPUSeconds()
	}
	return u
}
