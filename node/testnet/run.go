package testnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipns"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/proc"
)

// RunOptions say how a scenario runs and where its report goes.
type RunOptions struct {
	Options
	ReportDir     string // report folder (created)
	ScenarioPath  string // the file the scenario came from (for the re-run line)
	ScenarioText  []byte // its text, copied into the report
	KeepOnFailure bool   // leave a failed testnet up for inspection
	Keep          bool   // leave the testnet up whatever happens
}

// AssertionError is a failed assert or wait-until step.
type AssertionError struct {
	Step  int    // 0-based index in the scenario
	Name  string // the step's name, or a description of its check
	Cause error
}

func (e *AssertionError) Error() string {
	return fmt.Sprintf("assertion %q (step %d) failed: %v", e.Name, e.Step+1, e.Cause)
}

func (e *AssertionError) Unwrap() error { return e.Cause }

// runner carries a scenario through its steps.
type runner struct {
	t     cluster
	sc    *Scenario
	began time.Time
	rng   *rand.Rand
	vars  map[string]string
	rep   *Report

	mu        sync.Mutex
	feeds     map[string]*feedTrack // by feed name
	usage     map[string]*nodeUsage
	watchCtx  context.Context
	stopWatch context.CancelFunc
	watchWG   sync.WaitGroup
	contentN  int
	nat       natTrack

	fetchTraces []fetchTrace // traced fetches, when the scenario traces
}

// feedTrack follows one feed's updates through the testnet.
type feedTrack struct {
	Name      string
	Publisher string
	Followers []string
	Published map[uint64]time.Time            // seq -> just before the publish call
	Seen      map[string]map[uint64]time.Time // follower -> seq -> first seen on the topic
	Final     map[string]uint64               // follower -> held sequence at the end
}

// nodeUsage accumulates a node's CPU and memory over restarts.
type nodeUsage struct {
	pid      int
	cpuPrev  float64 // CPU of earlier processes
	cpuLast  float64
	rssPeak  int64
	rssLast  int64
	samples  int
	rssTotal float64
}

// Run brings up a testnet for the scenario, runs its steps, writes the
// report and tears the testnet down (unless asked to keep it). The error
// is an *AssertionError when a check failed.
func Run(ctx context.Context, sc *Scenario, o RunOptions) (*Report, error) {
	return runOn(ctx, sc, o, func(ctx context.Context) (cluster, error) {
		t, err := Up(ctx, sc, o.Options)
		if err != nil {
			return nil, err
		}
		return t, nil
	}, nil)
}

