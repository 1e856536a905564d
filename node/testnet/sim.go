package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/insecure"
	"golang.org/x/sys/unix"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/testnet/simlink"
	"github.com/weft-p2p/weft/p2p"
	"github.com/weft-p2p/weft/store"
)

// ModeSim is the mode of a simulated testnet: every node in one process on
// simlink's in-memory links, in virtual time (RunSim).
const ModeSim = "sim"

// Connection and DHT limits of a simulated node. A simulated connection end
// costs the swarm's accept loop and the handlers of its streams
// (gossipsub's three, an idle DHT stream for a minute, Bitswap's queue:
// about seven goroutines), and a node's DHT lookups dial far more peers
// than it keeps: at a thousand nodes the start-up routing-table refresh
// reaches a hundred or more. So the connection manager keeps fewer
// connections than a daemon's 64..192, protects a new one for simConnGrace
// instead of 30 s (a lookup's query lasts well under it, and gossipsub
// grafts a peer it dialed within a heartbeat, 1 s), and trims every
// simConnSilence instead of every 10 s: connections a lookup made and no
// longer uses are closed within seconds, as an idle timeout would. At 5 s
// each, a thousand nodes joining a collection held 80-130 connection ends
// each. The DHT's buckets hold simDHTBucketSize peers, not 20: kad-dht
// protects the peers of its two farthest buckets from trimming, and 2 × 20
// is more than the high water mark, so with 20 a node kept 40 protected
// connections whatever the manager's limits; with 10, those 20 and a
// topic's mesh fit under it. Lookups also end sooner (they stop once the k
// closest peers answered), so a joining node's routing-table refresh dials
// about half as many. The high water mark must stay well above a topic's
// needs: the manager ranks routing-table peers (the DHT tags them) above a
// topic's non-mesh peers (untagged), and gossipsub re-dials those every
// second while it has fewer than 6; at 12..24 that made a loop of dials and
// trims that cost more than the rest of the run. At 24..48 a thousand nodes
// held a million goroutines after start-up and the collector took half the
// CPU; 16..32 ran feed-1000-sim fastest. A topic's DHT discovery finds (and
// dials) at most simDiscoveryLimit peers, not libp2p's 100: gossipsub needs
// a mesh of 6..12, and 100 connections per subscriber do not fit a thousand
// nodes in one process.
const (
	simConnLow        = 16
	simConnHigh       = 32
	simConnGrace      = 2 * time.Second
	simConnSilence    = 2 * time.Second
	simDHTBucketSize  = 10
	simDiscoveryLimit = 16
	simBitswapWorkers = 2
)

// SimInfo is what a report says about a simulated run.
type SimInfo struct {
	// Model names the link model (see package simlink).
	Model string `json:"model"`
	// WallSeconds is the run's duration on this machine's clock;
	// VirtualSeconds its duration in the simulation's clock, which every
	// other time in the report is measured in.
	WallSeconds    float64 `json:"wall_seconds"`
	VirtualSeconds float64 `json:"virtual_seconds"`
	// PeakHeapBytes and PeakGoroutines are the process's, sampled every
	// virtual second; Sys its memory from the OS at the end.
	PeakHeapBytes  uint64        `json:"peak_heap_bytes"`
	PeakGoroutines int           `json:"peak_goroutines"`
	SysBytes       uint64        `json:"sys_bytes"`
	Links          simlink.Stats `json:"links"`
	// Limits are a simulated node's limits that differ from a daemon's.
	Limits string `json:"limits"`
	// Determinism notes what is and is not reproducible from the seed.
	Determinism string `json:"determinism"`
}

// WallClock reads this machine's monotonic clock. Inside a synctest bubble
// time.Now is the virtual clock; this is not.
func WallClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// cpuModel says how a simulation charges CPU work.
func cpuModel(c SimCPU) string {
	if c.Cores == 0 {
		return "CPU work costs no virtual time"
	}
	return fmt.Sprintf("every message costs %v of CPU at its receiver, which works through them in order, slowed by the nodes busy beyond the %d cores they share (network.sim_cpu)", c.PerMessage.D(), c.Cores)
}

func wallNow() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return time.Time{}
	}
	return time.Unix(ts.Sec, ts.Nsec).UTC()
}

