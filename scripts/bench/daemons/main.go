// Command daemons measures what a weft daemon costs at rest: how long one
// takes from process start to a ready API, how much memory one holds after
// an idle period, and the memory and CPU of a swarm of idle daemons on
// 127.0.0.1. Run it through scripts/bench/daemons.sh, which builds weft and
// this program into a temp dir and removes them afterwards.
//
// Every daemon it starts is stopped by PID (SIGTERM, then SIGKILL after a
// deadline) when it is done with it, when the program is interrupted, and,
// through PR_SET_PDEATHSIG, if the program itself dies. The PIDs are also
// written to a file (-pids) so that the wrapper's trap can stop them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/proc"
)

const mib = 1 << 20

func main() {
	os.Exit(run())
}

type options struct {
	weft        string
	work        string
	out         string
	pidsFile    string
	startRuns   int
	idle        time.Duration
	rssDaemons  int
	nodes       int
	formWait    time.Duration
	sample      time.Duration
	configSets  []string
	commit      string
	skipStartup bool
	skipIdle    bool
	skipSwarm   bool
	kubo        string // Kubo binary for the (d) baseline; "" skips it
}

func run() int {
	quick := os.Getenv("WEFT_BENCH_QUICK") == "1"
	o := options{
		startRuns:  envInt("WEFT_BENCH_RUNS", 7),
		idle:       envDuration("WEFT_BENCH_IDLE", 30*time.Second),
		rssDaemons: envInt("WEFT_BENCH_RSS_DAEMONS", 3),
		nodes:      envInt("WEFT_BENCH_NODES", 20),
		formWait:   60 * time.Second,
		out:        os.Getenv("WEFT_BENCH_OUT"),
		commit:     os.Getenv("WEFT_BENCH_COMMIT"),
	}
	if quick {
		if os.Getenv("WEFT_BENCH_RUNS") == "" {
			o.startRuns = 5
		}
		if os.Getenv("WEFT_BENCH_IDLE") == "" {
			o.idle = 5 * time.Second
		}
	}
	var sets multiFlag
	flag.StringVar(&o.weft, "weft", "", "weft binary to benchmark (required)")
	flag.StringVar(&o.work, "work", "", "directory for repos and logs (default: a new temp dir, removed at exit)")
	flag.StringVar(&o.out, "out", o.out, "results JSON path (env WEFT_BENCH_OUT; default: daemons.json in a new temp report dir)")
	flag.StringVar(&o.pidsFile, "pids", "", "file to append each started daemon's PID to (for the wrapper's trap)")
	flag.IntVar(&o.startRuns, "runs", o.startRuns, "start-up runs, at least 5 (env WEFT_BENCH_RUNS)")
	flag.DurationVar(&o.idle, "idle", o.idle, "idle window measured for (b) and (c) (env WEFT_BENCH_IDLE; WEFT_BENCH_QUICK=1: 5s)")
	flag.IntVar(&o.rssDaemons, "rss-daemons", o.rssDaemons, "isolated daemons measured for idle RSS (env WEFT_BENCH_RSS_DAEMONS)")
	flag.IntVar(&o.nodes, "nodes", o.nodes, "daemons in the idle swarm (env WEFT_BENCH_NODES)")
	flag.DurationVar(&o.formWait, "form-wait", o.formWait, "deadline for the swarm to form (every routing table full)")
	flag.DurationVar(&o.sample, "sample", 0, "memory sampling interval in idle windows (default idle/15, at least 1s)")
	flag.Var(&sets, "set", "KEY=VALUE applied with 'weft config set' to every repo before its start (repeatable)")
	flag.StringVar(&o.commit, "commit", o.commit, "commit the weft binary was built from (recorded in the JSON)")
	flag.BoolVar(&o.skipStartup, "skip-startup", false, "skip (a) start-up time")
	flag.BoolVar(&o.skipIdle, "skip-idle", false, "skip (b) idle RSS of one daemon")
	flag.BoolVar(&o.skipSwarm, "skip-swarm", false, "skip (c) idle swarm")
	flag.StringVar(&o.kubo, "kubo", os.Getenv("WEFT_BENCH_KUBO"), "Kubo binary (ipfs): (d) measures the same idle swarm of Kubo daemons as a baseline (env WEFT_BENCH_KUBO; needs root)")
	flag.Parse()
	o.configSets = sets
	if o.weft == "" {
		fmt.Fprintln(os.Stderr, "daemons: -weft is required")
		return 2
	}
	if o.startRuns < 5 && !o.skipStartup {
		fmt.Fprintln(os.Stderr, "daemons: -runs must be at least 5")
		return 2
	}
	if o.nodes < 2 || o.rssDaemons < 1 || o.idle <= 0 {
		fmt.Fprintln(os.Stderr, "daemons: -nodes must be >= 2, -rss-daemons >= 1, -idle > 0")
		return 2
	}
	if o.sample <= 0 {
		o.sample = max(o.idle/15, time.Second)
	}
	if o.work == "" {
		dir, err := os.MkdirTemp("", "weft-bench-work-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "daemons:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		o.work = dir
	}
	if o.out == "" {
		dir, err := os.MkdirTemp("", "weft-bench-report-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "daemons:", err)
			return 1
		}
		o.out = filepath.Join(dir, "daemons.json")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, procs: map[int]*daemon{}}
	defer b.stopAll()

	res, err := b.run(ctx)
	if res != nil {
		printTable(os.Stdout, res)
		if werr := writeJSON(o.out, res); werr != nil {
			fmt.Fprintln(os.Stderr, "daemons: write results:", werr)
			if err == nil {
				err = werr
			}
		} else {
			fmt.Printf("\nresults JSON: %s\n", o.out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemons:", err)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------- results

// Results is what the JSON file holds. Sizes are bytes, times seconds.
type Results struct {
	Date      time.Time      `json:"date"`
	Commit    string         `json:"commit,omitempty"`
	GoVersion string         `json:"go_version"`
	Machine   Machine        `json:"machine"`
	Settings  Settings       `json:"settings"`
	Startup   *StartupResult `json:"startup,omitempty"`
	IdleOne   *IdleOneResult `json:"idle_one,omitempty"`
	Swarm     *SwarmResult   `json:"swarm,omitempty"`
	Kubo      *KuboResult    `json:"kubo_swarm,omitempty"`
	Errors    []string       `json:"errors,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs         int    `json:"cpus"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	ClockTicks   int    `json:"clock_ticks"`
}

// Settings are the knobs the run used.
type Settings struct {
	StartupRuns int      `json:"startup_runs"`
	IdleSeconds float64  `json:"idle_seconds"`
	RSSDaemons  int      `json:"rss_daemons"`
	SwarmNodes  int      `json:"swarm_nodes"`
	ConfigSets  []string `json:"config_sets,omitempty"`
	Env         []string `json:"env,omitempty"` // GOGC, GOMEMLIMIT, GODEBUG, GOMAXPROCS if set
}

// StartupResult is (a).
type StartupResult struct {
	Runs              []StartupRun `json:"runs"`
	MedianInitS       float64      `json:"median_init_s"`
	MedianAPIFileS    float64      `json:"median_api_file_s"`
	MedianReadyS      float64      `json:"median_ready_s"`
	MinReadyS         float64      `json:"min_ready_s"`
	MaxReadyS         float64      `json:"max_ready_s"`
	MedianShutdownS   float64      `json:"median_shutdown_s"`
	MedianRSSAtReady  int64        `json:"median_rss_at_ready"`
	MedianCPUAtReadyS float64      `json:"median_cpu_at_ready_s"`
}

// StartupRun is one start of a daemon on a fresh repo.
type StartupRun struct {
	InitS      float64 `json:"init_s"`       // weft init, for reference
	APIFileS   float64 `json:"api_file_s"`   // process start to REPO/api written
	ReadyS     float64 `json:"ready_s"`      // process start to GET /api/v1/id answered
	ShutdownS  float64 `json:"shutdown_s"`   // SIGTERM to exit
	RSSAtReady int64   `json:"rss_at_ready"` // VmRSS when ready
	CPUAtReady float64 `json:"cpu_at_ready_s"`
}

// MemSample is one reading of a process's memory.
type MemSample struct {
	RSS     int64 `json:"rss"`      // VmRSS
	Anon    int64 `json:"rss_anon"` // RssAnon: heap, stacks, Badger's buffers
	File    int64 `json:"rss_file"` // RssFile: mostly the binary's text, shared between daemons
	PSS     int64 `json:"pss"`      // proportional set size: shared pages split among sharers
	HWM     int64 `json:"hwm"`      // VmHWM: peak RSS
	Threads int   `json:"threads"`
}

// ProcIdle is one daemon measured over an idle window.
type ProcIdle struct {
	End        MemSample  `json:"end"`
	MedianRSS  int64      `json:"median_rss"`
	MedianPSS  int64      `json:"median_pss"`
	MedianAnon int64      `json:"median_anon"`
	Samples    int        `json:"samples"`
	CPUPercent float64    `json:"cpu_percent"`          // of one core, over the window
	Go         *GoRuntime `json:"go_runtime,omitempty"` // from GET /metrics after the window
}

// GoRuntime is the Go runtime's view of a daemon's memory, read from its
// Prometheus endpoint (GET /metrics) after the idle window.
type GoRuntime struct {
	Goroutines    float64 `json:"goroutines"`
	HeapAlloc     float64 `json:"heap_alloc"`       // live objects and not yet collected garbage
	HeapInuse     float64 `json:"heap_inuse"`       // spans holding objects
	HeapIdleKept  float64 `json:"heap_idle_kept"`   // free spans not yet returned to the OS
	StackInuse    float64 `json:"stack_inuse"`      // goroutine stacks
	Sys           float64 `json:"sys"`              // everything the runtime mapped
	NextGC        float64 `json:"next_gc"`          // heap size that triggers the next GC
	GCs           float64 `json:"gcs"`              // GC cycles since start
	ResidentBytes float64 `json:"process_resident"` // process_resident_memory_bytes, for cross-checking
}

// medianGo returns the per-field median of the daemons' runtime readings,
// or nil if none had them.
func medianGo(ps []ProcIdle) *GoRuntime {
	var gs []*GoRuntime
	for _, p := range ps {
		if p.Go != nil {
			gs = append(gs, p.Go)
		}
	}
	if len(gs) == 0 {
		return nil
	}
	col := func(f func(*GoRuntime) float64) float64 {
		var v []float64
		for _, g := range gs {
			v = append(v, f(g))
		}
		return median(v)
	}
	return &GoRuntime{
		Goroutines:    col(func(g *GoRuntime) float64 { return g.Goroutines }),
		HeapAlloc:     col(func(g *GoRuntime) float64 { return g.HeapAlloc }),
		HeapInuse:     col(func(g *GoRuntime) float64 { return g.HeapInuse }),
		HeapIdleKept:  col(func(g *GoRuntime) float64 { return g.HeapIdleKept }),
		StackInuse:    col(func(g *GoRuntime) float64 { return g.StackInuse }),
		Sys:           col(func(g *GoRuntime) float64 { return g.Sys }),
		NextGC:        col(func(g *GoRuntime) float64 { return g.NextGC }),
		GCs:           col(func(g *GoRuntime) float64 { return g.GCs }),
		ResidentBytes: col(func(g *GoRuntime) float64 { return g.ResidentBytes }),
	}
}

// scrapeGo reads the Go runtime gauges from GET /metrics. A daemon without
// the endpoint gives nil.
func scrapeGo(ctx context.Context, d *daemon) *GoRuntime {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.api.Base()+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	v := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			v[name] = x
		}
	}
	if _, ok := v["go_goroutines"]; !ok {
		return nil
	}
	return &GoRuntime{
		Goroutines:    v["go_goroutines"],
		HeapAlloc:     v["go_memstats_heap_alloc_bytes"],
		HeapInuse:     v["go_memstats_heap_inuse_bytes"],
		HeapIdleKept:  v["go_memstats_heap_idle_bytes"] - v["go_memstats_heap_released_bytes"],
		StackInuse:    v["go_memstats_stack_inuse_bytes"],
		Sys:           v["go_memstats_sys_bytes"],
		NextGC:        v["go_memstats_next_gc_bytes"],
		GCs:           v["go_gc_duration_seconds_count"],
		ResidentBytes: v["process_resident_memory_bytes"],
	}
}

// IdleOneResult is (b).
type IdleOneResult struct {
	Daemons          []ProcIdle `json:"daemons"`
	MedianRSSEnd     int64      `json:"median_rss_end"`
	MedianRSSSamples int64      `json:"median_rss_samples"`
	MedianPSSEnd     int64      `json:"median_pss_end"`
	MedianAnonEnd    int64      `json:"median_anon_end"`
	MedianFileEnd    int64      `json:"median_file_end"`
	MedianHWM        int64      `json:"median_hwm"`
	MedianCPUPercent float64    `json:"median_cpu_percent"`
	GoMedian         *GoRuntime `json:"go_runtime_median,omitempty"`
}

// SwarmResult is (c).
type SwarmResult struct {
	Nodes             int        `json:"nodes"`
	FormationS        float64    `json:"formation_s"` // last daemon ready to every routing table full
	Formed            bool       `json:"formed"`
	RoutingTableMin   int        `json:"routing_table_min"`
	PeersMin          int        `json:"peers_min"`
	PeersMedian       int        `json:"peers_median"`
	TotalRSSEnd       int64      `json:"total_rss_end"`
	TotalRSSMedian    int64      `json:"total_rss_median"` // median over samples of the sum
	TotalPSSEnd       int64      `json:"total_pss_end"`
	TotalPSSMedian    int64      `json:"total_pss_median"`
	TotalAnonEnd      int64      `json:"total_anon_end"`
	PerNodeRSSMedian  int64      `json:"per_node_rss_median"`
	PerNodePSSMedian  int64      `json:"per_node_pss_median"`
	PerNodeAnonMedian int64      `json:"per_node_anon_median"`
	CPUPercentTotal   float64    `json:"cpu_percent_total"` // of one core, all daemons together
	CPUPercentMedian  float64    `json:"cpu_percent_per_node_median"`
	CPUPercentMax     float64    `json:"cpu_percent_per_node_max"`
	GoMedian          *GoRuntime `json:"go_runtime_median,omitempty"` // per daemon
	Daemons           []ProcIdle `json:"daemons"`
}

// ---------------------------------------------------------------- bench

type daemon struct {
	name   string
	repo   string
	p      *proc.Process
	pid    int
	api    *api.Client
	stopMu sync.Mutex
}

type bench struct {
	o     options
	mu    sync.Mutex
	procs map[int]*daemon
}

func (b *bench) run(ctx context.Context) (*Results, error) {
	res := &Results{
		Date:      time.Now().UTC(),
		Commit:    b.o.commit,
		GoVersion: runtime.Version(),
		Machine:   Machine{CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg(), ClockTicks: proc.ClockTicks},
		Settings: Settings{
			StartupRuns: b.o.startRuns, IdleSeconds: b.o.idle.Seconds(), RSSDaemons: b.o.rssDaemons,
			SwarmNodes: b.o.nodes, ConfigSets: b.o.configSets, Env: goEnv(),
		},
	}
	defer func() { res.Machine.LoadAvgEnd = loadAvg() }()
	fail := func(what string, err error) (*Results, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
		err = fmt.Errorf("%s: %w", what, err)
		res.Errors = append(res.Errors, err.Error())
		return res, err
	}
	if !b.o.skipStartup {
		r, err := b.startup(ctx)
		res.Startup = r
		if err != nil {
			return fail("start-up", err)
		}
	}
	if !b.o.skipIdle {
		r, err := b.idleOne(ctx)
		res.IdleOne = r
		if err != nil {
			return fail("idle daemon", err)
		}
	}
	if !b.o.skipSwarm {
		r, err := b.swarm(ctx)
		res.Swarm = r
		if err != nil {
			return fail("idle swarm", err)
		}
	}
	if b.o.kubo != "" {
		r, err := b.kuboSwarm(ctx)
		res.Kubo = r
		if err != nil {
			return fail("Kubo swarm", err)
		}
	}
	return res, nil
}

// initRepo runs weft init (and any -set) for a fresh repo and returns how
// long weft init took.
func (b *bench) initRepo(ctx context.Context, repo string, bootstrap string) (time.Duration, error) {
	args := []string{"init", "--repo", repo, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"}
	if bootstrap != "" {
		args = append(args, "--bootstrap", bootstrap)
	}
	t0 := time.Now()
	if err := b.runWeft(ctx, args...); err != nil {
		return 0, err
	}
	took := time.Since(t0)
	for _, kv := range b.o.configSets {
		k, v, _ := strings.Cut(kv, "=")
		if err := b.runWeft(ctx, "config", "set", "--repo", repo, k, v); err != nil {
			return 0, err
		}
	}
	return took, nil
}

// runWeft runs a short weft command (not the daemon), bounded to 30s.
func (b *bench) runWeft(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.o.weft, args...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("weft %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// start launches a daemon on repo. The returned daemon is registered for
// stopAll before start returns.
func (b *bench) start(repo, name string) (*daemon, time.Time, error) {
	logf, err := os.Create(repo + ".log")
	if err != nil {
		return nil, time.Time{}, err
	}
	cmd := exec.Command(b.o.weft, "daemon", "--repo", repo)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If this program dies without stopping its daemons, the kernel sends
	// them SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	t0 := time.Now()
	p, err := proc.Start(cmd)
	logf.Close() // the daemon has its own descriptor
	if err != nil {
		return nil, t0, fmt.Errorf("start daemon %s: %w", name, err)
	}
	d := &daemon{name: name, repo: repo, p: p, pid: p.PID}
	b.mu.Lock()
	b.procs[d.pid] = d
	b.mu.Unlock()
	b.recordPID(d.pid)
	return d, t0, nil
}

func (b *bench) recordPID(pid int) {
	if b.o.pidsFile == "" {
		return
	}
	f, err := os.OpenFile(b.o.pidsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintln(f, pid)
	f.Close()
}

// waitReady waits for REPO/api, then for GET /api/v1/id to answer. It
// returns the time the file appeared and the time the API answered.
func (b *bench) waitReady(ctx context.Context, d *daemon, deadline time.Duration) (fileAt, readyAt time.Time, id *api.ID, err error) {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	apiPath := filepath.Join(d.repo, "api")
	var addr string
	for addr == "" {
		if data, err := os.ReadFile(apiPath); err == nil && strings.HasSuffix(string(data), "\n") {
			addr = strings.TrimSpace(string(data))
			fileAt = time.Now()
			break
		}
		if err := pause(ctx, d, time.Millisecond); err != nil {
			return fileAt, readyAt, nil, fmt.Errorf("%s: waiting for %s: %w", d.name, apiPath, err)
		}
	}
	d.api = api.NewClient(addr, node.ReadToken(d.repo))
	for {
		var out api.ID
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		err := d.api.Do(rctx, http.MethodGet, "/api/v1/id", nil, nil, &out)
		rcancel()
		if err == nil && out.ID != "" {
			return fileAt, time.Now(), &out, nil
		}
		if err := pause(ctx, d, time.Millisecond); err != nil {
			return fileAt, readyAt, nil, fmt.Errorf("%s: waiting for GET /api/v1/id at %s: %w", d.name, addr, err)
		}
	}
}

// pause sleeps for dt unless ctx ends or the daemon exits.
func pause(ctx context.Context, d *daemon, dt time.Duration) error {
	t := time.NewTimer(dt)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.p.Done():
		return fmt.Errorf("daemon exited (%v); log %s.log:\n%s", d.p.Err(), d.repo, tail(d.repo+".log", 2000))
	case <-t.C:
		return nil
	}
}

// stop sends SIGTERM, waits up to 10s, then SIGKILLs. It returns how long
// the daemon took to exit after SIGTERM.
func (b *bench) stop(d *daemon) time.Duration {
	d.stopMu.Lock()
	defer d.stopMu.Unlock()
	took, killed := d.p.Stop(10 * time.Second)
	if killed {
		fmt.Fprintf(os.Stderr, "daemons: %s (pid %d) did not stop within 10s of SIGTERM; killed it\n", d.name, d.pid)
	}
	b.mu.Lock()
	delete(b.procs, d.pid)
	b.mu.Unlock()
	return took
}

// stopMany stops daemons in parallel.
func (b *bench) stopMany(ds []*daemon) {
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() { b.stop(d) })
	}
	wg.Wait()
}

func (b *bench) stopAll() {
	b.mu.Lock()
	var ds []*daemon
	for _, d := range b.procs {
		ds = append(ds, d)
	}
	b.mu.Unlock()
	b.stopMany(ds)
}

// ---------------------------------------------------------------- (a)

func (b *bench) startup(ctx context.Context) (*StartupResult, error) {
	fmt.Printf("(a) start-up: %d runs on fresh repos\n", b.o.startRuns)
	r := &StartupResult{}
	for i := range b.o.startRuns {
		repo := filepath.Join(b.o.work, fmt.Sprintf("startup-%d", i))
		initTook, err := b.initRepo(ctx, repo, "")
		if err != nil {
			return r, err
		}
		d, t0, err := b.start(repo, fmt.Sprintf("startup-%d", i))
		if err != nil {
			return r, err
		}
		fileAt, readyAt, _, err := b.waitReady(ctx, d, 30*time.Second)
		if err != nil {
			b.stop(d)
			return r, err
		}
		run := StartupRun{InitS: initTook.Seconds(), APIFileS: fileAt.Sub(t0).Seconds(), ReadyS: readyAt.Sub(t0).Seconds()}
		if m, err := readMem(d.pid); err == nil {
			run.RSSAtReady = m.RSS
		}
		if st, err := proc.ReadStat(d.pid); err == nil {
			run.CPUAtReady = st.CPUSeconds()
		}
		run.ShutdownS = b.stop(d).Seconds()
		if err := d.p.Err(); err != nil {
			return r, fmt.Errorf("%s exited with %v after SIGTERM; log:\n%s", d.name, err, tail(repo+".log", 2000))
		}
		r.Runs = append(r.Runs, run)
		fmt.Printf("    run %d: ready in %.3fs (api file %.3fs), rss %s, shutdown %.3fs\n",
			i+1, run.ReadyS, run.APIFileS, fmtMiB(run.RSSAtReady), run.ShutdownS)
		os.RemoveAll(repo)
		os.Remove(repo + ".log")
	}
	pick := func(f func(StartupRun) float64) []float64 {
		var v []float64
		for _, x := range r.Runs {
			v = append(v, f(x))
		}
		return v
	}
	ready := pick(func(x StartupRun) float64 { return x.ReadyS })
	r.MedianReadyS = median(ready)
	r.MinReadyS, r.MaxReadyS = minMax(ready)
	r.MedianInitS = median(pick(func(x StartupRun) float64 { return x.InitS }))
	r.MedianAPIFileS = median(pick(func(x StartupRun) float64 { return x.APIFileS }))
	r.MedianShutdownS = median(pick(func(x StartupRun) float64 { return x.ShutdownS }))
	r.MedianCPUAtReadyS = median(pick(func(x StartupRun) float64 { return x.CPUAtReady }))
	r.MedianRSSAtReady = int64(median(pick(func(x StartupRun) float64 { return float64(x.RSSAtReady) })))
	return r, nil
}

// ---------------------------------------------------------------- (b)

func (b *bench) idleOne(ctx context.Context) (*IdleOneResult, error) {
	fmt.Printf("(b) idle memory: %d isolated daemons (no peers), %s idle window\n", b.o.rssDaemons, b.o.idle)
	var ds []*daemon
	defer func() { b.stopMany(ds) }()
	for i := range b.o.rssDaemons {
		repo := filepath.Join(b.o.work, fmt.Sprintf("idle-%d", i))
		if _, err := b.initRepo(ctx, repo, ""); err != nil {
			return nil, err
		}
		d, _, err := b.start(repo, fmt.Sprintf("idle-%d", i))
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		if _, _, _, err := b.waitReady(ctx, d, 30*time.Second); err != nil {
			return nil, err
		}
	}
	procs, _, err := b.measureIdle(ctx, ds)
	if err != nil {
		return nil, err
	}
	for i, d := range ds {
		procs[i].Go = scrapeGo(ctx, d)
	}
	r := &IdleOneResult{Daemons: procs, GoMedian: medianGo(procs)}
	col := func(f func(ProcIdle) float64) float64 {
		var v []float64
		for _, p := range procs {
			v = append(v, f(p))
		}
		return median(v)
	}
	r.MedianRSSEnd = int64(col(func(p ProcIdle) float64 { return float64(p.End.RSS) }))
	r.MedianRSSSamples = int64(col(func(p ProcIdle) float64 { return float64(p.MedianRSS) }))
	r.MedianPSSEnd = int64(col(func(p ProcIdle) float64 { return float64(p.End.PSS) }))
	r.MedianAnonEnd = int64(col(func(p ProcIdle) float64 { return float64(p.End.Anon) }))
	r.MedianFileEnd = int64(col(func(p ProcIdle) float64 { return float64(p.End.File) }))
	r.MedianHWM = int64(col(func(p ProcIdle) float64 { return float64(p.End.HWM) }))
	r.MedianCPUPercent = col(func(p ProcIdle) float64 { return p.CPUPercent })
	return r, nil
}

// measureIdle samples the daemons' memory over the idle window and their
// CPU time from its start to its end. It does not talk to the daemons.
// totals holds, per sample, the sums of RSS and PSS over all daemons.
func (b *bench) measureIdle(ctx context.Context, ds []*daemon) ([]ProcIdle, [][2]int64, error) {
	type series struct {
		rss, pss, anon []float64
		last           MemSample
	}
	ss := make([]series, len(ds))
	startTicks := make([]int64, len(ds))
	var totals [][2]int64
	t0 := time.Now()
	for i, d := range ds {
		t, err := cpuTicks(d.pid)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", d.name, err)
		}
		startTicks[i] = t
	}
	sampleAll := func() error {
		var tot [2]int64
		for i, d := range ds {
			m, err := readMem(d.pid)
			if err != nil {
				return fmt.Errorf("%s (pid %d): %w", d.name, d.pid, err)
			}
			ss[i].rss = append(ss[i].rss, float64(m.RSS))
			ss[i].pss = append(ss[i].pss, float64(m.PSS))
			ss[i].anon = append(ss[i].anon, float64(m.Anon))
			ss[i].last = m
			tot[0] += m.RSS
			tot[1] += m.PSS
		}
		totals = append(totals, tot)
		return nil
	}
	end := t0.Add(b.o.idle)
	for next := t0.Add(b.o.sample); ; next = next.Add(b.o.sample) {
		if next.After(end) {
			next = end
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Until(next)):
		}
		if !next.Equal(end) {
			if err := sampleAll(); err != nil {
				return nil, nil, err
			}
			continue
		}
		// End of the window: CPU first, so the last memory sample's
		// /proc reads are not counted.
		window := time.Since(t0).Seconds()
		out := make([]ProcIdle, len(ds))
		for i, d := range ds {
			t, err := cpuTicks(d.pid)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", d.name, err)
			}
			out[i].CPUPercent = 100 * float64(t-startTicks[i]) / proc.ClockTicks / window
		}
		if err := sampleAll(); err != nil {
			return nil, nil, err
		}
		for i := range ds {
			out[i].End = ss[i].last
			out[i].MedianRSS = int64(median(ss[i].rss))
			out[i].MedianPSS = int64(median(ss[i].pss))
			out[i].MedianAnon = int64(median(ss[i].anon))
			out[i].Samples = len(ss[i].rss)
		}
		return out, totals, nil
	}
}

// ---------------------------------------------------------------- (c)

func (b *bench) swarm(ctx context.Context) (*SwarmResult, error) {
	n := b.o.nodes
	fmt.Printf("(c) idle swarm: %d daemons bootstrapped to the first, %s idle window\n", n, b.o.idle)
	ds := make([]*daemon, 0, n)
	defer func() { b.stopMany(ds) }()
	var seedAddr string
	for i := range n {
		repo := filepath.Join(b.o.work, fmt.Sprintf("swarm-%02d", i))
		if _, err := b.initRepo(ctx, repo, seedAddr); err != nil {
			return nil, err
		}
		d, _, err := b.start(repo, fmt.Sprintf("swarm-%02d", i))
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
		_, _, id, err := b.waitReady(ctx, d, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			for _, a := range id.Addrs {
				if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
					seedAddr = a
					break
				}
			}
			if seedAddr == "" {
				return nil, fmt.Errorf("seed has no /ip4/127.0.0.1/tcp address: %v", id.Addrs)
			}
		}
	}
	fmt.Printf("    %d daemons ready; waiting up to %s for every routing table to hold the %d others\n", n, b.o.formWait, n-1)
	r := &SwarmResult{Nodes: n}
	var err error
	r.FormationS, r.Formed, err = b.waitFormed(ctx, 200*time.Millisecond, func(fctx context.Context) bool {
		sts, err := statuses(fctx, ds)
		if err == nil {
			r.RoutingTableMin, r.PeersMin, r.PeersMedian = swarmShape(sts)
		}
		return err == nil && r.RoutingTableMin == n-1
	}, func() string {
		return fmt.Sprintf("formed (smallest routing table %d of %d)", r.RoutingTableMin, n-1)
	})
	if err != nil {
		return r, err
	}
	if r.Formed {
		fmt.Printf("    formed in %.1fs (peers per node: min %d, median %d)\n", r.FormationS, r.PeersMin, r.PeersMedian)
	}
	procs, totals, err := b.measureIdle(ctx, ds)
	if err != nil {
		return r, err
	}
	for i, d := range ds {
		procs[i].Go = scrapeGo(ctx, d)
	}
	summarizeSwarm(r, procs, totals)
	// The swarm's shape after the window (the API is asked only now, so
	// the requests do not count as load).
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if sts, err := statuses(sctx, ds); err == nil {
		r.RoutingTableMin, r.PeersMin, r.PeersMedian = swarmShape(sts)
	}
	return r, nil
}

