package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
)

// action is one kind of scenario step. Its entry in actions is everything
// about it: which fields it needs (validate, run by Scenario.Validate) and
// what it does (run, by Run). The fields every step has (at, nodes, size,
// timeout, as) are validated by Scenario.validateStep for all actions.
type action struct {
	// validate reports what is missing or wrong in the step's fields and
	// fills their defaults; nil when the action needs no field of its own.
	validate func(v *stepValidator, st *Step)
	// run carries the step out and returns a one-line detail for the
	// report; idx is the step's 0-based index.
	run func(r *runner, ctx context.Context, idx int, st *Step) (string, error)
}

// actions is every action a step may take, by name. README.md
// ("Scenario files") lists each one's fields.
var actions = map[string]action{
	"start":   {run: lifecycle(cluster.Start)},
	"stop":    {run: lifecycle(cluster.Stop)},
	"kill":    {run: lifecycle(cluster.Kill)},
	"restart": {run: lifecycle(cluster.Restart)},
	"add": {
		validate: func(v *stepValidator, st *Step) {
			v.node("node", st.Node)
			if st.Size == "" && st.Text == "" {
				v.bad("give size or text")
			}
		},
		run: (*runner).runAdd,
	},
	"fetch": {
		validate: func(v *stepValidator, st *Step) { v.ref("cid", st.CID) },
		run:      (*runner).runFetch,
	},
	"publish": {
		validate: func(v *stepValidator, st *Step) {
			v.node("node", st.Node)
			if st.Count == 0 {
				st.Count = 1
			}
			if st.CID != "" && st.Count > 1 {
				v.bad("cid publishes one version; leave it out to publish count fresh ones")
			}
			if st.CID != "" {
				v.ref("cid", st.CID)
			}
		},
		run: (*runner).runPublish,
	},
	"follow": {
		validate: func(v *stepValidator, st *Step) {
			if st.Feed == "" {
				v.node("publisher", st.Publisher)
			} else {
				v.ref("feed", st.Feed)
			}
		},
		run: (*runner).runFollow,
	},
	"collection-create": {
		validate: func(v *stepValidator, st *Step) {
			v.node("node", st.Node)
			if st.As == "" {
				v.bad("as is required (the variable the collection ID goes into)")
			}
		},
		run: (*runner).runCollectionCreate,
	},
	"collection-join": {
		validate: func(v *stepValidator, st *Step) { v.ref("collection", st.Collection) },
		run:      (*runner).runCollectionJoin,
	},
	"collection-add": {
		validate: func(v *stepValidator, st *Step) {
			v.node("node", st.Node)
			v.ref("collection", st.Collection)
			if st.CID == "" && st.Count == 0 {
				st.Count = 1
			}
			if st.CID != "" {
				v.ref("cid", st.CID)
			}
		},
		run: (*runner).runCollectionAdd,
	},
	"dht-lookup": {
		validate: func(v *stepValidator, st *Step) {
			switch st.Lookup {
			case "find-peer":
				if st.CID != "" {
					v.bad("find-peer looks up nodes picked with the seed; cid is for find-providers")
				}
			case "find-providers":
				v.ref("cid", st.CID)
			default:
				v.bad("lookup %q: want find-peer or find-providers", st.Lookup)
			}
			if st.Count < 0 {
				v.bad("count must not be negative")
			}
		},
		run: (*runner).runDHTLookup,
	},
	"attack": {
		validate: func(v *stepValidator, st *Step) {
			v.node("node", st.Node)
			if len(st.Nodes) == 0 {
				v.bad("nodes (the victims) is required")
			}
			switch st.Attack {
			case "junk-heads", "heads-requests":
				v.ref("collection", st.Collection)
			case "feed-records":
				v.ref("feed", st.Feed)
			case "slow-exchange":
				v.ref("cid", st.CID)
				if st.Duration <= 0 {
					v.bad("duration is required (how long the streams are held)")
				}
			default:
				v.bad("attack %q: want junk-heads, heads-requests, feed-records or slow-exchange", st.Attack)
			}
			if st.Count < 0 || st.Rate < 0 || st.Heads < 0 {
				v.bad("count, rate and heads must not be negative")
			}
		},
		run: (*runner).runAttack,
	},
	"partition": {
		validate: func(v *stepValidator, st *Step) {
			if v.s.HasNAT() {
				v.bad("partition is not available with NAT groups (nodes behind routers have no address of their own on the internet)")
			}
			if len(st.Groups) < 2 {
				v.bad("groups needs at least two groups of nodes")
			}
			for _, g := range st.Groups {
				if _, err := v.s.Resolve(g); err != nil || len(g) == 0 {
					v.bad("groups: %v", err)
				}
			}
		},
		run: (*runner).runPartition,
	},
	"connect": {
		validate: func(v *stepValidator, st *Step) {
			if st.Deadline == 0 {
				st.Deadline = Duration(30 * time.Second)
			}
		},
		run: (*runner).runConnect,
	},
	"pairwise": {
		validate: func(v *stepValidator, st *Step) {
			if st.Deadline == 0 {
				st.Deadline = Duration(60 * time.Second)
			}
			if st.Size == "" {
				st.Size = "64KiB"
			}
		},
		run: (*runner).runPairwise,
	},
	"heal": {run: func(r *runner, ctx context.Context, _ int, _ *Step) (string, error) { return "", r.t.Heal(ctx) }},
	"shape": {
		validate: func(v *stepValidator, st *Step) {
			if err := st.Shape.validate(); err != nil {
				v.bad("%v", err)
			}
		},
		run: (*runner).runShape,
	},
	"sleep": {
		validate: func(v *stepValidator, st *Step) {
			if st.Duration <= 0 {
				v.bad("duration is required")
			}
		},
		run: (*runner).runSleep,
	},
	"assert": {
		validate: validateCheck,
		run:      (*runner).runAssert,
	},
	"wait-until": {
		validate: func(v *stepValidator, st *Step) {
			validateCheck(v, st)
			if st.Deadline == 0 {
				st.Deadline = Duration(60 * time.Second)
			}
		},
		run: (*runner).runWaitUntil,
	},
}

