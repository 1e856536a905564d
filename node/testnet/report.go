package testnet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
)

// Report is what a run leaves in its report folder as report.json; the
// folder also holds summary.txt, latency.svg, delivery.svg (and
// fetch.svg when the run fetched) and a copy of the scenario.
type Report struct {
	Scenario     string    `json:"scenario"`
	Description  string    `json:"description,omitempty"`
	ScenarioFile string    `json:"scenario_file,omitempty"`
	ScenarioText string    `json:"scenario_text,omitempty"`
	Seed         int64     `json:"seed"`
	Rerun        string    `json:"rerun"`
	Started      time.Time `json:"started"`
	Duration     float64   `json:"duration_seconds"`
	Passed       bool      `json:"passed"`
	Error        string    `json:"error,omitempty"`
	KeptUp       string    `json:"kept_up,omitempty"` // testnet dir left up for inspection

	Build    Build     `json:"build"`
	Settings *Scenario `json:"settings"` // the scenario with every default filled in
	Testnet  *State    `json:"testnet,omitempty"`
	Shaping  string    `json:"shaping,omitempty"` // the mechanism that shaped the links: netem, delayline, bandwidth-only or none
	// LinkRTT is round trips (TCP handshakes, ms) from the first node to up
	// to four others, measured just after start-up: what the links give.
	LinkRTT Stats `json:"link_rtt_ms"`
	// Simulated is set when the run was simulated (RunSim): every time
	// in the report is then virtual time.
	Simulated *SimInfo `json:"simulated,omitempty"`

	Startup struct {
		Nodes    int     `json:"nodes"`
		Seconds  float64 `json:"seconds"`
		RSSBytes int64   `json:"rss_bytes"` // all nodes, just after start-up
	} `json:"startup"`
	Steps    []StepResult `json:"steps"`
	Waits    []Timing     `json:"waits"` // every wait-until: repair, convergence, ...
	Fetch    Stats        `json:"fetch"` // seconds per node per fetch
	Feeds    []FeedReport `json:"feeds"`
	DHT      []DHTReport  `json:"dht,omitempty"` // dht-lookup steps
	Nodes    []NodeReport `json:"nodes"`
	TotalRSS int64        `json:"total_rss_bytes"` // sum of the nodes' last RSS
	PeakRSS  int64        `json:"total_peak_rss_bytes"`
	TotalCPU float64      `json:"total_cpu_seconds"`
	NAT      *NATReport   `json:"nat,omitempty"`    // scenarios with NAT groups
	Traces   *TraceReport `json:"traces,omitempty"` // when the scenario sets tracing.exporter = "file"

	fetchTimes []float64
	latencies  []float64       // every delivery latency, ms
	deliveries []deliveryPoint // for delivery.svg
	started    time.Time
}

// Build says what ran.
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	Binary    string `json:"binary"`
	SHA256    string `json:"sha256,omitempty"`
	Host      string `json:"host"`
	CPUs      int    `json:"cpus"`
}