// RunSim runs the scenario with every node a weft node in this process, on
// simulated links (package simlink) shaped as the scenario says, and writes
// the same report as Run, marked simulated.
//
// It must run inside a testing/synctest bubble (synctest.Test): time is
// then virtual, advancing only when every goroutine of the simulation
// waits, so a minute of swarm time costs what its work costs. The weft
// binary cannot make a bubble (synctest needs a *testing.T), so `weft
// testnet run --mode sim` runs the test binary of node/testnet/simrun.
// Outside a bubble it still runs, in real time, with the machine's load
// distorting every latency.
func RunSim(ctx context.Context, sc *Scenario, o RunOptions) (*Report, error) {
	wall0, started := WallClock(), wallNow()
	if sc.Seed == 0 {
		sc.Seed = int64(uint64(wall0) & 0x7fffffff)
	}
	o.Mode = ModeSim
	// The nodes live in this process: they always stop at the end; keep
	// and keep-on-failure keep only the directory (repos and sim.log).
	c := &simCluster{sc: sc, net: newSimNet(sc), running: map[string]*simNode{}, keepDir: o.Keep || o.KeepOnFailure, progress: o.Progress,
		memTable: simMemTable(sc)}
	o.Keep, o.KeepOnFailure = false, false
	stopSampler := c.sampleMemory()
	virt0 := time.Now()
	rep, err := runOn(ctx, sc, o, func(ctx context.Context) (cluster, error) {
		if err := c.up(ctx, o.Options); err != nil {
			_ = c.Down(context.Background(), true)
			return nil, err
		}
		return c, nil
	}, func(rep *Report) {
		stopSampler()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rep.Started = started
		c.mu.Lock()
		rep.Simulated = &SimInfo{
			Model:          "simlink: natively multiplexed in-memory connections (a pair of byte pipes per stream, no security handshake or yamux; connecting costs three round trips as TCP with TLS does); sender-side latency ± uniform jitter rounded to the millisecond, in order per connection, egress bandwidth, loss as one retransmission timeout of delay; a connection cut by a partition for 2m10s closes; " + cpuModel(sc.Network.SimCPU),
			WallSeconds:    (WallClock() - wall0).Seconds(),
			VirtualSeconds: time.Since(virt0).Seconds(),
			PeakHeapBytes:  c.peakHeap,
			PeakGoroutines: c.peakG,
			SysBytes:       ms.Sys,
			Links:          c.net.Stats(),
			Limits: fmt.Sprintf("connections %d..%d, new ones protected %v, trimmed every %v (daemon 64..192, 30s, 10s), DHT buckets of %d (daemon 20), topic discovery finds %d peers (daemon 100), %d Bitswap workers (daemon 128+8), %d KiB memtables, 256 KiB block cache",
				simConnLow, simConnHigh, simConnGrace, simConnSilence, simDHTBucketSize, simDiscoveryLimit, simBitswapWorkers, c.memTable>>10),
			Determinism: "fixed by the seed: identities, addresses, topology, content, the steps and their outcomes, delivery counts (TestSimReproducible); not fixed: goroutine scheduling, which decides the order in which the links draw jitter, gossipsub draws peers from math/rand and goroutines draw from the seeded crypto/rand stream (so keys made during the run, a feed's name among them), and so latencies (a few percent) and which updates arrive over the topic rather than by catch-up",
		}
		c.mu.Unlock()
	})
	return rep, err
}

// simCluster is a testnet of weft nodes in this process.
type simCluster struct {
	st  *State
	sc  *Scenario
	net *simlink.Network
	log io.WriteCloser

	keepDir  bool      // Down leaves the directory
	memTable int64     // each node's Badger memtable (simMemTable)
	progress io.Writer // start-up progress; nil: quiet

	mu       sync.Mutex
	running  map[string]*simNode
	stores   map[string]*store.Store // each node's, kept across restarts
	boot     map[string][]peer.AddrInfo
	peakHeap uint64
	peakG    int
}

// simNode is one running node and the in-memory listener of its API.
type simNode struct {
	n  *node.Node
	ln *pipeListener
}

func (c *simCluster) state() *State { return c.st }

func (c *simCluster) messages() int64 { return c.net.Stats().Writes }

func (c *simCluster) isUp(n *NodeState) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running[n.Name] != nil
}