// check is one condition an assert or wait-until step may test, in the
// shape of an action: the fields it needs, and how it is evaluated (nil
// error: it holds).
type check struct {
	validate func(v *stepValidator, st *Step)
	eval     func(r *runner, ctx context.Context, st *Step) (string, error)
}

// checks is every check by name.
var checks = map[string]check{
	"holds": {
		validate: func(v *stepValidator, st *Step) { v.ref("cid", st.CID) },
		eval:     (*runner).checkHolds,
	},
	"feed-seq": {
		validate: func(v *stepValidator, st *Step) {
			v.ref("feed", st.Feed)
			if st.Seq == 0 {
				v.bad("seq is required")
			}
		},
		eval: (*runner).checkFeedSeq,
	},
	"replicas": {
		validate: func(v *stepValidator, st *Step) {
			v.ref("collection", st.Collection)
			if st.Replication == 0 {
				v.bad("replication (R) is required")
			}
		},
		eval: (*runner).checkReplicas,
	},
	"peers": {eval: (*runner).checkPeers},
	"members": {
		validate: func(v *stepValidator, st *Step) { v.ref("collection", st.Collection) },
		eval:     (*runner).checkMembers,
	},
	"delivery": {
		validate: func(v *stepValidator, st *Step) {
			v.ref("feed", st.Feed)
			if st.Min == 0 {
				st.Min = 1
			}
		},
		eval: (*runner).checkDelivery,
	},
	"running": {eval: (*runner).checkRunning},
	"connection": {
		validate: func(v *stepValidator, st *Step) {
			if st.Via != "direct" && st.Via != "relayed" {
				v.bad("via %q: use direct or relayed", st.Via)
			}
		},
		eval: (*runner).checkConnection,
	},
	"reachability": {
		validate: func(v *stepValidator, st *Step) {
			if st.Reach != "public" && st.Reach != "private" && st.Reach != "unknown" {
				v.bad("reachability %q: use public, private or unknown", st.Reach)
			}
		},
		eval: (*runner).checkReachability,
	},
}