// waitFormed polls formed every poll until it holds or -form-wait passes,
// and returns how long that took and whether it held. far says, for the
// message printed when it did not, how far the swarm got.
func (b *bench) waitFormed(ctx context.Context, poll time.Duration, formed func(context.Context) bool, far func() string) (float64, bool, error) {
	t0 := time.Now()
	fctx, cancel := context.WithTimeout(ctx, b.o.formWait)
	defer cancel()
	for {
		if formed(fctx) {
			return time.Since(t0).Seconds(), true, nil
		}
		if fctx.Err() != nil {
			if ctx.Err() != nil {
				return time.Since(t0).Seconds(), false, ctx.Err()
			}
			fmt.Printf("    not fully %s after %s; measuring anyway\n", far(), b.o.formWait)
			return time.Since(t0).Seconds(), false, nil
		}
		select {
		case <-fctx.Done():
		case <-time.After(poll):
		}
	}
}

// summarizeSwarm fills r's totals and per-daemon medians from an idle
// window's measurements.
func summarizeSwarm(r *SwarmResult, procs []ProcIdle, totals [][2]int64) {
	r.Daemons = procs
	r.GoMedian = medianGo(procs)
	var rss, pss, anon, cpu []float64
	for _, p := range procs {
		r.TotalRSSEnd += p.End.RSS
		r.TotalPSSEnd += p.End.PSS
		r.TotalAnonEnd += p.End.Anon
		r.CPUPercentTotal += p.CPUPercent
		rss = append(rss, float64(p.MedianRSS))
		pss = append(pss, float64(p.MedianPSS))
		anon = append(anon, float64(p.MedianAnon))
		cpu = append(cpu, p.CPUPercent)
	}
	var trss, tpss []float64
	for _, t := range totals {
		trss = append(trss, float64(t[0]))
		tpss = append(tpss, float64(t[1]))
	}
	r.TotalRSSMedian = int64(median(trss))
	r.TotalPSSMedian = int64(median(tpss))
	r.PerNodeRSSMedian = int64(median(rss))
	r.PerNodePSSMedian = int64(median(pss))
	r.PerNodeAnonMedian = int64(median(anon))
	r.CPUPercentMedian = median(cpu)
	_, r.CPUPercentMax = minMax(cpu)
}

