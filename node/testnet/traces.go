package testnet

import (
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/tracefile"
)

// Traces: a scenario that sets "tracing.exporter" = "file" in [config]
// has every daemon write its spans into its repo (traces.jsonl). The
// runner makes each fetch it asks for the root of a trace (a W3C
// traceparent on the API call), stops the nodes gracefully at the end so
// they flush their spans, reads every node's file, and the report draws
// the slowest fetch, the slowest feed delivery (a follower's
// weft.feed.pin: fetching and pinning a new version) and lists the
// slowest traces of the run.

// TraceReport is the report's account of the run's spans.
type TraceReport struct {
	Spans        int            `json:"spans"`
	Traces       int            `json:"traces"`
	SpansPerNode map[string]int `json:"spans_per_node"`
	// SlowestFetch is the trace of the slowest fetch step's fetch (by the
	// runner's clock), SlowestFeed the slowest feed delivery's.
	SlowestFetch *TraceSummary `json:"slowest_fetch,omitempty"`
	SlowestFeed  *TraceSummary `json:"slowest_feed_delivery,omitempty"`
	// Slowest are the run's longest traces of more than one span.
	Slowest []TraceSummary `json:"slowest"`
}

// TraceSummary describes one trace.
type TraceSummary struct {
	ID      string   `json:"trace_id"`
	Root    string   `json:"root"`
	Node    string   `json:"node"` // where the root span ran
	Seconds float64  `json:"seconds"`
	Spans   int      `json:"spans"`
	Nodes   []string `json:"nodes"` // nodes with spans in it
	SVG     string   `json:"svg,omitempty"`

	trace tracefile.Trace
	names map[string]string // peer ID -> node name, for the timeline
}

// fetchTrace is one traced fetch the runner asked for.
type fetchTrace struct {
	id      string
	node    string
	seconds float64
}

// tracingOn reports whether the scenario turns the file exporter on.
func tracingOn(sc *Scenario) bool {
	return sc.Config["tracing.exporter"] == node.TraceFile
}

// newRootContext returns ctx carrying a new sampled remote span context,
// and its trace ID: the API call made with it is the root of a trace.
func newRootContext(ctx context.Context) (context.Context, string) {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithRemoteSpanContext(ctx, sc), tid.String()
}

// collectTraces stops the running nodes (so they flush their spans), reads
// every node's trace file and summarises them into rep, writing the
// timelines later with the report.
func (r *runner) collectTraces(ctx context.Context) error {
	var running []string
	for _, n := range r.t.state().Nodes {
		if r.t.isUp(n) {
			running = append(running, n.Name)
		}
	}
	if len(running) > 0 {
		if err := r.t.Stop(ctx, running); err != nil {
			return fmt.Errorf("stop nodes to flush their spans: %w", err)
		}
	}
	var all []tracefile.Span
	tr := &TraceReport{SpansPerNode: map[string]int{}}
	names := map[string]string{}
	for _, n := range r.t.state().Nodes {
		names[n.PeerID] = n.Name
	}
	summarise := func(t tracefile.Trace) TraceSummary {
		root := t.Root()
		return TraceSummary{ID: t.ID, Root: root.Name, Node: root.Node, Seconds: t.Duration().Seconds(),
			Spans: len(t.Spans), Nodes: t.Nodes(), trace: t, names: names}
	}
	for _, n := range r.t.state().Nodes {
		ss, err := tracefile.ReadFile(filepath.Join(n.Repo, node.DefaultTraceFile), n.Name)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		tr.SpansPerNode[n.Name] = len(ss)
		all = append(all, ss...)
	}
	tr.Spans = len(all)
	traces := tracefile.Group(all)
	tr.Traces = len(traces)
	byID := make(map[string]tracefile.Trace, len(traces))
	for _, t := range traces {
		byID[t.ID] = t
	}
	r.mu.Lock()
	fetches := append([]fetchTrace(nil), r.fetchTraces...)
	r.mu.Unlock()
	sort.SliceStable(fetches, func(i, j int) bool { return fetches[i].seconds > fetches[j].seconds })
	for _, f := range fetches {
		if t, ok := byID[f.id]; ok {
			s := summarise(t)
			s.Node = f.node
			s.SVG = "trace-fetch.svg"
			tr.SlowestFetch = &s
			break
		}
	}
	var feed *tracefile.Trace
	for i, t := range traces {
		if t.Root().Name == "weft.feed.pin" && (feed == nil || t.Duration() > feed.Duration()) {
			feed = &traces[i]
		}
	}
	if feed != nil {
		s := summarise(*feed)
		s.SVG = "trace-feed.svg"
		tr.SlowestFeed = &s
	}
	multi := make([]tracefile.Trace, 0, len(traces))
	for _, t := range traces {
		if len(t.Spans) > 1 {
			multi = append(multi, t)
		}
	}
	sort.SliceStable(multi, func(i, j int) bool { return multi[i].Duration() > multi[j].Duration() })
	for _, t := range multi[:min(5, len(multi))] {
		tr.Slowest = append(tr.Slowest, summarise(t))
	}
	r.rep.Traces = tr
	return nil
}