// validateCheck validates an assert or wait-until step: its check's name
// and the fields that check needs.
func validateCheck(v *stepValidator, st *Step) {
	c, ok := checks[st.Check]
	if !ok {
		v.bad("check %q: use holds, feed-seq, replicas, peers, members, delivery, running, connection or reachability", st.Check)
		return
	}
	if c.validate != nil {
		c.validate(v, st)
	}
}

// step carries out one step and returns a one-line detail.
func (r *runner) step(ctx context.Context, idx int, st *Step) (string, error) {
	a, ok := actions[st.Action]
	if !ok {
		return "", fmt.Errorf("unknown action %q", st.Action)
	}
	return a.run(r, ctx, idx, st)
}

// check evaluates an assert or wait-until condition; nil means it holds.
func (r *runner) check(ctx context.Context, st *Step) (string, error) {
	c, ok := checks[st.Check]
	if !ok {
		return "", fmt.Errorf("unknown check %q", st.Check)
	}
	return c.eval(r, ctx, st)
}

// ---------------------------------------------------------------- actions

// lifecycle is the run of start, stop, kill and restart: f on the
// selected nodes.
func lifecycle(f func(c cluster, ctx context.Context, names []string) error) func(*runner, context.Context, int, *Step) (string, error) {
	return func(r *runner, ctx context.Context, _ int, st *Step) (string, error) {
		ns, err := r.sc.Resolve(st.Nodes)
		if err != nil {
			return "", err
		}
		return strings.Join(ns, " "), f(r.t, ctx, ns)
	}
}

func (r *runner) runAdd(ctx context.Context, _ int, st *Step) (string, error) {
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
}

// runDHTLookup has count of the selected nodes (picked with the seed; 0:
// all) each run one measured DHT lookup: find-peer of another running
// node picked with the seed, or find-providers of the step's CID.
func (r *runner) runDHTLookup(ctx context.Context, idx int, st *Step) (string, error) {
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	all, err := r.selected(nil, true)
	if err != nil {
		return "", err
	}
	if len(ns) == 0 || (st.Lookup == "find-peer" && len(all) < 2) {
		return "", errors.New("not enough running nodes to look up from")
	}
	key := ""
	if st.Lookup == "find-providers" {
		if key, err = r.val(st.CID); err != nil {
			return "", err
		}
	}
	type job struct {
		from *NodeState
		key  string
	}
	var jobs []job
	r.mu.Lock()
	count := st.Count
	if count == 0 {
		count = len(ns)
	}
	for i := range count {
		from := ns[i%len(ns)]
		if count < len(ns) {
			from = ns[r.rng.IntN(len(ns))]
		}
		k := key
		if st.Lookup == "find-peer" {
			to := from
			for to == from {
				to = all[r.rng.IntN(len(all))]
			}
			k = to.PeerID
		}
		jobs = append(jobs, job{from, k})
	}
	r.mu.Unlock()
	results := make([]api.DHTLookup, len(jobs))
	froms := make([]*NodeState, len(jobs))
	for i, j := range jobs {
		froms[i] = j.from
	}
	// parallel calls fn once per element of froms; each call takes the
	// next job (a node may be in froms more than once).
	taken := 0
	var tmu sync.Mutex
	err = r.t.parallel(froms, 8, func(*NodeState) error {
		tmu.Lock()
		k := taken
		taken++
		tmu.Unlock()
		n := jobs[k].from
		res, err := r.t.Client(n).DHTLookup(ctx, st.Lookup, jobs[k].key)
		if err != nil {
			return fmt.Errorf("%s: %s %s: %w", n.Name, st.Lookup, short(jobs[k].key), err)
		}
		results[k] = res
		return nil
	})
	dr := newDHTReport(idx+1, st.Lookup, results)
	r.mu.Lock()
	r.rep.DHT = append(r.rep.DHT, dr)
	r.mu.Unlock()
	return fmt.Sprintf("%d %s lookups: %d found, hops p50 %.0f max %.0f, time p50 %.0fms", dr.Lookups, st.Lookup, dr.Found, dr.Hops.P50, dr.Hops.Max, dr.TimeMS.P50), err
}