func statuses(ctx context.Context, ds []*daemon) ([]api.Status, error) {
	out := make([]api.Status, len(ds))
	for i, d := range ds {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := d.api.Do(rctx, http.MethodGet, "/api/v1/status", nil, nil, &out[i])
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s status: %w", d.name, err)
		}
	}
	return out, nil
}

func swarmShape(sts []api.Status) (rtMin, peersMin, peersMedian int) {
	rtMin, peersMin = 1<<30, 1<<30
	var peers []float64
	for _, s := range sts {
		rtMin = min(rtMin, s.DHT.RoutingTable)
		peersMin = min(peersMin, s.Peers)
		peers = append(peers, float64(s.Peers))
	}
	return rtMin, peersMin, int(median(peers))
}

// ---------------------------------------------------------------- /proc

// readMem reads a process's memory (proc.ReadMem) into the JSON form.
func readMem(pid int) (MemSample, error) {
	m, err := proc.ReadMem(pid)
	return MemSample{RSS: m.RSS, Anon: m.Anon, File: m.File, PSS: m.PSS, HWM: m.HWM, Threads: m.Threads}, err
}

// cpuTicks returns utime+stime of a process, in proc.ClockTicks.
func cpuTicks(pid int) (int64, error) {
	st, err := proc.ReadStat(pid)
	return st.CPU, err
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func goEnv() []string {
	var out []string
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GODEBUG", "GOMAXPROCS"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// ---------------------------------------------------------------- output

func printTable(w io.Writer, r *Results) {
	fmt.Fprintf(w, "\nweft daemon benchmark  %s  commit %s  %s  %d CPUs  load %s -> %s\n",
		r.Date.Format(time.RFC3339), orDash(r.Commit), r.GoVersion, r.Machine.CPUs, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	if len(r.Settings.Env) > 0 || len(r.Settings.ConfigSets) > 0 {
		fmt.Fprintf(w, "env %v  config %v\n", r.Settings.Env, r.Settings.ConfigSets)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nmeasure\tvalue\tdetail")
	fmt.Fprintln(tw, "-------\t-----\t------")
	if s := r.Startup; s != nil && len(s.Runs) > 0 {
		fmt.Fprintf(tw, "(a) start to ready, median of %d\t%.3f s\tmin %.3f, max %.3f; REPO/api written at %.3f s\n",
			len(s.Runs), s.MedianReadyS, s.MinReadyS, s.MaxReadyS, s.MedianAPIFileS)
		fmt.Fprintf(tw, "    weft init (fresh repo)\t%.3f s\t\n", s.MedianInitS)
		fmt.Fprintf(tw, "    CPU used until ready\t%.2f s\tRSS at ready %s\n", s.MedianCPUAtReadyS, fmtMiB(s.MedianRSSAtReady))
		fmt.Fprintf(tw, "    SIGTERM to exit\t%.3f s\t\n", s.MedianShutdownS)
	}
	if s := r.IdleOne; s != nil {
		fmt.Fprintf(tw, "(b) idle RSS after %gs, median of %d daemons\t%s\tmedian over samples %s\n",
			r.Settings.IdleSeconds, len(s.Daemons), fmtMiB(s.MedianRSSEnd), fmtMiB(s.MedianRSSSamples))
		fmt.Fprintf(tw, "    of which anonymous / file-backed\t%s / %s\tfile-backed is mostly the binary, shared between daemons\n",
			fmtMiB(s.MedianAnonEnd), fmtMiB(s.MedianFileEnd))
		fmt.Fprintf(tw, "    PSS (shared pages split)\t%s\tpeak RSS (VmHWM) %s\n", fmtMiB(s.MedianPSSEnd), fmtMiB(s.MedianHWM))
		fmt.Fprintf(tw, "    CPU, idle and alone\t%.2f %%\tof one core\n", s.MedianCPUPercent)
		printGo(tw, s.GoMedian)
	}
	if s := r.Swarm; s != nil && len(s.Daemons) > 0 {
		formed := fmt.Sprintf("formed in %.1f s", s.FormationS)
		if !s.Formed {
			formed = fmt.Sprintf("NOT fully formed after %.0f s", s.FormationS)
		}
		fmt.Fprintf(tw, "(c) %d-daemon swarm: total RSS\t%s\tmedian over samples %s; %s, peers/node min %d median %d, routing table min %d\n",
			s.Nodes, fmtMiB(s.TotalRSSEnd), fmtMiB(s.TotalRSSMedian), formed, s.PeersMin, s.PeersMedian, s.RoutingTableMin)
		fmt.Fprintf(tw, "    total PSS\t%s\tmedian over samples %s (the real footprint: the binary is counted once)\n",
			fmtMiB(s.TotalPSSEnd), fmtMiB(s.TotalPSSMedian))
		fmt.Fprintf(tw, "    total anonymous RSS\t%s\t\n", fmtMiB(s.TotalAnonEnd))
		fmt.Fprintf(tw, "    per daemon, median\t%s RSS\t%s PSS, %s anonymous\n",
			fmtMiB(s.PerNodeRSSMedian), fmtMiB(s.PerNodePSSMedian), fmtMiB(s.PerNodeAnonMedian))
		fmt.Fprintf(tw, "    CPU over %gs idle, all daemons\t%.2f %%\tof one core; per daemon median %.2f %%, max %.2f %%\n",
			r.Settings.IdleSeconds, s.CPUPercentTotal, s.CPUPercentMedian, s.CPUPercentMax)
		printGo(tw, s.GoMedian)
	}
	if k := r.Kubo; k != nil && len(k.Daemons) > 0 {
		formed := fmt.Sprintf("connected in %.1f s", k.FormationS)
		if !k.Formed {
			formed = fmt.Sprintf("NOT fully connected after %.0f s", k.FormationS)
		}
		fmt.Fprintf(tw, "(d) Kubo %s, %d-daemon swarm: total RSS\t%s\tmedian over samples %s; %s, peers/node min %d median %d\n",
			k.Version, k.Nodes, fmtMiB(k.TotalRSSEnd), fmtMiB(k.TotalRSSMedian), formed, k.PeersMin, k.PeersMedian)
		fmt.Fprintf(tw, "    total PSS\t%s\tmedian over samples %s\n", fmtMiB(k.TotalPSSEnd), fmtMiB(k.TotalPSSMedian))
		fmt.Fprintf(tw, "    per daemon, median\t%s RSS\t%s PSS, %s anonymous\n",
			fmtMiB(k.PerNodeRSSMedian), fmtMiB(k.PerNodePSSMedian), fmtMiB(k.PerNodeAnonMedian))
		fmt.Fprintf(tw, "    CPU over %gs idle, all daemons\t%.2f %%\tof one core; per daemon median %.2f %%, max %.2f %%\n",
			r.Settings.IdleSeconds, k.CPUPercentTotal, k.CPUPercentMedian, k.CPUPercentMax)
		if s := r.Swarm; s != nil && s.PerNodeRSSMedian > 0 && k.PerNodeRSSMedian > 0 {
			fmt.Fprintf(tw, "    weft / Kubo, per daemon median\tRSS %.2f\tPSS %.2f, CPU %.2f\n",
				float64(s.PerNodeRSSMedian)/float64(k.PerNodeRSSMedian), float64(s.PerNodePSSMedian)/float64(k.PerNodePSSMedian),
				s.CPUPercentMedian/max(k.CPUPercentMedian, 1e-9))
		}
	}
	tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

func printGo(w io.Writer, g *GoRuntime) {
	if g == nil {
		return
	}
	fmt.Fprintf(w, "    Go runtime, median per daemon\theap %s\tof which live+garbage %s; stacks %s (%.0f goroutines); free kept %s; next GC at %s; %.0f GCs so far; runtime mapped %s\n",
		fmtMiB(int64(g.HeapInuse)), fmtMiB(int64(g.HeapAlloc)), fmtMiB(int64(g.StackInuse)), g.Goroutines,
		fmtMiB(int64(g.HeapIdleKept)), fmtMiB(int64(g.NextGC)), g.GCs, fmtMiB(int64(g.Sys)))
}

func writeJSON(path string, r *Results) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ---------------------------------------------------------------- helpers

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(v []float64) (lo, hi float64) {
	if len(v) == 0 {
		return 0, 0
	}
	lo, hi = v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/mib) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

func envDuration(k string, def time.Duration) time.Duration {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	return def
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*m = append(*m, v)
	return nil
}