// runOn is Run on the cluster up makes; sim, when set, fills in the report's
// simulation section at the end (sim.go).
func runOn(ctx context.Context, sc *Scenario, o RunOptions, up func(context.Context) (cluster, error), sim func(*Report)) (*Report, error) {
	if sc.Seed == 0 {
		sc.Seed = time.Now().UnixNano() & 0x7fffffff
	}
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout.D())
	defer cancel()
	r := &runner{sc: sc, vars: map[string]string{}, feeds: map[string]*feedTrack{}, usage: map[string]*nodeUsage{},
		rng: rand.New(rand.NewPCG(uint64(sc.Seed), 0x636f6e74656e74))}
	r.rep = newReport(sc, o)
	r.watchCtx, r.stopWatch = context.WithCancel(ctx)

	began := time.Now()
	t, err := up(ctx)
	r.rep.Startup.Seconds = time.Since(began).Seconds()
	if err != nil {
		r.rep.Error = err.Error()
		if sim != nil {
			sim(r.rep)
		}
		r.rep.finish(r)
		_ = r.rep.Write(o.ReportDir)
		return r.rep, fmt.Errorf("testnet up: %w", err)
	}
	r.t = t
	r.began = time.Now()
	r.rep.Testnet = t.state()
	r.rep.Startup.Nodes = len(t.state().Nodes)
	r.rep.Shaping = t.state().Shaping
	if t.state().Mode != ModeNetns {
		r.rep.Shaping = ShapingNone
	}
	if tn, ok := t.(*Testnet); ok { // real links only: a simulation reports its own
		if rtt, err := tn.measureLinkRTT(ctx); err != nil {
			tn.say("warning: %v", err)
		} else {
			r.rep.LinkRTT = statsOf(rtt)
		}
	}
	r.sampleUsage()
	r.rep.Startup.RSSBytes = r.totalRSS()
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.watchCtx.Done():
				return
			case <-tick.C:
				r.sampleUsage()
			}
		}
	}()

	var runErr error
	for i := range sc.Steps {
		st := &sc.Steps[i]
		if st.At != "" {
			d, _ := time.ParseDuration(st.At)
			if wait := time.Until(r.began.Add(d)); wait > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		}
		res := StepResult{Index: i + 1, Action: st.Action, Name: st.Name, Started: time.Since(r.began).Seconds()}
		sctx, scancel := context.WithTimeout(ctx, st.Timeout.D()+st.Deadline.D())
		wall0, cpu0, msgs0, mach0 := WallClock(), r.cpuSeconds(o.Mode), r.messages(), machineBusy(o.Mode)
		detail, err := r.step(sctx, i, st)
		scancel()
		res.CPUSeconds = r.cpuSeconds(o.Mode) - cpu0
		res.Messages = r.messages() - msgs0
		res.MachineCPUSeconds = machineBusy(o.Mode) - mach0
		res.Seconds = time.Since(r.began).Seconds() - res.Started
		if o.Mode == ModeSim {
			res.WallSeconds = (WallClock() - wall0).Seconds()
		}
		res.Detail = detail
		if err != nil {
			res.Error = err.Error()
			var ae *AssertionError
			if !errors.As(err, &ae) {
				err = fmt.Errorf("step %d (%s): %w", i+1, st.Action, err)
			}
			runErr = err
		}
		res.OK = err == nil
		r.rep.Steps = append(r.rep.Steps, res)
		if o.Progress != nil {
			mark := "ok"
			if err != nil {
				mark = "FAILED: " + err.Error()
			}
			label := st.Action
			if st.Name != "" {
				label += " " + st.Name
			}
			wall := ""
			if o.Mode == ModeSim {
				wall = fmt.Sprintf(" (%.1fs virtual, %.1fs wall)", res.Seconds, res.WallSeconds)
			}
			fmt.Fprintf(o.Progress, "[%6.1fs] step %d/%d %s: %s %s%s\n", res.Started, i+1, len(sc.Steps), label, detail, mark, wall)
		}
		if runErr != nil {
			break
		}
	}
	// Final feed positions, for the delivery ratio.
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	r.finalFeeds(fctx)
	fcancel()
	r.stopWatch()
	<-samplerDone
	r.watchWG.Wait()
	keep := o.Keep || (runErr != nil && o.KeepOnFailure)
	if tracingOn(sc) && !keep {
		// The nodes flush their spans as they stop.
		tctx, tcancel := context.WithTimeout(context.Background(), time.Minute)
		if err := r.collectTraces(tctx); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("collect traces: %w", err))
		}
		tcancel()
	}
	r.rep.Duration = time.Since(began).Seconds()
	if runErr != nil {
		r.rep.Error = runErr.Error()
	}
	if sim != nil {
		sim(r.rep)
	}
	r.rep.finish(r)
	if keep {
		r.rep.KeptUp = t.state().Dir
	}
	if werr := r.rep.Write(o.ReportDir); werr != nil {
		runErr = errors.Join(runErr, fmt.Errorf("write report: %w", werr))
	}
	if !keep {
		if derr := t.Down(context.Background(), true); derr != nil {
			runErr = errors.Join(runErr, fmt.Errorf("testnet down: %w", derr))
		}
	}
	return r.rep, runErr
}