func (c *simCluster) nodes(names []string) ([]*NodeState, error) {
	out := make([]*NodeState, 0, len(names))
	for _, name := range names {
		n, err := c.st.Node(name)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// parallel runs fn for the nodes, simParallel at a time at least: the
// runner's 8 spare a machine of real daemons, but here an API call costs
// no virtual time, and a step over a thousand nodes 8 at a time (a follow
// waits for a DHT walk) would stretch over a minute of virtual time, in
// which every node's timers cost wall time.
func (c *simCluster) parallel(nodes []*NodeState, conc int, fn func(*NodeState) error) error {
	return parallel(nodes, max(conc, simParallel), fn)
}

// simParallel is how many nodes a simulated step works on at once.
const simParallel = 64

// simDownBatch is how many nodes the teardown closes between two returns
// of memory to the system (Down).
const simDownBatch = 100

// simProgressEvery is how often, in wall time, a simulation with a
// progress writer says where its virtual clock is.
const simProgressEvery = 30 * time.Second

// sampleMemory records the process's peak heap and goroutines every
// virtual second until the returned function is called. With a progress
// writer it also says, at most every simProgressEvery of wall time, where
// the virtual clock is: a long step (a sleep through a thousand nodes'
// start-up) otherwise shows nothing for many minutes, and the virtual
// seconds per wall minute are what tell a slow run from a stuck one.
func (c *simCluster) sampleMemory() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	sample := func() (heap uint64, gs int) {
		metrics.Read(samples)
		heap, gs = samples[0].Value.Uint64(), int(samples[1].Value.Uint64())
		c.mu.Lock()
		c.peakHeap = max(c.peakHeap, heap)
		c.peakG = max(c.peakG, gs)
		c.mu.Unlock()
		return heap, gs
	}
	virt0, wall0 := time.Now(), WallClock()
	lastSaid, lastVirt, last := wall0, virt0, c.net.Stats()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				heap, gs := sample()
				if w := WallClock(); c.progress != nil && w-lastSaid >= simProgressEvery {
					now, st := time.Now(), c.net.Stats()
					per := now.Sub(lastVirt).Seconds()
					fmt.Fprintf(c.progress, "  (%.0fs virtual, %.0fs wall: heap %d MiB, %d goroutines, %d connection ends; per virtual second %.0f dials, %.0f messages)\n",
						now.Sub(virt0).Seconds(), (w - wall0).Seconds(), heap>>20, gs, c.net.OpenConns(),
						float64(st.Dials-last.Dials)/per, float64(st.Writes-last.Writes)/per)
					lastSaid, lastVirt, last = w, now, st
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			sample()
		})
	}
}