func (r *runner) runFetch(ctx context.Context, _ int, st *Step) (string, error) {
	t := r.t
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
		ctx, traceID := newRootContext(ctx) // each fetch is a trace of its own
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
		took := time.Since(began).Seconds()
		mu.Lock()
		times = append(times, took)
		mu.Unlock()
		r.mu.Lock()
		r.fetchTraces = append(r.fetchTraces, fetchTrace{id: traceID, node: n.Name, seconds: took})
		r.mu.Unlock()
		return nil
	})
	r.mu.Lock()
	r.rep.fetchTimes = append(r.rep.fetchTimes, times...)
	r.mu.Unlock()
	return fmt.Sprintf("%d nodes fetched %s (median %.3fs)", len(times), short(c), percentile(times, 50)), err
}

func (r *runner) runFollow(ctx context.Context, _ int, st *Step) (string, error) {
	t := r.t
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
		if _, err := t.Client(n).FeedFollow(ctx, feedName, api.FollowRequest{Pin: pin, NoWait: true}); err != nil {
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
}

func (r *runner) runPublish(ctx context.Context, _ int, st *Step) (string, error) {
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
		rec, err := r.t.Client(n).FeedPublish(ctx, st.Key, c)
		if err != nil && rec.Seq == 0 {
			return "", fmt.Errorf("publish version %d: %w", k+1, err)
		}
		if !rec.Published.IsZero() {
			began = rec.Published // the daemon's own start: the API call is not the swarm's
		}
		r.mu.Lock()
		tr.Published[rec.Seq] = began
		r.mu.Unlock()
		last = rec
	}
	return fmt.Sprintf("%s published %d versions of %s (last seq %d)", n.Name, st.Count, short(feedName), last.Seq), nil
}

func (r *runner) runCollectionCreate(ctx context.Context, _ int, st *Step) (string, error) {
	n, err := r.node(st.Node)
	if err != nil {
		return "", err
	}
	name := st.Name
	if name == "" {
		name = st.As
	}
	s, err := r.t.Client(n).CollectionCreate(ctx, name, st.Replication)
	if err != nil {
		return "", fmt.Errorf("%s: collection create: %w", n.Name, err)
	}
	r.set(st.As, s.ID)
	return fmt.Sprintf("%s created %s (R=%d)", n.Name, short(s.ID), s.Replication), nil
}

func (r *runner) runCollectionJoin(ctx context.Context, _ int, st *Step) (string, error) {
	id, err := r.val(st.Collection)
	if err != nil {
		return "", err
	}
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	err = r.t.parallel(ns, 8, func(n *NodeState) error {
		if _, err := r.t.Client(n).CollectionJoin(ctx, id, ""); err != nil {
			return fmt.Errorf("%s: collection join: %w", n.Name, err)
		}
		return nil
	})
	return fmt.Sprintf("%d nodes joined %s", len(ns), short(id)), err
}

func (r *runner) runCollectionAdd(ctx context.Context, _ int, st *Step) (string, error) {
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
	// The items are added unpinned: the node holds them only if the
	// collection allocates them to it, so every copy the replicas check
	// counts is a holder's, not the adder's own pin.
	for k := 0; k < st.Count; k++ {
		c, err := r.addUnpinned(ctx, n, r.content(sizeOf(st.Size, "4KiB"), st.Text))
		if err != nil {
			return "", fmt.Errorf("add item %d: %w", k+1, err)
		}
		cids = append(cids, c)
	}
	if _, err := r.t.Client(n).CollectionAdd(ctx, id, cids, st.Replication, st.Name); err != nil {
		return "", fmt.Errorf("%s: collection add: %w", n.Name, err)
	}
	r.set(st.As, strings.Join(cids, ","))
	return fmt.Sprintf("%s added %d items to %s", n.Name, len(cids), short(id)), nil
}

func (r *runner) runPartition(ctx context.Context, _ int, st *Step) (string, error) {
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
	return strings.Join(parts, " | "), r.t.Partition(ctx, groups)
}