func (r *runner) sampleUsage() {
	for _, n := range r.t.state().Nodes {
		if !r.t.isUp(n) {
			continue
		}
		pid, _ := n.proc()
		u := sampleProc(pid)
		r.mu.Lock()
		nu := r.usage[n.Name]
		if nu == nil {
			nu = &nodeUsage{pid: pid}
			r.usage[n.Name] = nu
		}
		if nu.pid != pid {
			nu.cpuPrev += nu.cpuLast
			nu.cpuLast, nu.pid = 0, pid
		}
		nu.cpuLast = u.CPU
		nu.rssLast = u.RSS
		nu.rssPeak = max(nu.rssPeak, u.RSS)
		nu.samples++
		nu.rssTotal += float64(u.RSS)
		r.mu.Unlock()
	}
}

// machineBusy is the machine's busy CPU time so far in a real testnet (0 in
// a simulation, whose machine is this process).
func machineBusy(mode string) float64 {
	if mode == ModeSim {
		return 0
	}
	b, _ := proc.MachineBusy()
	return b
}

// messages is how many messages a simulation's links carried so far (0 on
// real links).
func (r *runner) messages() int64 {
	if c, ok := r.t.(interface{ messages() int64 }); ok {
		return c.messages()
	}
	return 0
}

// cpuSeconds is the CPU time used so far: by the nodes' daemons (real), or
// by this process (a simulation runs every node in it).
func (r *runner) cpuSeconds(mode string) float64 {
	if mode == ModeSim {
		return proc.SelfCPU().Seconds()
	}
	r.sampleUsage()
	r.mu.Lock()
	defer r.mu.Unlock()
	var s float64
	for _, u := range r.usage {
		s += u.cpuPrev + u.cpuLast
	}
	return s
}

func (r *runner) totalRSS() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s int64
	for _, u := range r.usage {
		s += u.rssLast
	}
	return s
}

// val resolves "$name" to a variable's value.
func (r *runner) val(s string) (string, error) {
	name, ok := strings.CutPrefix(s, "$")
	if !ok {
		return s, nil
	}
	v, ok := r.vars[name]
	if !ok {
		return "", fmt.Errorf("$%s is not set", name)
	}
	return v, nil
}

func (r *runner) set(name, v string) {
	if name != "" {
		r.vars[name] = v
	}
}

func (r *runner) node(name string) (*NodeState, error) {
	names, err := r.sc.Resolve(Selector{name})
	if err != nil {
		return nil, err
	}
	return r.t.state().Node(names[0])
}

// selected returns the nodes of a selector; running keeps only the live
// ones.
func (r *runner) selected(sel Selector, running bool) ([]*NodeState, error) {
	names, err := r.sc.Resolve(sel)
	if err != nil {
		return nil, err
	}
	ns, err := r.t.nodes(names)
	if err != nil {
		return nil, err
	}
	if running {
		ns = slices.DeleteFunc(ns, func(n *NodeState) bool { return !r.t.isUp(n) })
	}
	return ns, nil
}

func names(ns []*NodeState) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

// content makes size bytes from the seeded generator, unique per call.
func (r *runner) content(size int64, text string) []byte {
	r.mu.Lock()
	r.contentN++
	n := r.contentN
	seed := r.rng.Uint64()
	r.mu.Unlock()
	if text != "" {
		return []byte(text)
	}
	b := make([]byte, size)
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
		key[8+i] = byte(uint64(n) >> (8 * i))
	}
	c := rand.NewChaCha8(key)
	_, _ = c.Read(b)
	return b
}

func (r *runner) add(ctx context.Context, n *NodeState, data []byte) (string, error) {
	q := url.Values{}
	return r.t.Client(n).Add(ctx, files.NewBytesFile(data), q, nil, nil)
}

// addUnpinned adds data on n without pinning it.
func (r *runner) addUnpinned(ctx context.Context, n *NodeState, data []byte) (string, error) {
	return r.t.Client(n).Add(ctx, files.NewBytesFile(data), url.Values{"pin": {"false"}}, nil, nil)
}

func sizeOf(s, def string) int64 {
	if s == "" {
		s = def
	}
	v, _ := node.ParseByteSize(s)
	return v
}