// StepResult is one step's outcome.
type StepResult struct {
	Index   int     `json:"index"`
	Action  string  `json:"action"`
	Name    string  `json:"name,omitempty"`
	Started float64 `json:"started_seconds"` // since the nodes were up
	Seconds float64 `json:"seconds"`
	// WallSeconds is a simulated step's duration on the machine's clock.
	WallSeconds float64 `json:"wall_seconds,omitempty"`
	// CPUSeconds is the CPU time (user and system) used during the step:
	// by all the nodes' daemons in a real testnet (sampled from /proc,
	// including restarted ones' last samples), by the simulating process
	// in a simulation.
	CPUSeconds float64 `json:"cpu_seconds"`
	// MachineCPUSeconds is what every core of the machine spent busy
	// during a real testnet's step, on the daemons and on everything else
	// (the delay line, this orchestrator, the kernel): the load the
	// daemons queued behind. network.sim_cpu's per_message is measured
	// with it.
	MachineCPUSeconds float64 `json:"machine_cpu_seconds,omitempty"`
	// Messages is what a simulated step's links carried: stream writes,
	// each a message of its protocol (the unit network.sim_cpu charges).
	Messages int64  `json:"messages,omitempty"`
	OK       bool   `json:"ok"`
	Detail   string `json:"detail,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Timing is how long a wait-until took to come true.
type Timing struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	OK      bool    `json:"ok"`
}

// Stats summarises samples.
type Stats struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// DHTReport is what one dht-lookup step measured.
type DHTReport struct {
	Step    int    `json:"step"`
	Kind    string `json:"kind"` // find-peer or find-providers
	Lookups int    `json:"lookups"`
	Found   int    `json:"found"`
	// Local lookups were answered from the node's own tables (a connected
	// peer, a provider record it holds); Hops, HopCounts and TimeMS are
	// over the others that found what they looked for.
	Local int   `json:"local"`
	Hops  Stats `json:"hops"`
	// HopCounts[h] is how many of those lookups took h hops.
	HopCounts []int `json:"hop_counts"`
	TimeMS    Stats `json:"time_ms"`
	Queried   Stats `json:"queried"` // peers queried per lookup (all lookups)
}

func newDHTReport(step int, kind string, res []api.DHTLookup) DHTReport {
	d := DHTReport{Step: step, Kind: kind}
	var hops, ms, queried []float64
	for _, l := range res {
		if l.Kind == "" {
			continue // the lookup failed
		}
		d.Lookups++
		queried = append(queried, float64(l.Queried))
		if !l.Found {
			continue
		}
		d.Found++
		if l.Local {
			d.Local++
			continue
		}
		hops = append(hops, float64(l.Hops))
		ms = append(ms, l.Seconds*1000)
		for len(d.HopCounts) <= l.Hops {
			d.HopCounts = append(d.HopCounts, 0)
		}
		d.HopCounts[l.Hops]++
	}
	d.Hops, d.TimeMS, d.Queried = statsOf(hops), statsOf(ms), statsOf(queried)
	return d
}

func statsOf(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := Stats{Count: len(xs), P50: percentile(xs, 50), P90: percentile(xs, 90), P95: percentile(xs, 95), P99: percentile(xs, 99)}
	for _, x := range xs {
		s.Mean += x
		s.Max = math.Max(s.Max, x)
	}
	s.Mean /= float64(len(xs))
	return s
}

// percentile returns the p-th percentile (nearest rank) of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

// FeedReport is the delivery of one feed's updates to its followers.
type FeedReport struct {
	Name      string `json:"name"`
	Publisher string `json:"publisher"`
	Followers int    `json:"followers"`
	Updates   int    `json:"updates"`
	Delivery
	LatencyMS Stats `json:"latency_ms"` // publish call to arrival on the follower's topic
	// ImpliedHops is each latency divided by the one-way link latency
	// (network.link.latency; absent without one): the number of link
	// crossings an update's path took, so its maximum bounds the mesh
	// diameter the run saw (jitter blurs it; in a real run processing time
	// inflates it, in a simulated one processing costs no time).
	ImpliedHops *Stats `json:"implied_hops,omitempty"`
}

// Delivery counts follower-updates: an update is delivered to a follower
// that saw it on the topic or holds it (or a later one) at the end.
type Delivery struct {
	Expected  int     `json:"expected"`
	Delivered int     `json:"delivered"`
	OnTopic   int     `json:"on_topic"` // of which seen on the topic
	Ratio     float64 `json:"ratio"`
}

type deliveryPoint struct {
	at  float64 // seconds since the first publish
	lat float64 // ms
}

func deliveryOf(tr *feedTrack) Delivery {
	var d Delivery
	for seq := range tr.Published {
		for _, f := range tr.Followers {
			if f == tr.Publisher {
				continue
			}
			d.Expected++
			if _, ok := tr.Seen[f][seq]; ok {
				d.OnTopic++
				d.Delivered++
			} else if tr.Final[f] >= seq {
				d.Delivered++
			}
		}
	}
	if d.Expected > 0 {
		d.Ratio = float64(d.Delivered) / float64(d.Expected)
	}
	return d
}

// NodeReport is one node's resource use over the run.
type NodeReport struct {
	Name       string  `json:"name"`
	IP         string  `json:"ip"`
	PeerID     string  `json:"peer_id"`
	Starts     int     `json:"starts"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSPeak    int64   `json:"rss_peak_bytes"`
	RSSLast    int64   `json:"rss_last_bytes"`
	RSSMean    int64   `json:"rss_mean_bytes"`
}

func newReport(sc *Scenario, o RunOptions) *Report {
	r := &Report{Scenario: sc.Name, Description: sc.Description, Seed: sc.Seed, Settings: sc,
		ScenarioFile: o.ScenarioPath, ScenarioText: string(o.ScenarioText), Started: time.Now().UTC(), started: time.Now()}
	bin := o.Bin
	if bin == "" {
		bin, _ = os.Executable()
	}
	r.Build = buildInfo(bin)
	mode := ""
	if o.Mode != "" {
		mode = " --mode " + o.Mode
	}
	r.Rerun = fmt.Sprintf("weft testnet run %s --seed %d%s", filepath.Join(o.ReportDir, "scenario.toml"), sc.Seed, mode)
	return r
}