func (r *runner) runShape(ctx context.Context, _ int, st *Step) (string, error) {
	ns, err := r.sc.Resolve(st.Nodes)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d nodes: %s", len(ns), st.Shape), r.t.Shape(ctx, ns, st.Shape)
}

func (r *runner) runSleep(ctx context.Context, _ int, st *Step) (string, error) {
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(st.Duration.D()):
	}
	return st.Duration.String(), nil
}

func (r *runner) runAssert(ctx context.Context, idx int, st *Step) (string, error) {
	detail, err := r.check(ctx, st)
	if err != nil {
		return detail, &AssertionError{Step: idx, Name: checkName(st), Cause: err}
	}
	return detail, nil
}

// runWaitUntil polls the step's check until it holds or its deadline
// passes, and records how long that took.
func (r *runner) runWaitUntil(ctx context.Context, idx int, st *Step) (string, error) {
	began := time.Now()
	deadline := began.Add(st.Deadline.D())
	poll := 250 * time.Millisecond
	if len(r.t.state().Nodes) > 20 {
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

// ---------------------------------------------------------------- checks

func (r *runner) checkRunning(_ context.Context, st *Step) (string, error) {
	ns, err := r.selected(st.Nodes, false)
	if err != nil {
		return "", err
	}
	var bad []string
	for _, n := range ns {
		if r.t.isUp(n) == st.Negate {
			bad = append(bad, n.Name)
		}
	}
	detail := fmt.Sprintf("%d nodes", len(ns))
	if len(bad) > 0 {
		state := "not running"
		if st.Negate {
			state = "running"
		}
		return detail, fmt.Errorf("%s %s", summariseNames(bad), state)
	}
	return detail, nil
}

func (r *runner) checkDelivery(ctx context.Context, st *Step) (string, error) {
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
	detail := fmt.Sprintf("%d/%d deliveries (%.1f%%)", d.Delivered, d.Expected, 100*d.Ratio)
	if d.Ratio+1e-9 < st.Min {
		return detail, fmt.Errorf("delivery ratio %.4f is below %.4f (%d of %d follower-updates)", d.Ratio, st.Min, d.Delivered, d.Expected)
	}
	return detail, nil
}

// running returns the running nodes a check step selects, and an error if
// there are none.
func (r *runner) running(st *Step) ([]*NodeState, error) {
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return nil, err
	}
	if len(ns) == 0 {
		return nil, errors.New("no running node among those selected")
	}
	return ns, nil
}

// onNodes asks each of ns, in parallel, whether the check holds there
// (f returns nil) and sums up the nodes where it does not.
func (r *runner) onNodes(ns []*NodeState, f func(n *NodeState, c *api.Client) error) (string, error) {
	var mu sync.Mutex
	var failed []string
	var firstErr error
	_ = r.t.parallel(ns, 8, func(n *NodeState) error {
		if err := f(n, r.t.Client(n)); err != nil {
			mu.Lock()
			failed = append(failed, n.Name)
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", n.Name, err)
			}
			mu.Unlock()
		}
		return nil
	})
	detail := fmt.Sprintf("%d nodes", len(ns))
	switch {
	case len(failed) > 1:
		return detail, fmt.Errorf("%d nodes fail (%s); %w", len(failed), summariseNames(sorted(failed)), firstErr)
	case len(failed) == 1:
		return detail, firstErr
	}
	return detail, nil
}

// atLeast writes the bound a peers, feed-seq or members check wants.
func atLeast(negate bool) string { return map[bool]string{false: "≥", true: "<"}[negate] }

func (r *runner) checkHolds(ctx context.Context, st *Step) (string, error) {
	ns, err := r.running(st)
	if err != nil {
		return "", err
	}
	c, err := r.val(st.CID)
	if err != nil {
		return "", err
	}
	cids := strings.Split(c, ",")
	return r.onNodes(ns, func(n *NodeState, c *api.Client) error {
		pins, err := c.PinLs(ctx)
		if err != nil {
			return err
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
			return fmt.Errorf("holds %d of %d (missing e.g. %s)", present, len(cids), short(firstMissing(cids, held)))
		case st.Negate && present > 0:
			return fmt.Errorf("holds %d of %d it should not", present, len(cids))
		}
		return nil
	})
}

