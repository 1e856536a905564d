package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/feed"
)

// NAT steps and checks (their entries are in actions.go's tables):
// connect makes every pair of the selected nodes connect, the later one
// dialing the earlier at the address the earlier one gives (its relay
// address when it holds a reservation, else its public one), and records
// how long the pair took to turn direct; pairwise adds a file on every
// selected node and has every other fetch it, and has every node follow
// every other's feed and see one update; the connection check asserts each
// pair ends direct or relayed; the reachability check asserts AutoNAT's
// verdict and records when each node first had it.

// NATReport is the NAT part of a report.
type NATReport struct {
	Nodes    []NATNodeReport `json:"nodes"`
	Pairs    []NATPair       `json:"pairs,omitempty"`    // connect steps, one entry per pair
	Exchange []PairExchange  `json:"exchange,omitempty"` // pairwise steps, one entry per ordered pair
	Kinds    []NATKindStats  `json:"kinds,omitempty"`    // per NAT-pair kind
}

// NATNodeReport is a node's place and AutoNAT verdict.
type NATNodeReport struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`    // NAT kind, or "public"
	Address string `json:"address"` // its router's address on the internet, or its own
	// Reachability is the verdict a reachability check wanted and saw,
	// VerdictSeconds when it first saw it (since the run began, start-up
	// included); empty when no check asked.
	Reachability   string  `json:"reachability,omitempty"`
	VerdictSeconds float64 `json:"verdict_seconds,omitempty"`
}

// NATPair is one pair a connect step connected: Dialer dialed Target.
type NATPair struct {
	Target    string  `json:"target"`
	Dialer    string  `json:"dialer"`
	Kinds     string  `json:"kinds"`           // "kind-a × kind-b", sorted
	Via       string  `json:"via"`             // what the dialer dialed: relay or direct
	Direct    bool    `json:"direct"`          // a direct connection within the deadline
	Seconds   float64 `json:"seconds"`         // from the first contact to the direct connection
	Transport string  `json:"transport"`       // of the connection at the end
	Relayed   bool    `json:"relayed"`         // a relayed connection still open at the end
	Error     string  `json:"error,omitempty"` // the pair never connected
}

// PairExchange is one ordered pair of a pairwise step: To fetched From's
// file and saw From's feed update.
type PairExchange struct {
	From         string  `json:"from"`
	To           string  `json:"to"`
	Kinds        string  `json:"kinds"`
	Fetched      bool    `json:"fetched"`
	FetchSeconds float64 `json:"fetch_seconds"`
	FeedArrived  bool    `json:"feed_arrived"`
	FeedSeconds  float64 `json:"feed_seconds"`
	Error        string  `json:"error,omitempty"`
}

// NATKindStats sums up the pairs of one NAT-pair kind.
type NATKindStats struct {
	Kinds          string  `json:"kinds"`
	Pairs          int     `json:"pairs"`
	Direct         int     `json:"direct"`
	RelayedOnly    int     `json:"relayed_only"`
	Failed         int     `json:"failed"`
	DirectP50      float64 `json:"direct_p50_seconds"`
	DirectMax      float64 `json:"direct_max_seconds"`
	Exchanges      int     `json:"exchanges"`
	Fetched        int     `json:"fetched"`
	FeedsArrived   int     `json:"feeds_arrived"`
	FetchP50       float64 `json:"fetch_p50_seconds"`
	FeedP50        float64 `json:"feed_p50_seconds"`
	Transports     string  `json:"transports,omitempty"` // of the direct connections
	directSeconds  []float64
	fetchSeconds   []float64
	feedSeconds    []float64
	transportCount map[string]int
}

// natTrack is what the NAT steps gathered, under runner.mu.
type natTrack struct {
	pairs    []NATPair
	exchange []PairExchange
	verdicts map[string]verdict
}

type verdict struct {
	want string
	at   float64
}

func kindOf(n *NodeState) string {
	if n.NAT == "" {
		return "public"
	}
	return n.NAT
}

func pairKinds(a, b *NodeState) string {
	k := []string{kindOf(a), kindOf(b)}
	order := func(s string) int {
		if s == "public" {
			return -1
		}
		return slices.Index(NATKinds, NATKind(s))
	}
	sort.Slice(k, func(i, j int) bool { return order(k[i]) < order(k[j]) })
	return k[0] + " × " + k[1]
}

// pairsOf returns the unordered pairs of a step: every node of nodes with
// every node of peers (default: nodes), each pair once, as (earlier,
// later) in testnet order.
func (r *runner) pairsOf(st *Step) ([][2]*NodeState, error) {
	as, err := r.selected(st.Nodes, true)
	if err != nil {
		return nil, err
	}
	bs := as
	if len(st.Peers) > 0 {
		if bs, err = r.selected(st.Peers, true); err != nil {
			return nil, err
		}
	}
	seen := map[[2]string]bool{}
	var out [][2]*NodeState
	for _, a := range as {
		for _, b := range bs {
			if a == b {
				continue
			}
			x, y := a, b
			if nodeIndex(r.t.state(), y) < nodeIndex(r.t.state(), x) {
				x, y = y, x
			}
			k := [2]string{x.Name, y.Name}
			if !seen[k] {
				seen[k] = true
				out = append(out, [2]*NodeState{x, y})
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no pair of running nodes selected")
	}
	sort.Slice(out, func(i, j int) bool {
		if a, b := nodeIndex(r.t.state(), out[i][0]), nodeIndex(r.t.state(), out[j][0]); a != b {
			return a < b
		}
		return nodeIndex(r.t.state(), out[i][1]) < nodeIndex(r.t.state(), out[j][1])
	})
	return out, nil
}

// contactAddr returns the address a dialer should use to reach n first:
// once n has a verdict, a relay address if n is private (polling until it
// holds a reservation), or a TCP address of n on the internet (its own, or
// its mapping on its router) if public.
func (r *runner) contactAddr(ctx context.Context, n *NodeState) (addr, via string, err error) {
	public := n.IP
	if n.PublicIP != "" {
		public = n.PublicIP
	}
	for {
		st, err := r.t.Client(n).Status(ctx)
		withID := func(a string) string {
			if !strings.HasSuffix(a, "/p2p/"+n.PeerID) {
				a += "/p2p/" + n.PeerID
			}
			return a
		}
		switch {
		case err != nil:
		case st.NAT.Reachability == "private":
			// Reached through its relays; wait for a reservation.
			for _, a := range st.NAT.RelayAddrs {
				if strings.Contains(a, "/tcp/") {
					return withID(a), "relay", nil
				}
			}
			if len(st.NAT.RelayAddrs) > 0 {
				return withID(st.NAT.RelayAddrs[0]), "relay", nil
			}
		case st.NAT.Reachability == "public":
			for _, a := range st.Addrs {
				if strings.HasPrefix(a, "/ip4/"+public+"/tcp/") {
					return withID(a), "direct", nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("%s has neither a relay address (private) nor one on %s (public): %w", n.Name, public, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// peerEntry returns a's view of its connection to b.
func (r *runner) peerEntry(ctx context.Context, a, b *NodeState) (api.Peer, bool, error) {
	ps, err := r.t.Client(a).Peers(ctx)
	if err != nil {
		return api.Peer{}, false, err
	}
	i := slices.IndexFunc(ps, func(p api.Peer) bool { return p.ID == b.PeerID })
	if i < 0 {
		return api.Peer{}, false, nil
	}
	return ps[i], true, nil
}

func (r *runner) runConnect(ctx context.Context, _ int, st *Step) (string, error) {
	pairs, err := r.pairsOf(st)
	if err != nil {
		return "", err
	}
	results := make([]NATPair, len(pairs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, p := range pairs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = r.connectPair(ctx, p[0], p[1], st.Deadline.D())
		})
	}
	wg.Wait()
	r.mu.Lock()
	r.nat.pairs = append(r.nat.pairs, results...)
	r.mu.Unlock()
	direct, relayed, failed := 0, 0, 0
	var errs []error
	for _, p := range results {
		switch {
		case p.Error != "":
			failed++
			errs = append(errs, fmt.Errorf("%s and %s: %s", p.Dialer, p.Target, p.Error))
		case p.Direct:
			direct++
		default:
			relayed++
		}
	}
	detail := fmt.Sprintf("%d pairs: %d direct, %d relayed only, %d not connected", len(results), direct, relayed, failed)
	return detail, errors.Join(errs...)
}

// connectPair has b dial a at a's contact address and waits until b holds
// a direct connection to a, or deadline passes.
func (r *runner) connectPair(ctx context.Context, a, b *NodeState, deadline time.Duration) NATPair {
	p := NATPair{Target: a.Name, Dialer: b.Name, Kinds: pairKinds(a, b)}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	addr, via, err := r.contactAddr(cctx, a)
	cancel()
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Via = via
	began := time.Now()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = r.t.Client(b).Connect(cctx, addr)
		cancel()
		if err == nil || attempt == 2 || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		p.Error = fmt.Sprintf("dial %s: %v", addr, err)
		return p
	}
	end := began.Add(deadline)
	var last api.Peer
	for {
		e, ok, err := r.peerEntry(ctx, b, a)
		if err == nil && ok {
			last = e
			if e.Direct {
				p.Direct = true
				p.Seconds = time.Since(began).Seconds()
				break
			}
		}
		if time.Now().After(end) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !p.Direct {
		p.Seconds = time.Since(began).Seconds()
	}
	p.Transport, p.Relayed = last.Transport, last.Relayed
	if last.ID == "" {
		p.Error = "connected, then the connection was gone"
	}
	return p
}

// checkConnection: for every pair, the later node's connection to the
// earlier one is direct (via = "direct") or relayed only.
func (r *runner) checkConnection(ctx context.Context, st *Step) (string, error) {
	pairs, err := r.pairsOf(st)
	if err != nil {
		return "", err
	}
	var bad []string
	for _, p := range pairs {
		e, ok, err := r.peerEntry(ctx, p[1], p[0])
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", p[1].Name, err))
		case !ok:
			bad = append(bad, fmt.Sprintf("%s–%s not connected", p[1].Name, p[0].Name))
		case st.Via == "direct" && !e.Direct:
			bad = append(bad, fmt.Sprintf("%s–%s relayed only", p[1].Name, p[0].Name))
		case st.Via == "relayed" && (e.Direct || !e.Relayed):
			bad = append(bad, fmt.Sprintf("%s–%s direct=%v relayed=%v", p[1].Name, p[0].Name, e.Direct, e.Relayed))
		}
	}
	detail := fmt.Sprintf("%d pairs %s", len(pairs), st.Via)
	if (len(bad) > 0) != st.Negate {
		if st.Negate {
			return detail, fmt.Errorf("every pair is %s", st.Via)
		}
		return detail, fmt.Errorf("%d of %d pairs: %s", len(bad), len(pairs), strings.Join(bad[:min(4, len(bad))], "; "))
	}
	return detail, nil
}

// checkReachability: every selected node's AutoNAT verdict is the one
// wanted; the first time each node had it is recorded.
func (r *runner) checkReachability(ctx context.Context, st *Step) (string, error) {
	ns, err := r.running(st)
	if err != nil {
		return "", err
	}
	return r.onNodes(ns, func(n *NodeState, c *api.Client) error {
		s, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if (s.NAT.Reachability == st.Reach) == st.Negate {
			return fmt.Errorf("reachability %s (want %s)", s.NAT.Reachability, st.Reach)
		}
		r.mu.Lock()
		if v, ok := r.nat.verdicts[n.Name]; !ok || v.want != st.Reach {
			if r.nat.verdicts == nil {
				r.nat.verdicts = map[string]verdict{}
			}
			r.nat.verdicts[n.Name] = verdict{want: st.Reach, at: time.Since(r.rep.started).Seconds()}
		}
		r.mu.Unlock()
		return nil
	})
}

// runPairwise: every selected node adds a file and every other fetches
// it; every node follows every other's feed (key), each publishes one
// update, and every follower must see it within the deadline.
func (r *runner) runPairwise(ctx context.Context, _ int, st *Step) (string, error) {
	ns, err := r.selected(st.Nodes, true)
	if err != nil {
		return "", err
	}
	if len(ns) < 2 {
		return "", errors.New("pairwise needs two running nodes or more")
	}
	size := sizeOf(st.Size, "64KiB")
	key := st.Key
	if key == "" {
		key = "pairwise"
	}
	type ordered struct{ from, to *NodeState }
	var pairs []ordered
	for _, a := range ns {
		for _, b := range ns {
			if a != b {
				pairs = append(pairs, ordered{a, b})
			}
		}
	}
	results := make([]PairExchange, len(pairs))
	for i, p := range pairs {
		results[i] = PairExchange{From: p.from.Name, To: p.to.Name, Kinds: pairKinds(p.from, p.to)}
	}
	// Files.
	cids := map[string]string{}
	var mu sync.Mutex
	if err := r.t.parallel(ns, 4, func(n *NodeState) error {
		c, err := r.add(ctx, n, r.content(size, ""))
		if err != nil {
			return fmt.Errorf("add on %s: %w", n.Name, err)
		}
		mu.Lock()
		cids[n.Name] = c
		mu.Unlock()
		return nil
	}); err != nil {
		return "", err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i, p := range pairs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			began := time.Now()
			fctx, cancel := context.WithTimeout(ctx, st.Deadline.D())
			defer cancel()
			rc, err := r.t.Client(p.to).Cat(fctx, cids[p.from.Name], 0, -1)
			var n int64
			if err == nil {
				n, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			if err == nil && n != size {
				err = fmt.Errorf("got %d bytes of %d", n, size)
			}
			if err != nil {
				results[i].Error = "fetch: " + err.Error()
				return
			}
			results[i].Fetched, results[i].FetchSeconds = true, time.Since(began).Seconds()
		})
	}
	wg.Wait()
	// Feeds: everyone follows everyone, then everyone publishes once.
	feeds := map[string]string{}
	for _, n := range ns {
		f, err := r.feedOf(ctx, n, key)
		if err != nil {
			return "", err
		}
		feeds[n.Name] = f
		tr := r.track(f)
		r.mu.Lock()
		tr.Publisher = n.Name
		r.mu.Unlock()
	}
	if err := r.t.parallel(ns, 4, func(n *NodeState) error {
		for _, m := range ns {
			if m == n {
				continue
			}
			if _, err := r.t.Client(n).FeedFollow(ctx, feeds[m.Name], api.FollowRequest{}); err != nil {
				return fmt.Errorf("%s: follow %s's feed: %w", n.Name, m.Name, err)
			}
			tr := r.track(feeds[m.Name])
			r.mu.Lock()
			tr.Followers = append(tr.Followers, n.Name)
			r.mu.Unlock()
			r.watch(tr, n)
		}
		return nil
	}); err != nil {
		return "", err
	}
	// Every follower has a topic peer on every feed it follows (or the
	// publisher knows it subscribed) before the updates go out: a follower
	// whose subscription no peer knows yet would miss the gossip (the
	// feed's catch-up is not what is measured here).
	meshed := func(n *NodeState) error {
		end := time.Now().Add(st.Deadline.D())
		for _, m := range ns {
			if m == n {
				continue
			}
			topic := feed.TopicPrefix + feeds[m.Name]
			for {
				// A topic peer of its own, or the publisher (not subscribed
				// to its own topic) sees it there.
				ps, err := r.t.Client(n).PubsubPeers(ctx, topic)
				if err == nil && len(ps) > 0 {
					break
				}
				if pub, perr := r.t.Client(m).PubsubPeers(ctx, topic); perr == nil && slices.Contains(pub, n.PeerID) {
					break
				}
				if time.Now().After(end) || ctx.Err() != nil {
					return fmt.Errorf("%s has no peer on %s's feed topic after %s (%v)", n.Name, m.Name, st.Deadline, err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		return nil
	}
	if err := r.t.parallel(ns, 4, meshed); err != nil {
		return "", err
	}
	published := map[string]time.Time{}
	var seqs sync.Map
	if err := r.t.parallel(ns, 4, func(n *NodeState) error {
		c, err := r.add(ctx, n, r.content(1024, ""))
		if err != nil {
			return err
		}
		began := time.Now()
		rec, err := r.t.Client(n).FeedPublish(ctx, key, c)
		if err != nil && rec.Seq == 0 {
			return fmt.Errorf("%s: publish: %w", n.Name, err)
		}
		if !rec.Published.IsZero() {
			began = rec.Published // the daemon's own start
		}
		tr := r.track(feeds[n.Name])
		r.mu.Lock()
		tr.Published[rec.Seq] = began
		published[n.Name] = began
		r.mu.Unlock()
		seqs.Store(n.Name, rec.Seq)
		return nil
	}); err != nil {
		return "", err
	}
	for i, p := range pairs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			v, _ := seqs.Load(p.from.Name)
			want := v.(uint64)
			r.mu.Lock()
			began := published[p.from.Name]
			r.mu.Unlock()
			end := began.Add(st.Deadline.D())
			for {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				seq, err := r.heldSeq(cctx, p.to, feeds[p.from.Name])
				cancel()
				if err == nil && seq >= want {
					results[i].FeedArrived, results[i].FeedSeconds = true, time.Since(began).Seconds()
					return
				}
				if time.Now().After(end) || ctx.Err() != nil {
					e := fmt.Sprintf("feed update %d not there within %s (at %d, %v)", want, st.Deadline, seq, err)
					if results[i].Error != "" {
						e = results[i].Error + "; " + e
					}
					results[i].Error = e
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	r.mu.Lock()
	r.nat.exchange = append(r.nat.exchange, results...)
	r.mu.Unlock()
	fetched, arrived := 0, 0
	var errs []error
	for _, x := range results {
		if x.Fetched {
			fetched++
		}
		if x.FeedArrived {
			arrived++
		}
		if x.Error != "" {
			errs = append(errs, fmt.Errorf("%s → %s (%s): %s", x.From, x.To, x.Kinds, x.Error))
		}
	}
	detail := fmt.Sprintf("%d ordered pairs: %d files fetched, %d feed updates arrived", len(results), fetched, arrived)
	if len(errs) > 4 {
		errs = append(errs[:4], fmt.Errorf("and %d more", len(errs)-4))
	}
	return detail, errors.Join(errs...)
}

// natReport assembles the NAT section from what the steps gathered.
func (r *runner) natReport() *NATReport {
	if r.t == nil || !r.t.state().Internet {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &NATReport{Pairs: r.nat.pairs, Exchange: r.nat.exchange}
	for _, n := range r.t.state().Nodes {
		nr := NATNodeReport{Name: n.Name, Kind: kindOf(n), Address: n.IP}
		if n.PublicIP != "" {
			nr.Address = n.PublicIP
		}
		if v, ok := r.nat.verdicts[n.Name]; ok {
			nr.Reachability, nr.VerdictSeconds = v.want, v.at
		}
		rep.Nodes = append(rep.Nodes, nr)
	}
	byKind := map[string]*NATKindStats{}
	get := func(k string) *NATKindStats {
		if s := byKind[k]; s != nil {
			return s
		}
		s := &NATKindStats{Kinds: k, transportCount: map[string]int{}}
		byKind[k] = s
		return s
	}
	for _, p := range rep.Pairs {
		s := get(p.Kinds)
		s.Pairs++
		switch {
		case p.Error != "":
			s.Failed++
		case p.Direct:
			s.Direct++
			s.directSeconds = append(s.directSeconds, p.Seconds)
			s.transportCount[p.Transport]++
		default:
			s.RelayedOnly++
		}
	}
	for _, x := range rep.Exchange {
		s := get(x.Kinds)
		s.Exchanges++
		if x.Fetched {
			s.Fetched++
			s.fetchSeconds = append(s.fetchSeconds, x.FetchSeconds)
		}
		if x.FeedArrived {
			s.FeedsArrived++
			s.feedSeconds = append(s.feedSeconds, x.FeedSeconds)
		}
	}
	for _, s := range byKind {
		s.DirectP50, s.DirectMax = percentile(s.directSeconds, 50), statsOf(s.directSeconds).Max
		s.FetchP50, s.FeedP50 = percentile(s.fetchSeconds, 50), percentile(s.feedSeconds, 50)
		var ts []string
		for t, c := range s.transportCount {
			ts = append(ts, fmt.Sprintf("%s %d", t, c))
		}
		sort.Strings(ts)
		s.Transports = strings.Join(ts, ", ")
		rep.Kinds = append(rep.Kinds, *s)
	}
	order := func(k string) int {
		a, b, _ := strings.Cut(k, " × ")
		idx := func(s string) int {
			if s == "public" {
				return -1
			}
			return slices.Index(NATKinds, NATKind(s))
		}
		return (idx(a)+1)*10 + idx(b) + 1
	}
	sort.Slice(rep.Kinds, func(i, j int) bool { return order(rep.Kinds[i].Kinds) < order(rep.Kinds[j].Kinds) })
	return rep
}

// summary writes the NAT section of summary.txt.
func (n *NATReport) summary(b *strings.Builder) {
	b.WriteString("\nNAT: nodes and AutoNAT verdicts (seconds since the run began, start-up included)\n")
	for _, x := range n.Nodes {
		v := "-"
		if x.Reachability != "" {
			v = fmt.Sprintf("%s at %.1fs", x.Reachability, x.VerdictSeconds)
		}
		fmt.Fprintf(b, "  %-10s %-19s %-15s %s\n", x.Name, x.Kind, x.Address, v)
	}
	if len(n.Kinds) == 0 {
		return
	}
	b.WriteString("\nNAT pairs by kind (connect: first contact to a direct connection; pairwise: fetch and feed update each way)\n")
	fmt.Fprintf(b, "  %-40s %5s %6s %7s %6s %8s %8s  %-14s %9s %9s\n", "kinds", "pairs", "direct", "relayed", "failed", "p50(s)", "max(s)", "transports", "fetched", "feeds")
	for _, k := range n.Kinds {
		fmt.Fprintf(b, "  %-40s %5d %6d %7d %6d %8.2f %8.2f  %-14s %4d/%-4d %4d/%-4d\n", k.Kinds, k.Pairs, k.Direct, k.RelayedOnly, k.Failed,
			k.DirectP50, k.DirectMax, k.Transports, k.Fetched, k.Exchanges, k.FeedsArrived, k.Exchanges)
	}
}