// up makes the repos (seeded identities), the links and the topology, and
// starts the nodes not marked no_start.
func (c *simCluster) up(ctx context.Context, o Options) error {
	sc := c.sc
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "weft-sim-")
		if err != nil {
			return err
		}
		dir = d
	}
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o700); err != nil {
		return fmt.Errorf("make simulation dir: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, "sim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	c.log = lf
	c.st = &State{ID: newID(), Mode: ModeSim, Why: "simulated: every node in one process, links in memory, virtual time",
		Dir: dir, Created: wallNow(), Scenario: sc.Name, Seed: sc.Seed, Topology: sc.Network.Topology,
		Shaping: "simlink (in-memory links: latency, jitter, bandwidth, loss)"}
	keys := rand.NewChaCha8(seedKey(sc.Seed, "identities"))
	i := 0
	for _, g := range sc.Groups {
		for k := 1; k <= g.Count; k++ {
			i++
			name := nodeName(g.Name, k)
			ip := simlink.AddrOf(i)
			s := sc.Network.Link
			if g.Link != nil {
				s = s.merge(*g.Link)
			}
			n := &NodeState{Name: name, Group: g.Name, Repo: filepath.Join(dir, "nodes", name), Log: lf.Name(),
				IP: ip.String(), Swarm: fmt.Sprintf("/ip4/%s/tcp/%d", ip, SwarmPort), API: fmt.Sprintf("127.0.0.1:%d", APIPort), Shape: s}
			sk, _, err := crypto.GenerateEd25519Key(keys)
			if err != nil {
				return fmt.Errorf("identity for %s: %w", name, err)
			}
			if err := simRepo(n, sk); err != nil {
				return fmt.Errorf("init %s: %w", name, err)
			}
			ls, err := simShape(s)
			if err != nil {
				return fmt.Errorf("%s: link: %w", name, err)
			}
			c.net.SetShape(ip, ls)
			c.st.Nodes = append(c.st.Nodes, n)
		}
	}
	boot := (&Testnet{st: c.st, sc: sc, rng: rand.New(rand.NewPCG(uint64(sc.Seed), 0x7765667421))}).topology()
	c.boot = map[string][]peer.AddrInfo{}
	for _, n := range c.st.Nodes {
		cfg, err := node.ReadConfig(n.Repo)
		if err != nil {
			return err
		}
		cfg.Bootstrap = boot[n.Name]
		if err := applyConfig(&cfg, sc.Config); err != nil {
			return fmt.Errorf("%s: config: %w", n.Name, err)
		}
		if err := node.SaveConfigFile(n.Repo, cfg); err != nil {
			return err
		}
		for _, b := range cfg.Bootstrap {
			ai, err := peer.AddrInfoFromString(b)
			if err != nil {
				return err
			}
			c.boot[n.Name] = append(c.boot[n.Name], *ai)
		}
	}
	var start []string
	for _, g := range sc.Groups {
		if g.NoStart {
			continue
		}
		for k := 1; k <= g.Count; k++ {
			start = append(start, nodeName(g.Name, k))
		}
	}
	return c.Start(ctx, start)
}

// simMemTable is the size of a simulated node's in-memory Badger
// memtables. A memtable's arena is allocated whole (three per node), and a
// block must fit 15% of one, so they are sized to the largest block the
// scenario makes: its largest size, or one 256 KiB chunk of a larger file,
// at least 1 MiB (the store's least; feed records, collection deltas and
// snapshots, blocks of a few KiB) and at most 2 MiB. At a thousand nodes
// 2 MiB memtables were 2.6 GiB of the heap.
func simMemTable(sc *Scenario) int64 {
	block := int64(0)
	for _, st := range sc.Steps {
		if st.Size != "" {
			block = max(block, min(sizeOf(st.Size, ""), 256<<10))
		}
	}
	const step = 256 << 10
	need := (block*100/15 + 64<<10 + step - 1) / step * step
	return min(max(need, 1<<20), 2<<20)
}

// simRepo makes n's repo with the seeded identity sk.
func simRepo(n *NodeState, sk crypto.PrivKey) error {
	// No gateway: a real socket would keep the simulation's clock from
	// advancing (a goroutine waiting on the network is not idle to synctest).
	if _, err := node.InitRepo(n.Repo, node.InitOptions{Listen: []string{n.Swarm}, API: n.API, Gateway: "off"}); err != nil {
		return err
	}
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.Repo, node.IdentityFile), b, 0o600); err != nil {
		return err
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return err
	}
	cfg, err := node.ReadConfig(n.Repo)
	if err != nil {
		return err
	}
	cfg.PeerID = id.String()
	n.PeerID = cfg.PeerID
	n.Token = node.ReadToken(n.Repo)
	return node.SaveConfigFile(n.Repo, cfg)
}

func seedKey(seed int64, purpose string) [32]byte {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(uint64(seed) >> (8 * i))
	}
	copy(k[8:], purpose)
	return k
}

// simShape converts a scenario shape to simlink's.
func simShape(s Shape) (simlink.Shape, error) {
	out := simlink.Shape{Latency: s.Latency.D(), Jitter: s.Jitter.D(), Loss: s.LossPercent() / 100}
	if s.Bandwidth != "" {
		bps, err := parseBandwidth(s.Bandwidth)
		if err != nil {
			return out, err
		}
		out.Bandwidth = int64(bps / 8)
	}
	return out, nil
}

func (c *simCluster) nodeIP(n *NodeState) netip.Addr {
	ip, _ := netip.ParseAddr(n.IP)
	return ip
}

// Start starts the named nodes that do not run, one after the other (in
// virtual time a start costs no time, and a node's bootstrap peers that
// come before it then listen), then has each dial its bootstrap list. The
// DHT refreshes the routing table when its first peer comes in, as a
// daemon's does.
func (c *simCluster) Start(ctx context.Context, names []string) error {
	ns, err := c.nodes(names)
	if err != nil {
		return err
	}
	var todo []*NodeState
	for _, n := range ns {
		if !c.isUp(n) {
			todo = append(todo, n)
		}
	}
	wall0, virt0 := WallClock(), time.Now()
	for i, n := range todo {
		if err := c.startOne(ctx, n); err != nil {
			return err
		}
		if c.progress != nil && len(todo) > 1 && ((i+1)%max(1, len(todo)/10) == 0 || i+1 == len(todo)) {
			fmt.Fprintf(c.progress, "%d/%d nodes started (%.1fs virtual, %.1fs wall)\n", i+1, len(todo),
				time.Since(virt0).Seconds(), (WallClock() - wall0).Seconds())
		}
	}
	return parallel(todo, 64, func(n *NodeState) error {
		c.mu.Lock()
		sn := c.running[n.Name]
		c.mu.Unlock()
		if sn == nil {
			return nil
		}
		for _, ai := range c.boot[n.Name] {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = sn.n.Network().Host.Connect(cctx, ai) // a partitioned or stopped peer may not answer
			cancel()
		}
		return nil
	})
}