func buildInfo(bin string) Build {
	b := Build{Version: node.Version, GoVersion: runtime.Version(), Binary: bin, CPUs: runtime.NumCPU()}
	b.Host, _ = os.Hostname()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if f, err := os.Open(bin); err == nil {
		h := sha256.New()
		if _, err := io.Copy(h, f); err == nil {
			b.SHA256 = hex.EncodeToString(h.Sum(nil))
		}
		f.Close()
	}
	return b
}

// finish computes the summaries from what the runner gathered.
func (rep *Report) finish(r *runner) {
	rep.Passed = rep.Error == ""
	rep.Fetch = statsOf(rep.fetchTimes)
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for _, tr := range r.feeds {
		for _, at := range tr.Published {
			if first.IsZero() || at.Before(first) {
				first = at
			}
		}
	}
	names := make([]string, 0, len(r.feeds))
	for name := range r.feeds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tr := r.feeds[name]
		fr := FeedReport{Name: tr.Name, Publisher: tr.Publisher, Updates: len(tr.Published), Delivery: deliveryOf(tr)}
		var lats []float64
		for _, f := range tr.Followers {
			if f == tr.Publisher {
				continue
			}
			fr.Followers++
			for seq, at := range tr.Seen[f] {
				pub, ok := tr.Published[seq]
				if !ok {
					continue
				}
				ms := float64(at.Sub(pub).Microseconds()) / 1000
				lats = append(lats, ms)
				rep.deliveries = append(rep.deliveries, deliveryPoint{at: at.Sub(first).Seconds(), lat: ms})
			}
		}
		fr.LatencyMS = statsOf(lats)
		if link := rep.Settings.Network.Link.Latency.D(); link > 0 && len(lats) > 0 {
			hops := make([]float64, len(lats))
			for i, ms := range lats {
				hops[i] = ms / (float64(link.Microseconds()) / 1000)
			}
			h := statsOf(hops)
			fr.ImpliedHops = &h
		}
		rep.latencies = append(rep.latencies, lats...)
		rep.Feeds = append(rep.Feeds, fr)
	}
	r.mu.Unlock()
	rep.NAT = r.natReport()
	r.mu.Lock()
	if r.t != nil {
		for _, n := range r.t.state().Nodes {
			nr := NodeReport{Name: n.Name, IP: n.IP, PeerID: n.PeerID, Starts: n.Starts}
			if u := r.usage[n.Name]; u != nil {
				nr.CPUSeconds = u.cpuPrev + u.cpuLast
				nr.RSSPeak, nr.RSSLast = u.rssPeak, u.rssLast
				if u.samples > 0 {
					nr.RSSMean = int64(u.rssTotal / float64(u.samples))
				}
			}
			rep.TotalRSS += nr.RSSLast
			rep.PeakRSS += nr.RSSPeak
			rep.TotalCPU += nr.CPUSeconds
			rep.Nodes = append(rep.Nodes, nr)
		}
	}
}