// maxTimelineRows bounds the spans a timeline draws.
const maxTimelineRows = 60

// timelineSVG draws a trace as a timeline: one row per span, in tree
// order (each span under its parent, children by start), indented by
// depth, coloured by the node that recorded it; the x axis is
// milliseconds since the trace began. The spans below a library's span
// (the DHT's, Bitswap's: names not beginning "weft." or "api ") are folded
// into it, their count in its label. names maps peer IDs to node names.
func timelineSVG(title string, t tracefile.Trace, names map[string]string) string {
	if len(t.Spans) == 0 {
		return svgEmpty(title, "no spans")
	}
	type row struct {
		s      tracefile.Span
		depth  int
		folded int
	}
	ids := map[string]bool{}
	children := map[string][]tracefile.Span{}
	for _, s := range t.Spans {
		ids[s.SpanID] = true
	}
	var roots []tracefile.Span
	for _, s := range t.Spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
		} else {
			children[s.ParentID] = append(children[s.ParentID], s)
		}
	}
	var rows []row
	var count func(id string) int
	count = func(id string) int {
		n := 0
		for _, c := range children[id] {
			n += 1 + count(c.SpanID)
		}
		return n
	}
	var walk func(s tracefile.Span, depth int)
	walk = func(s tracefile.Span, depth int) {
		if !strings.HasPrefix(s.Name, "weft.") && !strings.HasPrefix(s.Name, "api ") {
			rows = append(rows, row{s, depth, count(s.SpanID)})
			return
		}
		rows = append(rows, row{s, depth, 0})
		for _, c := range children[s.SpanID] { // in start order, as t.Spans
			walk(c, depth+1)
		}
	}
	for _, s := range roots {
		walk(s, 0)
	}
	hidden := 0
	if len(rows) > maxTimelineRows {
		hidden = len(rows) - maxTimelineRows
		rows = rows[:maxTimelineRows]
	}
	nodes := t.Nodes()
	color := map[string]string{}
	palette := []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}
	for i, n := range nodes {
		color[n] = palette[i%len(palette)]
	}

	const rowH, labelW, right, top = 16.0, 300.0, 24.0, 70.0
	width := 960.0
	height := top + float64(len(rows))*rowH + 70
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", width/2, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="40" text-anchor="middle" fill="#555">trace %s: %d spans on %d nodes, %.0f ms</text>`+"\n",
		width/2, t.ID, len(t.Spans), len(nodes), ms(t.Duration()))
	// Legend: one swatch per node.
	x := 10.0
	for _, n := range nodes {
		fmt.Fprintf(&b, `<rect x="%.0f" y="50" width="10" height="10" fill="%s"/><text x="%.0f" y="59">%s</text>`+"\n", x, color[n], x+14, html.EscapeString(n))
		x += 24 + 7*float64(len(n))
	}
	start := t.Start()
	total := ms(t.Duration())
	if total <= 0 {
		total = 1
	}
	step := niceStep(total, 8)
	xmax := step * float64(int(total/step)+1)
	pw := width - labelW - right
	X := func(v float64) float64 { return labelW + v/xmax*pw }
	bottom := top + float64(len(rows))*rowH
	for v := 0.0; v <= xmax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", X(v), top, X(v), bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", X(v), bottom+14, fmtTick(v))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">ms since the trace began</text>`+"\n", labelW+pw/2, bottom+32)
	for i, rw := range rows {
		y := top + float64(i)*rowH
		s := rw.s
		label := fmt.Sprintf("%s%s: %s", strings.Repeat("  ", rw.depth), s.Node, s.Name)
		if p := s.Attrs["peer"]; p != "" {
			if n, ok := names[p]; ok {
				p = n
			} else {
				p = short(p)
			}
			if s.Kind == int(trace.SpanKindServer) {
				label += " ← " + p
			} else {
				label += " → " + p
			}
		}
		if rw.folded > 0 {
			label += fmt.Sprintf(" (+%d)", rw.folded)
		}
		if r := []rune(label); len(r) > 54 {
			label = string(r[:53]) + "…"
		}
		fmt.Fprintf(&b, `<text x="4" y="%.1f" xml:space="preserve" fill="%s">%s</text>`+"\n", y+11, color[s.Node], html.EscapeString(label))
		x0, x1 := X(ms(s.Start.Sub(start))), X(ms(s.End.Sub(start)))
		stroke := ""
		if s.Error != "" {
			stroke = ` stroke="#c00" stroke-width="1.5"`
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"%s><title>%s</title></rect>`+"\n",
			x0, y+2, max(x1-x0, 1), rowH-4, color[s.Node], stroke,
			html.EscapeString(fmt.Sprintf("%s on %s: %.1f ms %s", s.Name, s.Node, ms(s.Duration()), s.Error)))
	}
	if hidden > 0 {
		fmt.Fprintf(&b, `<text x="4" y="%.1f" fill="#666">… %d more spans not drawn</text>`+"\n", bottom+50, hidden)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