func (r *runner) checkPeers(ctx context.Context, st *Step) (string, error) {
	ns, err := r.running(st)
	if err != nil {
		return "", err
	}
	return r.onNodes(ns, func(n *NodeState, c *api.Client) error {
		ps, err := c.Peers(ctx)
		if err != nil {
			return err
		}
		if (float64(len(ps)) >= st.Min) == st.Negate {
			return fmt.Errorf("%d peers (want %s%g)", len(ps), atLeast(st.Negate), st.Min)
		}
		return nil
	})
}

func (r *runner) checkFeedSeq(ctx context.Context, st *Step) (string, error) {
	ns, err := r.running(st)
	if err != nil {
		return "", err
	}
	feedName, err := r.val(st.Feed)
	if err != nil {
		return "", err
	}
	return r.onNodes(ns, func(n *NodeState, _ *api.Client) error {
		seq, err := r.heldSeq(ctx, n, feedName)
		if err != nil {
			return err
		}
		if (seq >= st.Seq) == st.Negate {
			return fmt.Errorf("at sequence %d (want %s%d)", seq, atLeast(st.Negate), st.Seq)
		}
		return nil
	})
}

func (r *runner) checkMembers(ctx context.Context, st *Step) (string, error) {
	ns, err := r.running(st)
	if err != nil {
		return "", err
	}
	coll, err := r.val(st.Collection)
	if err != nil {
		return "", err
	}
	// The summary, not the status: a status lists every member and item,
	// and at a thousand members the check's polls of every node cost more
	// than the swarm they watched.
	return r.onNodes(ns, func(n *NodeState, c *api.Client) error {
		list, err := c.CollectionList(ctx)
		if err != nil {
			return err
		}
		var s *api.CollectionSummary
		for i := range list {
			if list[i].ID == coll || list[i].Name == coll {
				s = &list[i]
				break
			}
		}
		if s == nil {
			return fmt.Errorf("not a member of %s", coll)
		}
		if (float64(s.MembersAlive) >= st.Min) == st.Negate {
			return fmt.Errorf("%d members alive (want ≥%g)", s.MembersAlive, st.Min)
		}
		return nil
	})
}