func (c *simCluster) startOne(ctx context.Context, n *NodeState) error {
	ln := newPipeListener(n.API)
	ip := c.nodeIP(n)
	log := slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", n.Name)
	c.mu.Lock()
	if c.stores == nil {
		c.stores = map[string]*store.Store{}
	}
	s := c.stores[n.Name]
	c.mu.Unlock()
	if s == nil {
		var err error
		s, err = store.Open(store.Config{InMemory: true, MemTableSize: c.memTable, BlockCacheSize: 256 << 10,
			Logger: log.With("subsystem", "store")})
		if err != nil {
			ln.Close()
			return fmt.Errorf("start %s: %w", n.Name, err)
		}
		c.mu.Lock()
		c.stores[n.Name] = s
		c.mu.Unlock()
	}
	nd, err := node.Start(ctx, n.Repo, node.Options{
		Logger:      log,
		APIListener: ln,
		Store:       s,
		TuneP2P: func(pc *p2p.Config) {
			pc.Transports = []libp2p.Option{
				libp2p.Transport(c.net.Transport(ip)),
				libp2p.Security(insecure.ID, insecure.NewWithIdentity),
				libp2p.DisableIdentifyAddressDiscovery(),
			}
			pc.ConnMgrLow, pc.ConnMgrHigh = simConnLow, simConnHigh
			pc.ConnMgrGrace, pc.ConnMgrSilence = simConnGrace, simConnSilence
			pc.EnableQUIC, pc.MDNS = false, false
			pc.BitswapWorkers = simBitswapWorkers
			pc.PubsubDiscoveryLimit = simDiscoveryLimit
			pc.DHTExtraOptions = append(pc.DHTExtraOptions, dht.BucketSize(simDHTBucketSize))
		},
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	c.mu.Lock()
	c.running[n.Name] = &simNode{n: nd, ln: ln}
	n.Starts++
	part := c.st.Partition
	c.mu.Unlock()
	if part != nil {
		c.applyPartition(part)
	}
	return nil
}

// Client returns an API client whose connections reach the node's API in
// memory.
func (c *simCluster) Client(n *NodeState) *api.Client {
	hc := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c.mu.Lock()
			sn := c.running[n.Name]
			c.mu.Unlock()
			if sn == nil {
				return nil, fmt.Errorf("dial %s's API: connection refused (not running)", n.Name)
			}
			return sn.ln.dial(ctx)
		},
	}}
	return api.NewClient(n.API, n.Token).WithHTTP(hc)
}

// Stop closes the named nodes gracefully.
func (c *simCluster) Stop(ctx context.Context, names []string) error {
	ns, err := c.nodes(names)
	if err != nil {
		return err
	}
	return parallel(ns, 16, func(n *NodeState) error {
		c.mu.Lock()
		sn := c.running[n.Name]
		delete(c.running, n.Name)
		c.mu.Unlock()
		if sn == nil {
			return nil
		}
		if err := sn.n.Close(); err != nil {
			return fmt.Errorf("stop %s: %w", n.Name, err)
		}
		return nil
	})
}

// Kill is Stop: an in-process node cannot be killed, and its connections
// close as a killed process's do (the kernel closes them). Its store
// stays, as a killed daemon's stays on disk.
func (c *simCluster) Kill(ctx context.Context, names []string) error { return c.Stop(ctx, names) }

// Restart stops the named nodes and starts them again on their repos and
// in-memory stores.
func (c *simCluster) Restart(ctx context.Context, names []string) error {
	if err := c.Stop(ctx, names); err != nil {
		return err
	}
	return c.Start(ctx, names)
}

// Partition cuts the links between the groups (a blackhole, as in a
// namespaced testnet).
func (c *simCluster) Partition(_ context.Context, groups [][]string) error {
	c.mu.Lock()
	c.st.Partition = groups
	c.mu.Unlock()
	c.applyPartition(groups)
	return nil
}

