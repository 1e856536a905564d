package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	t     *Testnet
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
	t, err := Up(ctx, sc, o.Options)
	r.rep.Startup.Seconds = time.Since(began).Seconds()
	if err != nil {
		r.rep.Error = err.Error()
		r.rep.finish(r)
		_ = r.rep.Write(o.ReportDir)
		return r.rep, fmt.Errorf("testnet up: %w", err)
	}
	r.t = t
	r.began = time.Now()
	r.rep.Testnet = t.st
	r.rep.Startup.Nodes = len(t.st.Nodes)
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
		detail, err := r.step(sctx, i, st)
		scancel()
		res.Seconds = time.Since(r.began).Seconds() - res.Started
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
			fmt.Fprintf(o.Progress, "[%6.1fs] step %d/%d %s: %s %s\n", res.Started, i+1, len(sc.Steps), label, detail, mark)
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
	r.rep.Duration = time.Since(began).Seconds()
	if runErr != nil {
		r.rep.Error = runErr.Error()
	}
	r.rep.finish(r)
	keep := o.Keep || (runErr != nil && o.KeepOnFailure)
	if keep {
		r.rep.KeptUp = t.st.Dir
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
	for _, n := range r.t.st.Nodes {
		if !n.alive() {
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
	return r.t.st.Node(names[0])
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
		ns = slices.DeleteFunc(ns, func(n *NodeState) bool { return !n.alive() })
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

func sizeOf(s, def string) int64 {
	if s == "" {
		s = def
	}
	v, _ := node.ParseByteSize(s)
	return v
}

// step carries out one step and returns a one-line detail.
func (r *runner) step(ctx context.Context, idx int, st *Step) (string, error) {
	t := r.t
	switch st.Action {
	case "start", "restart", "kill", "stop":
		ns, err := r.sc.Resolve(st.Nodes)
		if err != nil {
			return "", err
		}
		switch st.Action {
		case "start":
			err = t.Start(ctx, ns)
		case "restart":
			err = t.Restart(ctx, ns)
		case "kill":
			err = t.Kill(ctx, ns)
		case "stop":
			err = t.Stop(ctx, ns)
		}
		return strings.Join(ns, " "), err

	case "add":
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		c, err := r.add(ctx, n, r.content(sizeOf(st.Size, "1KiB"), st.Text))
		if err != nil {
			return "", fmt.Errorf("add on %s: %w", n.Name, err)
		}
		r.set(st.As, c)
		return fmt.Sprintf("%s added %s", n.Name, c), nil

	case "fetch":
		c, err := r.val(st.CID)
		if err != nil {
			return "", err
		}
		ns, err := r.selected(st.Nodes, true)
		if err != nil {
			return "", err
		}
		pin := st.Pin == nil || *st.Pin
		var mu sync.Mutex
		var times []float64
		err = t.parallel(ns, 8, func(n *NodeState) error {
			began := time.Now()
			var err error
			if pin {
				_, err = t.Client(n).PinAdd(ctx, c, true, "testnet")
			} else {
				var rc io.ReadCloser
				if rc, err = t.Client(n).Cat(ctx, c, 0, -1); err == nil {
					_, err = io.Copy(io.Discard, rc)
					rc.Close()
				}
			}
			if err != nil {
				return fmt.Errorf("%s: fetch %s: %w", n.Name, c, err)
			}
			mu.Lock()
			times = append(times, time.Since(began).Seconds())
			mu.Unlock()
			return nil
		})
		r.mu.Lock()
		r.rep.fetchTimes = append(r.rep.fetchTimes, times...)
		r.mu.Unlock()
		return fmt.Sprintf("%d nodes fetched %s (median %.3fs)", len(times), short(c), percentile(times, 50)), err

	case "follow":
		feedName := ""
		if st.Feed != "" {
			v, err := r.val(st.Feed)
			if err != nil {
				return "", err
			}
			feedName = v
		} else {
			pub, err := r.node(st.Publisher)
			if err != nil {
				return "", err
			}
			if feedName, err = r.feedOf(ctx, pub, st.Key); err != nil {
				return "", err
			}
		}
		r.set(st.As, feedName)
		ns, err := r.selected(st.Nodes, true)
		if err != nil {
			return "", err
		}
		// The publisher holds its own feed already.
		ns = slices.DeleteFunc(ns, func(n *NodeState) bool { return st.Publisher != "" && n.Name == st.Publisher })
		pin := st.Pin == nil || *st.Pin
		tr := r.track(feedName)
		err = t.parallel(ns, 8, func(n *NodeState) error {
			if _, err := t.Client(n).FeedFollow(ctx, feedName, pin, false); err != nil {
				return fmt.Errorf("%s: follow: %w", n.Name, err)
			}
			r.mu.Lock()
			if !slices.Contains(tr.Followers, n.Name) {
				tr.Followers = append(tr.Followers, n.Name)
			}
			r.mu.Unlock()
			r.watch(tr, n)
			return nil
		})
		return fmt.Sprintf("%d nodes follow %s", len(ns), short(feedName)), err

	case "publish":
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		feedName, err := r.feedOf(ctx, n, st.Key)
		if err != nil {
			return "", err
		}
		r.set(st.As, feedName)
		tr := r.track(feedName)
		r.mu.Lock()
		tr.Publisher = n.Name
		r.mu.Unlock()
		var last api.FeedRecord
		next := time.Now()
		for k := 0; k < st.Count; k++ {
			if wait := time.Until(next); wait > 0 {
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(wait):
				}
			}
			next = next.Add(st.Interval.D())
			c := st.CID
			if c != "" {
				if c, err = r.val(c); err != nil {
					return "", err
				}
			} else if c, err = r.add(ctx, n, r.content(sizeOf(st.Size, "1KiB"), st.Text)); err != nil {
				return "", fmt.Errorf("add version %d: %w", k+1, err)
			}
			began := time.Now()
			rec, err := t.Client(n).FeedPublish(ctx, st.Key, c)
			if err != nil && rec.Seq == 0 {
				return "", fmt.Errorf("publish version %d: %w", k+1, err)
			}
			r.mu.Lock()
			tr.Published[rec.Seq] = began
			r.mu.Unlock()
			last = rec
		}
		return fmt.Sprintf("%s published %d versions of %s (last seq %d)", n.Name, st.Count, short(feedName), last.Seq), nil

	case "collection-create":
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		name := st.Name
		if name == "" {
			name = st.As
		}
		s, err := t.Client(n).CollectionCreate(ctx, name, st.Replication)
		if err != nil {
			return "", fmt.Errorf("%s: collection create: %w", n.Name, err)
		}
		r.set(st.As, s.ID)
		return fmt.Sprintf("%s created %s (R=%d)", n.Name, short(s.ID), s.Replication), nil

	case "collection-join":
		id, err := r.val(st.Collection)
		if err != nil {
			return "", err
		}
		ns, err := r.selected(st.Nodes, true)
		if err != nil {
			return "", err
		}
		err = t.parallel(ns, 8, func(n *NodeState) error {
			if _, err := t.Client(n).CollectionJoin(ctx, id, ""); err != nil {
				return fmt.Errorf("%s: collection join: %w", n.Name, err)
			}
			return nil
		})
		return fmt.Sprintf("%d nodes joined %s", len(ns), short(id)), err

	case "collection-add":
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		id, err := r.val(st.Collection)
		if err != nil {
			return "", err
		}
		var cids []string
		if st.CID != "" {
			c, err := r.val(st.CID)
			if err != nil {
				return "", err
			}
			cids = strings.Split(c, ",")
		}
		for k := 0; k < st.Count; k++ {
			c, err := r.add(ctx, n, r.content(sizeOf(st.Size, "4KiB"), st.Text))
			if err != nil {
				return "", fmt.Errorf("add item %d: %w", k+1, err)
			}
			cids = append(cids, c)
		}
		if _, err := t.Client(n).CollectionAdd(ctx, id, cids, st.Replication, st.Name); err != nil {
			return "", fmt.Errorf("%s: collection add: %w", n.Name, err)
		}
		r.set(st.As, strings.Join(cids, ","))
		return fmt.Sprintf("%s added %d items to %s", n.Name, len(cids), short(id)), nil

	case "partition":
		var groups [][]string
		for _, g := range st.Groups {
			ns, err := r.sc.Resolve(g)
			if err != nil {
				return "", err
			}
			groups = append(groups, ns)
		}
		var parts []string
		for _, g := range groups {
			parts = append(parts, "["+summariseNames(g)+"]")
		}
		return strings.Join(parts, " | "), t.Partition(ctx, groups)

	case "heal":
		return "", t.Heal(ctx)

	case "shape":
		ns, err := r.sc.Resolve(st.Nodes)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d nodes: %s", len(ns), st.Shape), t.Shape(ctx, ns, st.Shape)

	case "sleep":
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(st.Duration.D()):
		}
		return st.Duration.String(), nil

	case "assert":
		detail, err := r.check(ctx, st)
		if err != nil {
			return detail, &AssertionError{Step: idx, Name: checkName(st), Cause: err}
		}
		return detail, nil

	case "wait-until":
		began := time.Now()
		deadline := began.Add(st.Deadline.D())
		poll := 250 * time.Millisecond
		if len(r.t.st.Nodes) > 20 {
			poll = time.Second
		}
		var detail string
		var err error
		for attempt := 0; ; attempt++ {
			cctx, cancel := context.WithTimeout(ctx, max(time.Until(deadline), time.Second))
			detail, err = r.check(cctx, st)
			cancel()
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(poll):
			}
		}
		w := Timing{Name: checkName(st), Seconds: time.Since(began).Seconds(), OK: err == nil}
		r.mu.Lock()
		r.rep.Waits = append(r.rep.Waits, w)
		r.mu.Unlock()
		if err != nil {
			return detail, &AssertionError{Step: idx, Name: checkName(st), Cause: fmt.Errorf("not true within %s: %w", st.Deadline, err)}
		}
		return fmt.Sprintf("%s after %.2fs", detail, w.Seconds), nil
	}
	return "", fmt.Errorf("unknown action %q", st.Action)
}