// checkReplicas counts each item's copies: without node, in the pin lists
// of every running node (pinnedReplicas); with node, among the live
// holders that node's collection status reports.
func (r *runner) checkReplicas(ctx context.Context, st *Step) (string, error) {
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	if st.Node != "" {
		n, err := r.node(st.Node)
		if err != nil {
			return "", err
		}
		ns = []*NodeState{n}
	}
	if len(ns) == 0 {
		return "", errors.New("no running node among those selected")
	}
	coll, err := r.val(st.Collection)
	if err != nil {
		return "", err
	}
	if st.Node == "" {
		return r.pinnedReplicas(ctx, st, coll, ns)
	}
	items := -1
	detail, err := r.onNodes(ns, func(n *NodeState, c *api.Client) error {
		s, err := c.CollectionStatus(ctx, coll)
		if err != nil {
			return err
		}
		items = len(s.ItemList)
		live := map[string]bool{}
		for _, m := range r.t.state().Nodes {
			if r.t.isUp(m) {
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
		switch {
		case len(s.ItemList) == 0:
			return errors.New("the collection lists no items")
		case (len(under) == 0) == st.Negate && st.Negate:
			return fmt.Errorf("every item has %d live holders", st.Replication)
		case (len(under) == 0) == st.Negate:
			return fmt.Errorf("%d of %d items under %d live holders (%s)", len(under), len(s.ItemList), st.Replication, strings.Join(under[:min(3, len(under))], ", "))
		}
		return nil
	})
	if items >= 0 {
		detail = fmt.Sprintf("%d items", items)
	}
	return detail, err
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

// runAttack runs `weft adversary` in the attacking node's namespace
// against the victims' swarm addresses, and waits until it is done. The
// attacker is a peer of its own (its own key and port), beside the node's
// daemon, which takes no part.
func (r *runner) runAttack(ctx context.Context, _ int, st *Step) (string, error) {
	n, err := r.node(st.Node)
	if err != nil {
		return "", err
	}
	victims, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	// The attacker is this binary (the one running the scenario), which
	// may differ from the daemons' (--bin): old daemons can be attacked.
	self, err := os.Executable()
	if err != nil {
		self = "weft"
	}
	args := []string{self, "adversary", st.Attack}
	if n.IP != "" {
		args = append(args, "--listen", "/ip4/"+n.IP+"/tcp/0")
	}
	if key := filepath.Join(n.Repo, node.SwarmKeyFile); fileExists(key) {
		args = append(args, "--swarm-key", key)
	}
	for _, v := range victims {
		if v == n {
			continue
		}
		addr := v.Swarm
		if !strings.Contains(addr, "/p2p/") {
			addr += "/p2p/" + v.PeerID
		}
		args = append(args, "--connect", addr)
	}
	val := func(s string) (string, error) { return r.val(s) }
	var coll string
	switch st.Attack {
	case "junk-heads", "heads-requests":
		c, err := val(st.Collection)
		if err != nil {
			return "", err
		}
		coll = c
		args = append(args, "--collection", c)
		if st.Heads > 0 {
			args = append(args, "--heads", strconv.Itoa(st.Heads))
		}
		if st.Member {
			args = append(args, "--member")
		}
	case "feed-records":
		f, err := val(st.Feed)
		if err != nil {
			return "", err
		}
		args = append(args, "--feed", f)
	case "slow-exchange":
		c, err := val(st.CID)
		if err != nil {
			return "", err
		}
		args = append(args, "--cid", strings.Split(c, ",")[0], "--duration", st.Duration.String())
	}
	if st.Count > 0 {
		args = append(args, "--count", strconv.Itoa(st.Count))
	}
	if st.Rate > 0 {
		args = append(args, "--rate", strconv.FormatFloat(st.Rate, 'f', -1, 64))
	}
	cmd, err := r.t.Command(n.Name, args)
	if err != nil {
		return "", err
	}
	var before []api.CollectionStats
	if coll != "" {
		before = r.collectionStats(ctx, victims, coll)
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := runCmd(ctx, cmd); err != nil {
		return "", fmt.Errorf("%s: weft adversary %s: %w: %s", n.Name, st.Attack, err, strings.TrimSpace(errOut.String()))
	}
	detail := fmt.Sprintf("%s attacked %d nodes: %s", n.Name, len(victims), strings.TrimSpace(out.String()))
	if coll != "" {
		// What it cost the members: answers they published, and what
		// they refused, during the attack (largest over the members).
		after := r.collectionStats(ctx, victims, coll)
		var ans, nm, ob, rl, total uint64
		for i := range after {
			d := func(f func(api.CollectionStats) uint64) uint64 { return f(after[i]) - f(before[i]) }
			a := d(func(s api.CollectionStats) uint64 { return s.Answers })
			ans, total = max(ans, a), total+a
			nm = max(nm, d(func(s api.CollectionStats) uint64 { return s.NotMember }))
			ob = max(ob, d(func(s api.CollectionStats) uint64 { return s.OverBudget }))
			rl = max(rl, d(func(s api.CollectionStats) uint64 { return s.RateLimited }))
		}
		detail += fmt.Sprintf("; per member at most: %d answers (%d in all), %d refused as not a member, %d claims over budget, %d requests rate-limited",
			ans, total, nm, ob, rl)
	}
	return detail, nil
}

// collectionStats reads each node's counters for the collection (zero for
// a node that does not answer).
func (r *runner) collectionStats(ctx context.Context, nodes []*NodeState, coll string) []api.CollectionStats {
	out := make([]api.CollectionStats, len(nodes))
	for i, n := range nodes {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := r.t.Client(n).CollectionStatus(cctx, coll)
		cancel()
		if err == nil {
			out[i] = st.Stats
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runCmd runs cmd to its end, killing it (and waiting for it) if ctx ends
// first.
func runCmd(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}