func short(s string) string {
	if len(s) > 16 {
		return s[:6] + "…" + s[len(s)-6:]
	}
	return s
}

// feedOf returns the feed name of key on node n, making the key if needed.
func (r *runner) feedOf(ctx context.Context, n *NodeState, key string) (string, error) {
	c := r.t.Client(n)
	if key == "" || key == node.SelfKey {
		id, err := c.ID(ctx)
		if err != nil {
			return "", err
		}
		keys, err := c.KeyLs(ctx)
		if err != nil {
			return "", err
		}
		for _, k := range keys {
			if k.Name == node.SelfKey {
				return k.Feed, nil
			}
		}
		return "", fmt.Errorf("%s (%s) lists no self key", n.Name, id.ID)
	}
	keys, err := c.KeyLs(ctx)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.Name == key {
			return k.Feed, nil
		}
	}
	k, err := c.KeyGen(ctx, key)
	if err != nil {
		return "", fmt.Errorf("%s: key gen %s: %w", n.Name, key, err)
	}
	return k.Feed, nil
}

func (r *runner) track(feedName string) *feedTrack {
	r.mu.Lock()
	defer r.mu.Unlock()
	tr := r.feeds[feedName]
	if tr == nil {
		tr = &feedTrack{Name: feedName, Published: map[uint64]time.Time{}, Seen: map[string]map[uint64]time.Time{}, Final: map[string]uint64{}}
		r.feeds[feedName] = tr
	}
	return tr
}

// watch subscribes to the feed's topic on a follower and notes when each
// sequence number first arrives. It resubscribes after the node restarts,
// until the run ends.
func (r *runner) watch(tr *feedTrack, n *NodeState) {
	topic := "/weft/feed/1/" + tr.Name
	r.watchWG.Add(1)
	go func() {
		defer r.watchWG.Done()
		for attempt := 0; attempt < 100000 && r.watchCtx.Err() == nil; attempt++ {
			if r.t.isUp(n) {
				_ = r.t.Client(n).Subscribe(r.watchCtx, topic, func(m api.PubsubMessage) bool {
					now := time.Now()
					if !m.Received.IsZero() {
						// The daemon's own time of receipt: what the
						// stream to this process adds is not the swarm's.
						now = m.Received
					}
					rec, err := ipns.UnmarshalRecord(m.Data)
					if err != nil {
						return true
					}
					seq, err := rec.Sequence()
					if err != nil {
						return true
					}
					r.mu.Lock()
					seen := tr.Seen[n.Name]
					if seen == nil {
						seen = map[uint64]time.Time{}
						tr.Seen[n.Name] = seen
					}
					if _, ok := seen[seq]; !ok {
						seen[seq] = now
					}
					r.mu.Unlock()
					return true
				})
			}
			select {
			case <-r.watchCtx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
}

// finalFeeds records each follower's held sequence at the end of the run.
func (r *runner) finalFeeds(ctx context.Context) {
	if r.t == nil {
		return
	}
	for _, tr := range r.feeds {
		r.refreshFeed(ctx, tr)
	}
}

func (r *runner) refreshFeed(ctx context.Context, tr *feedTrack) {
	r.mu.Lock()
	followers := slices.Clone(tr.Followers)
	r.mu.Unlock()
	ns, _ := r.t.nodes(followers)
	_ = r.t.parallel(ns, 8, func(n *NodeState) error {
		if !r.t.isUp(n) {
			return nil
		}
		seq, err := r.heldSeq(ctx, n, tr.Name)
		if err == nil {
			r.mu.Lock()
			tr.Final[n.Name] = seq
			r.mu.Unlock()
		}
		return nil
	})
}

func (r *runner) heldSeq(ctx context.Context, n *NodeState, feedName string) (uint64, error) {
	fs, err := r.t.Client(n).FeedLs(ctx)
	if err != nil {
		return 0, err
	}
	for _, f := range fs {
		if f.Name == feedName {
			return f.Held.Seq, nil
		}
	}
	return 0, nil
}
