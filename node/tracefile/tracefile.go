// Package tracefile reads the spans weft's file trace exporter writes
// (tracing.exporter = "file": one JSON object per line, the format of
// OpenTelemetry's stdouttrace exporter) and groups them into traces. The
// cross-node tracing test and the testnet report use it.
package tracefile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// Span is one recorded span.
type Span struct {
	Name     string
	TraceID  string
	SpanID   string
	ParentID string // "" for a root span
	// Remote reports that the parent came from another process (a
	// request's trace context).
	Remote     bool
	Kind       int
	Start, End time.Time
	Attrs      map[string]string
	Error      string // the status description of a failed span
	// Node is who recorded it: the reader's label for the file, else the
	// resource's service.instance.id.
	Node string
}

// Duration is End - Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

type jsonSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct {
		TraceID, SpanID string
		Remote          bool
	}
	SpanKind   int
	StartTime  time.Time
	EndTime    time.Time
	Attributes []jsonKV
	Status     struct{ Code, Description string }
	Resource   []jsonKV
}

type jsonKV struct {
	Key   string
	Value struct {
		Type  string
		Value any
	}
}

const zeroSpan = "0000000000000000"

// MaxLine bounds one line of a trace file.
const MaxLine = 1 << 20

// Read reads the spans in r, labelling them node (if not empty). A line
// that is not a span (a half-written last line after a crash) is skipped.
func Read(r io.Reader, node string) ([]Span, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	var out []Span
	for sc.Scan() {
		var js jsonSpan
		if err := json.Unmarshal(sc.Bytes(), &js); err != nil || js.SpanContext.SpanID == "" {
			continue
		}
		s := Span{Name: js.Name, TraceID: js.SpanContext.TraceID, SpanID: js.SpanContext.SpanID,
			Remote: js.Parent.Remote, Kind: js.SpanKind, Start: js.StartTime, End: js.EndTime,
			Attrs: map[string]string{}, Node: node}
		if js.Parent.SpanID != zeroSpan && js.Parent.SpanID != "" {
			s.ParentID = js.Parent.SpanID
		}
		for _, kv := range js.Attributes {
			s.Attrs[kv.Key] = fmt.Sprint(kv.Value.Value)
		}
		if js.Status.Code == "Error" {
			s.Error = js.Status.Description
		}
		if s.Node == "" {
			for _, kv := range js.Resource {
				if kv.Key == "service.instance.id" {
					s.Node = fmt.Sprint(kv.Value.Value)
				}
			}
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read spans: %w", err)
	}
	return out, nil
}

// ReadFile reads the spans of the file at path (none if it does not exist).
func ReadFile(path, node string) ([]Span, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open trace file: %w", err)
	}
	defer f.Close()
	return Read(f, node)
}

// Trace is the spans of one trace ID, in start order.
type Trace struct {
	ID    string
	Spans []Span
}

// Start and End bound the trace's spans.
func (t Trace) Start() time.Time { return t.Spans[0].Start }

// End is when the last span ended.
func (t Trace) End() time.Time {
	e := t.Spans[0].End
	for _, s := range t.Spans[1:] {
		if s.End.After(e) {
			e = s.End
		}
	}
	return e
}

// Duration is End - Start.
func (t Trace) Duration() time.Duration { return t.End().Sub(t.Start()) }

// Nodes lists the nodes with spans in the trace, in order of first span.
func (t Trace) Nodes() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range t.Spans {
		if !seen[s.Node] {
			seen[s.Node] = true
			out = append(out, s.Node)
		}
	}
	return out
}

// Root is the trace's span without a recorded parent that starts first
// (a trace begun by a client outside weft has a remote parent that is
// in no file).
func (t Trace) Root() Span {
	ids := map[string]bool{}
	for _, s := range t.Spans {
		ids[s.SpanID] = true
	}
	for _, s := range t.Spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			return s
		}
	}
	return t.Spans[0]
}

// Group sorts spans into traces, each in start order, the traces in
// order of their first span.
func Group(spans []Span) []Trace {
	by := map[string][]Span{}
	for _, s := range spans {
		by[s.TraceID] = append(by[s.TraceID], s)
	}
	out := make([]Trace, 0, len(by))
	for id, ss := range by {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Start.Before(ss[j].Start) })
		out = append(out, Trace{ID: id, Spans: ss})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start().Equal(out[j].Start()) {
			return out[i].Start().Before(out[j].Start())
		}
		return out[i].ID < out[j].ID
	})
	return out
}