// Write writes the report folder.
func (rep *Report) Write(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	if rep.ScenarioText != "" {
		if err := os.WriteFile(filepath.Join(dir, "scenario.toml"), []byte(rep.ScenarioText), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(rep.Summary()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latency.svg"), []byte(histogramSVG("Feed delivery latency (publish call to arrival on each follower)", "latency (ms)", rep.latencies)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "delivery.svg"), []byte(deliverySVG(rep)), 0o644); err != nil {
		return err
	}
	if tr := rep.Traces; tr != nil {
		for _, s := range []struct {
			sum   *TraceSummary
			title string
		}{
			{tr.SlowestFetch, "Slowest fetch"},
			{tr.SlowestFeed, "Slowest feed delivery (a follower fetching and pinning a version)"},
		} {
			if s.sum == nil || s.sum.SVG == "" {
				continue
			}
			title := fmt.Sprintf("%s: %s on %s, %.0f ms", s.title, s.sum.Root, s.sum.Node, s.sum.Seconds*1000)
			if err := os.WriteFile(filepath.Join(dir, s.sum.SVG), []byte(timelineSVG(title, s.sum.trace, s.sum.names)), 0o644); err != nil {
				return err
			}
		}
	}
	if len(rep.fetchTimes) > 0 {
		ms := make([]float64, len(rep.fetchTimes))
		for i, s := range rep.fetchTimes {
			ms[i] = s * 1000
		}
		if err := os.WriteFile(filepath.Join(dir, "fetch.svg"), []byte(histogramSVG("Fetch time per node", "fetch time (ms)", ms)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Summary is the readable account of the run (summary.txt).
func (rep *Report) Summary() string {
	var b strings.Builder
	verdict := "PASSED"
	if !rep.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "weft testnet run: %s — %s\n", rep.Scenario, verdict)
	if rep.Description != "" {
		fmt.Fprintf(&b, "%s\n", strings.TrimSpace(rep.Description))
	}
	if rep.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", rep.Error)
	}
	fmt.Fprintf(&b, "\nbuild     weft %s", rep.Build.Version)
	if rep.Build.Revision != "" {
		rev := rep.Build.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(&b, " (%s", rev)
		if rep.Build.Modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ", %s, %d CPUs\n", rep.Build.GoVersion, rep.Build.CPUs)
	fmt.Fprintf(&b, "seed      %d\n", rep.Seed)
	fmt.Fprintf(&b, "started   %s, ran %.1fs\n", rep.Started.Format(time.RFC3339), rep.Duration)
	if sim := rep.Simulated; sim != nil {
		fmt.Fprintf(&b, "SIMULATED %.1fs of virtual time in %.1fs of wall time; every time in this report is virtual\n", sim.VirtualSeconds, sim.WallSeconds)
		fmt.Fprintf(&b, "          process: peak heap %s, peak %d goroutines, %s from the OS\n", mib(int64(sim.PeakHeapBytes)), sim.PeakGoroutines, mib(int64(sim.SysBytes)))
		fmt.Fprintf(&b, "          links: %d dials (%d refused, %d into a partition), %s in %d segments, %d lost\n",
			sim.Links.Dials, sim.Links.DialsRefused, sim.Links.DialsBlackholed, mib(sim.Links.Bytes), sim.Links.Segments, sim.Links.SegmentsLost)
		fmt.Fprintf(&b, "          limits: %s\n", sim.Limits)
	}
	if t := rep.Testnet; t != nil {
		net := "127.0.0.1 (" + t.Why + ")"
		switch t.Mode {
		case ModeNetns:
			net = "network namespaces on " + t.Subnet
		case ModeSim:
			net = t.Why
		}
		fmt.Fprintf(&b, "network   %s, topology %s\n", net, t.Topology)
		if t.Mode == ModeSim {
			fmt.Fprintf(&b, "shaping   %s\n", rep.Simulated.Model)
		} else {
			fmt.Fprintf(&b, "shaping   %s\n", t.ShapingNote())
		}
		if s := rep.Settings; s != nil {
			fmt.Fprintf(&b, "link      %s\n", s.Network.Link)
		}
		if r := rep.LinkRTT; r.Count > 0 {
			fmt.Fprintf(&b, "link RTT  p50 %.1fms  p90 %.1fms  max %.1fms  (TCP handshakes from the first node, n=%d)\n", r.P50, r.P90, r.Max, r.Count)
		}
	}
	if rep.Simulated != nil {
		fmt.Fprintf(&b, "start-up  %d nodes ready in %.1fs (virtual)\n", rep.Startup.Nodes, rep.Startup.Seconds)
	} else {
		fmt.Fprintf(&b, "start-up  %d nodes ready in %.1fs, %s RSS in all\n", rep.Startup.Nodes, rep.Startup.Seconds, mib(rep.Startup.RSSBytes))
	}
	fmt.Fprintf(&b, "re-run    %s\n", rep.Rerun)
	if rep.KeptUp != "" {
		fmt.Fprintf(&b, "kept up   %s (inspect with 'weft testnet status --dir %s'; remove with 'weft testnet down --dir %s')\n", rep.KeptUp, rep.KeptUp, rep.KeptUp)
	}
	if rep.Simulated != nil {
		b.WriteString("\nsteps      started  took   cpu  messages\n")
	} else {
		b.WriteString("\nsteps      started  took   cpu  machine\n")
	}
	for _, s := range rep.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		label := s.Action
		if s.Name != "" {
			label += " (" + s.Name + ")"
		}
		msgs := fmt.Sprintf(" %7.1fs", s.MachineCPUSeconds)
		if rep.Simulated != nil {
			msgs = fmt.Sprintf(" %9d", s.Messages)
		}
		fmt.Fprintf(&b, "  %s %3d  %7.1fs %6.2fs %5.1fs%s  %-28s %s\n", mark, s.Index, s.Started, s.Seconds, s.CPUSeconds, msgs, label, s.Detail)
		if s.Error != "" {
			fmt.Fprintf(&b, "            %s\n", s.Error)
		}
	}
	if len(rep.Waits) > 0 {
		b.WriteString("\nrepair and convergence (wait-until)\n")
		for _, w := range rep.Waits {
			ok := "true after"
			if !w.OK {
				ok = "NOT true after"
			}
			fmt.Fprintf(&b, "  %-30s %s %.2fs\n", w.Name, ok, w.Seconds)
		}
	}
	for _, f := range rep.Feeds {
		fmt.Fprintf(&b, "\nfeed %s from %s: %d updates to %d followers\n", short(f.Name), f.Publisher, f.Updates, f.Followers)
		fmt.Fprintf(&b, "  delivery  %d/%d (%.2f%%), %d seen on the topic\n", f.Delivered, f.Expected, 100*f.Ratio, f.OnTopic)
		l := f.LatencyMS
		fmt.Fprintf(&b, "  latency   p50 %.1fms  p90 %.1fms  p95 %.1fms  p99 %.1fms  max %.1fms  (n=%d)\n", l.P50, l.P90, l.P95, l.P99, l.Max, l.Count)
		if h := f.ImpliedHops; h != nil {
			fmt.Fprintf(&b, "  hops      p50 %.1f  p99 %.1f  max %.1f  (latency / link latency: a mesh diameter of about %.0f)\n", h.P50, h.P99, h.Max, math.Round(h.Max))
		}
	}
	for _, d := range rep.DHT {
		fmt.Fprintf(&b, "\ndht step %d: %d %s lookups, %d found (%d from the node's own tables)\n", d.Step, d.Lookups, d.Kind, d.Found, d.Local)
		fmt.Fprintf(&b, "  hops      p50 %.0f  p90 %.0f  p99 %.0f  max %.0f  mean %.2f  (lookups by hops: %v)\n", d.Hops.P50, d.Hops.P90, d.Hops.P99, d.Hops.Max, d.Hops.Mean, d.HopCounts)
		fmt.Fprintf(&b, "  time      p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms\n", d.TimeMS.P50, d.TimeMS.P90, d.TimeMS.P99, d.TimeMS.Max)
		fmt.Fprintf(&b, "  queried   p50 %.0f  max %.0f peers per lookup\n", d.Queried.P50, d.Queried.Max)
	}
	if rep.NAT != nil {
		rep.NAT.summary(&b)
	}
	if rep.Fetch.Count > 0 {
		f := rep.Fetch
		fmt.Fprintf(&b, "\nfetch     p50 %.3fs  p90 %.3fs  p99 %.3fs  max %.3fs  (n=%d)\n", f.P50, f.P90, f.P99, f.Max, f.Count)
	}
	if tr := rep.Traces; tr != nil {
		fmt.Fprintf(&b, "\ntraces    %d spans in %d traces from %d nodes\n", tr.Spans, tr.Traces, len(tr.SpansPerNode))
		line := func(label string, s TraceSummary) {
			fmt.Fprintf(&b, "  %-14s %8.0fms  %-32s on %-6s %3d spans, nodes %s", label, s.Seconds*1000, s.Root, s.Node, s.Spans, strings.Join(s.Nodes, ","))
			if s.SVG != "" {
				fmt.Fprintf(&b, "  (%s)", s.SVG)
			}
			b.WriteString("\n")
		}
		if tr.SlowestFetch != nil {
			line("slowest fetch", *tr.SlowestFetch)
		}
		if tr.SlowestFeed != nil {
			line("slowest feed", *tr.SlowestFeed)
		}
		for i, s := range tr.Slowest {
			line(fmt.Sprintf("slowest #%d", i+1), s)
		}
	}
	if len(rep.Nodes) > 0 && rep.Simulated == nil {
		fmt.Fprintf(&b, "\nresources total RSS %s (peak %s), CPU %.1fs over %d nodes\n", mib(rep.TotalRSS), mib(rep.PeakRSS), rep.TotalCPU, len(rep.Nodes))
		b.WriteString("  node        starts  cpu(s)  rss-peak  rss-last\n")
		for _, n := range rep.Nodes {
			fmt.Fprintf(&b, "  %-10s  %6d  %6.1f  %8s  %8s\n", n.Name, n.Starts, n.CPUSeconds, mib(n.RSSPeak), mib(n.RSSLast))
		}
	}
	return b.String()
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