func checkName(st *Step) string {
	if st.Name != "" {
		return st.Name
	}
	s := st.Check
	if st.Negate {
		s = "not " + s
	}
	return s
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
			if n.alive() {
				_ = r.t.Client(n).Subscribe(r.watchCtx, topic, func(m api.PubsubMessage) bool {
					now := time.Now()
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
		if !n.alive() {
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

// check evaluates an assert or wait-until condition; nil means it holds.
func (r *runner) check(ctx context.Context, st *Step) (string, error) {
	t := r.t
	var err error
	detail := ""
	switch st.Check {
	case "running":
		ns, err2 := r.selected(st.Nodes, false)
		if err2 != nil {
			return "", err2
		}
		var bad []string
		for _, n := range ns {
			if n.alive() == st.Negate {
				bad = append(bad, n.Name)
			}
		}
		detail = fmt.Sprintf("%d nodes", len(ns))
		if len(bad) > 0 {
			state := "not running"
			if st.Negate {
				state = "running"
			}
			return detail, fmt.Errorf("%s %s", summariseNames(bad), state)
		}
		return detail, nil
	case "delivery":
		feedName, err := r.val(st.Feed)
		if err != nil {
			return "", err
		}
		r.mu.Lock()
		tr := r.feeds[feedName]
		r.mu.Unlock()
		if tr == nil {
			return "", fmt.Errorf("feed %s was never followed in this run", short(feedName))
		}
		r.refreshFeed(ctx, tr)
		r.mu.Lock()
		d := deliveryOf(tr)
		r.mu.Unlock()
		detail = fmt.Sprintf("%d/%d deliveries (%.1f%%)", d.Delivered, d.Expected, 100*d.Ratio)
		if d.Ratio+1e-9 < st.Min {
			return detail, fmt.Errorf("delivery ratio %.4f is below %.4f (%d of %d follower-updates)", d.Ratio, st.Min, d.Delivered, d.Expected)
		}
		return detail, nil
	}
	// The other checks ask running nodes.
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	if st.Node != "" && (st.Check == "replicas") {
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		ns = []*NodeState{n}
	}
	if len(ns) == 0 {
		return "", errors.New("no running node among those selected")
	}
	var mu sync.Mutex
	var failed []string
	var firstErr error
	fail := func(n *NodeState, err error) {
		mu.Lock()
		failed = append(failed, n.Name)
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", n.Name, err)
		}
		mu.Unlock()
	}
	var cids []string
	var feedName, coll string
	switch st.Check {
	case "holds":
		c, err := r.val(st.CID)
		if err != nil {
			return "", err
		}
		cids = strings.Split(c, ",")
	case "feed-seq":
		if feedName, err = r.val(st.Feed); err != nil {
			return "", err
		}
	case "replicas", "members":
		if coll, err = r.val(st.Collection); err != nil {
			return "", err
		}
	}
	if st.Check == "replicas" && st.Node == "" {
		return r.pinnedReplicas(ctx, st, coll, ns)
	}
	if st.Check == "replicas" {
		ns = ns[:1]
	}
	_ = t.parallel(ns, 8, func(n *NodeState) error {
		c := t.Client(n)
		switch st.Check {
		case "holds":
			pins, err := c.PinLs(ctx)
			if err != nil {
				fail(n, err)
				return nil
			}
			held := map[string]bool{}
			for _, p := range pins {
				held[p.CID] = true
			}
			var missing, present int
			for _, x := range cids {
				if held[x] {
					present++
				} else {
					missing++
				}
			}
			switch {
			case !st.Negate && missing > 0:
				fail(n, fmt.Errorf("holds %d of %d (missing e.g. %s)", present, len(cids), short(firstMissing(cids, held))))
			case st.Negate && present > 0:
				fail(n, fmt.Errorf("holds %d of %d it should not", present, len(cids)))
			}
		case "peers":
			ps, err := c.Peers(ctx)
			if err != nil {
				fail(n, err)
				return nil
			}
			if (float64(len(ps)) >= st.Min) == st.Negate {
				fail(n, fmt.Errorf("%d peers (want %s%g)", len(ps), map[bool]string{false: "≥", true: "<"}[st.Negate], st.Min))
			}
		case "feed-seq":
			seq, err := r.heldSeq(ctx, n, feedName)
			if err != nil {
				fail(n, err)
				return nil
			}
			if (seq >= st.Seq) == st.Negate {
				fail(n, fmt.Errorf("at sequence %d (want %s%d)", seq, map[bool]string{false: "≥", true: "<"}[st.Negate], st.Seq))
			}
		case "members":
			s, err := c.CollectionStatus(ctx, coll)
			if err != nil {
				fail(n, err)
				return nil
			}
			if (float64(s.MembersAlive) >= st.Min) == st.Negate {
				fail(n, fmt.Errorf("%d members alive (want ≥%g)", s.MembersAlive, st.Min))
			}
		case "replicas":
			s, err := c.CollectionStatus(ctx, coll)
			if err != nil {
				fail(n, err)
				return nil
			}
			live := map[string]bool{}
			for _, m := range t.st.Nodes {
				if m.alive() {
					live[m.PeerID] = true
				}
			}
			var under []string
			for _, it := range s.ItemList {
				k := 0
				for _, p := range it.Pinned {
					if live[p] {
						k++
					}
				}
				if k < st.Replication {
					under = append(under, fmt.Sprintf("%s at %d", short(it.CID), k))
				}
			}
			if len(s.ItemList) == 0 {
				fail(n, errors.New("the collection lists no items"))
			} else if (len(under) == 0) == st.Negate {
				if st.Negate {
					fail(n, fmt.Errorf("every item has %d live holders", st.Replication))
				} else {
					fail(n, fmt.Errorf("%d of %d items under %d live holders (%s)", len(under), len(s.ItemList), st.Replication, strings.Join(under[:min(3, len(under))], ", ")))
				}
			}
			detail = fmt.Sprintf("%d items", len(s.ItemList))
		}
		return nil
	})
	if detail == "" {
		detail = fmt.Sprintf("%d nodes", len(ns))
	}
	if len(failed) > 0 {
		if len(failed) > 1 {
			return detail, fmt.Errorf("%d nodes fail (%s); %w", len(failed), summariseNames(sorted(failed)), firstErr)
		}
		return detail, firstErr
	}
	return detail, nil
}

func firstMissing(cids []string, held map[string]bool) string {
	for _, c := range cids {
		if !held[c] {
			return c
		}
	}
	return ""
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	return out
}

// pinnedReplicas checks a collection's replication against what the nodes
// actually hold: the items as the first node lists them, and every
// running node's pin list.
func (r *runner) pinnedReplicas(ctx context.Context, st *Step, coll string, ns []*NodeState) (string, error) {
	items, err := r.t.Client(ns[0]).CollectionLs(ctx, coll)
	if err != nil {
		return "", fmt.Errorf("%s: %w", ns[0].Name, err)
	}
	if len(items) == 0 {
		return "", errors.New("the collection lists no items")
	}
	var mu sync.Mutex
	count := map[string]int{}
	var errs []error
	_ = r.t.parallel(ns, 8, func(n *NodeState) error {
		pins, err := r.t.Client(n).PinLs(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			return nil
		}
		for _, p := range pins {
			count[p.CID]++
		}
		return nil
	})
	if len(errs) > 0 {
		return "", errors.Join(errs...)
	}
	var under []string
	for _, it := range items {
		if count[it.CID] < st.Replication {
			under = append(under, fmt.Sprintf("%s at %d", short(it.CID), count[it.CID]))
		}
	}
	detail := fmt.Sprintf("%d items on %d nodes", len(items), len(ns))
	if (len(under) == 0) == st.Negate {
		if st.Negate {
			return detail, fmt.Errorf("every item is pinned on %d nodes", st.Replication)
		}
		return detail, fmt.Errorf("%d of %d items pinned on fewer than %d running nodes (%s)", len(under), len(items), st.Replication, strings.Join(under[:min(3, len(under))], ", "))
	}
	return detail, nil
}