func (c *simCluster) applyPartition(groups [][]string) {
	var ips [][]netip.Addr
	for _, g := range groups {
		var gi []netip.Addr
		for _, name := range g {
			if n, err := c.st.Node(name); err == nil {
				gi = append(gi, c.nodeIP(n))
			}
		}
		ips = append(ips, gi)
	}
	c.net.Partition(ips)
}

// Heal ends the partition and has every running node dial its bootstrap
// list, as Testnet.Heal does.
func (c *simCluster) Heal(ctx context.Context) error {
	c.mu.Lock()
	had := c.st.Partition != nil
	c.st.Partition = nil
	var live []*NodeState
	for _, n := range c.st.Nodes {
		if c.running[n.Name] != nil {
			live = append(live, n)
		}
	}
	c.mu.Unlock()
	if !had {
		return nil
	}
	c.net.Heal()
	return parallel(live, 64, func(n *NodeState) error {
		c.mu.Lock()
		sn := c.running[n.Name]
		c.mu.Unlock()
		if sn == nil {
			return nil
		}
		for _, ai := range c.boot[n.Name] {
			sn.n.Network().ClearDialBackoff(ai.ID)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = sn.n.Network().Host.Connect(cctx, ai)
			cancel()
		}
		return nil
	})
}

// Shape changes the named nodes' sending links.
func (c *simCluster) Shape(_ context.Context, names []string, s Shape) error {
	ns, err := c.nodes(names)
	if err != nil {
		return err
	}
	for _, n := range ns {
		merged := n.Shape.merge(s)
		ls, err := simShape(merged)
		if err != nil {
			return err
		}
		c.net.SetShape(c.nodeIP(n), ls)
		c.mu.Lock()
		n.Shape = merged
		c.mu.Unlock()
	}
	return nil
}

// Command is refused: the attack action runs a weft process, and a
// simulated testnet has none.
func (c *simCluster) Command(name string, _ []string) (*exec.Cmd, error) {
	return nil, fmt.Errorf("%s: the attack action runs a weft process next to the node; a simulated testnet has no processes", name)
}

// Down closes every node; with removeDir it deletes the simulation's
// directory (repos and log).
func (c *simCluster) Down(ctx context.Context, removeDir bool) error {
	var err error
	// Nodes that lose their peers as the others close would dial and walk
	// the DHT (see simlink.Network.Shutdown); nothing is measured any more.
	c.net.Shutdown()
	if c.st != nil {
		// A batch at a time, handing the memory back in between: the
		// stacks of the goroutines that exit stay with the runtime until
		// a collection, and the runtime keeps what it freed until its
		// scavenger returns it, so a thousand nodes closing one after the
		// other held more memory than the run at its peak (dht-1000-sim:
		// 20,021 MiB against 13,857 MiB) and a run that had passed was
		// aborted for it.
		all := names(c.st.Nodes)
		wall0, virt0, total := WallClock(), time.Now(), len(all)
		for len(all) > 0 {
			batch := all[:min(len(all), simDownBatch)]
			all = all[len(batch):]
			err = errors.Join(err, c.Stop(ctx, batch))
			debug.FreeOSMemory()
			if c.progress != nil && total > simDownBatch {
				fmt.Fprintf(c.progress, "%d/%d nodes closed (%.1fs virtual, %.1fs wall)\n", total-len(all), total,
					time.Since(virt0).Seconds(), (WallClock() - wall0).Seconds())
			}
		}
	}
	c.mu.Lock()
	for name, s := range c.stores {
		if cerr := s.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close %s's store: %w", name, cerr))
		}
	}
	c.stores = nil
	c.mu.Unlock()
	if c.log != nil {
		c.log.Close()
	}
	if removeDir && !c.keepDir && c.st != nil {
		err = errors.Join(err, os.RemoveAll(c.st.Dir))
	}
	return err
}

// pipeListener serves a node's API over net.Pipe connections.
type pipeListener struct {
	addr  string
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener(addr string) *pipeListener {
	return &pipeListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.done:
		return nil, fmt.Errorf("dial %s: connection refused", l.addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr {
	ap, err := netip.ParseAddrPort(l.addr)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

func newSimNet(sc *Scenario) *simlink.Network {
	n := simlink.New(uint64(sc.Seed))
	if c := sc.Network.SimCPU; c.Cores > 0 {
		n.SetCPU(simlink.CPU{Cores: c.Cores, PerWrite: c.PerMessage.D()})
	}
	return n
}
