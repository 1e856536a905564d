package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/node/tracefile"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

func TestResolveTracing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      node.TracingConfig
		env      map[string]string
		exporter string
		endpoint string
		file     string
		sampler  string // prefix of the sampler's description
		err      bool
	}{
		{name: "default: off", cfg: node.TracingConfig{SampleRatio: 1}},
		{name: "config file", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 0.25}, exporter: "file",
			file: "/repo/traces.jsonl", sampler: "ParentBased{root:TraceIDRatioBased{0.25}"},
		{name: "config file path", cfg: node.TracingConfig{Exporter: "file", File: "/var/t.jsonl", SampleRatio: 1},
			exporter: "file", file: "/var/t.jsonl", sampler: "ParentBased{root:TraceIDRatioBased{1}"},
		{name: "config otlp endpoint", cfg: node.TracingConfig{Exporter: "otlp-grpc", Endpoint: "collector:4317", SampleRatio: 1},
			exporter: "otlp-grpc", endpoint: "collector:4317", file: "/repo/traces.jsonl", sampler: "ParentBased"},
		{name: "env turns it on", cfg: node.TracingConfig{SampleRatio: 1}, env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			exporter: "otlp-http", file: "/repo/traces.jsonl", sampler: "ParentBased"},
		{name: "env picks grpc", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 1},
			env:      map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			exporter: "otlp-grpc", file: "/repo/traces.jsonl", sampler: "ParentBased"},
		{name: "env endpoint wins", cfg: node.TracingConfig{Exporter: "otlp-http", Endpoint: "a:1", SampleRatio: 1},
			env:      map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://b:2"},
			exporter: "otlp-http", file: "/repo/traces.jsonl", sampler: "ParentBased"},
		{name: "env none turns it off", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 1},
			env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{name: "sdk disabled", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 1},
			env: map[string]string{"OTEL_SDK_DISABLED": "true"}},
		{name: "env sampler", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 1},
			env:      map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
			exporter: "file", file: "/repo/traces.jsonl", sampler: "ParentBased{root:TraceIDRatioBased{0.01}"},
		{name: "env sampler always_off", cfg: node.TracingConfig{Exporter: "file", SampleRatio: 1},
			env:      map[string]string{"OTEL_TRACES_SAMPLER": "always_off"},
			exporter: "file", file: "/repo/traces.jsonl", sampler: "AlwaysOffSampler"},
		{name: "bad sampler arg", cfg: node.TracingConfig{Exporter: "file"},
			env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, err: true},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: true},
		{name: "unknown protocol", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := node.ResolveTracing(tc.cfg, "/repo", func(k string) string { return tc.env[k] })
			if tc.err {
				if err == nil {
					t.Fatalf("no error; got %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Exporter != tc.exporter || s.Endpoint != tc.endpoint || s.File != tc.file {
				t.Fatalf("got exporter %q endpoint %q file %q, want %q %q %q", s.Exporter, s.Endpoint, s.File, tc.exporter, tc.endpoint, tc.file)
			}
			if tc.exporter == "" {
				if s.Sampler != nil {
					t.Fatalf("tracing off with a sampler")
				}
				return
			}
			if d := s.Sampler.Description(); !strings.HasPrefix(d, tc.sampler) {
				t.Fatalf("sampler %s, want %s...", d, tc.sampler)
			}
		})
	}
}

func TestTracingConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		ok         bool
	}{
		{"tracing.exporter", "file", true},
		{"tracing.exporter", "otlp-http", true},
		{"tracing.exporter", "otlp-grpc", true},
		{"tracing.exporter", "", true},
		{"tracing.exporter", "jaeger", false},
		{"tracing.sample_ratio", "0.01", true},
		{"tracing.sample_ratio", "1.5", false},
		{"tracing.sample_ratio", "-1", false},
	} {
		c, err := node.DefaultConfig(node.ProfileLocal)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Set(tc.key, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("set %s = %q: %v", tc.key, tc.value, err)
		}
	}
}

// otelSDKGoroutines counts goroutines running OpenTelemetry SDK code (the
// batch span processor's).
func otelSDKGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("go.opentelemetry.io/otel/sdk/")) {
			count++
		}
	}
	return count
}

// TestTracingOff runs an add and a fetch between two nodes with the
// default config: no exporter, no SDK goroutine, no file. The same steps
// with the file exporter on show that the checks can fail: a goroutine
// runs while the node does (and ends on Close), and the file holds the
// spans.
func TestTracingOff(t *testing.T) {
	run := func(tune func(*node.Config)) (a, b *node.Node) {
		t.Helper()
		a = nodetest.Start(t, nodetest.Options{Tune: tune})
		b = nodetest.Start(t, nodetest.Options{Tune: tune})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
			t.Fatal(err)
		}
		root, err := a.Add(ctx, files.NewBytesFile(bytes.Repeat([]byte("weft "), 100_000)), unixfs.DefaultOptions(), true, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Fetch(ctx, root); err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	before := otelSDKGoroutines()
	a, b := run(nil)
	for _, n := range []*node.Node{a, b} {
		if n.Tracing() {
			t.Fatal("tracing is on by default")
		}
	}
	if g := otelSDKGoroutines(); g != before {
		t.Errorf("tracing off, yet %d goroutines run OpenTelemetry SDK code (%d before)", g, before)
	}
	for _, n := range []*node.Node{a, b} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(n.Repo().Path)
		for _, e := range entries {
			if strings.Contains(e.Name(), "trace") {
				t.Errorf("tracing off, yet the repo has %s", e.Name())
			}
		}
	}

	// The same with tracing on.
	a, b = run(func(c *node.Config) { c.Tracing.Exporter = node.TraceFile })
	if !a.Tracing() || !b.Tracing() {
		t.Fatal("tracing.exporter = file did not turn tracing on")
	}
	if g := otelSDKGoroutines(); g <= before {
		t.Errorf("tracing on, yet no goroutine runs OpenTelemetry SDK code: the check above checks nothing")
	}
	for _, n := range []*node.Node{a, b} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		spans, err := tracefile.ReadFile(filepath.Join(n.Repo().Path, node.DefaultTraceFile), "")
		if err != nil || len(spans) == 0 {
			t.Errorf("tracing on: %d spans in the file (%v)", len(spans), err)
		}
	}
	if g := otelSDKGoroutines(); g != before {
		t.Errorf("%d OpenTelemetry SDK goroutines outlived Close (%d before)", g, before)
	}
}

// BenchmarkTracingOverhead measures what tracing costs a fetch: per
// iteration, a 64 MiB native fetch and a 1 KiB cat between two nodes with
// tracing off, then the same between two nodes with tracing on (file
// exporter, sampling 1%), in the same run. It reports the median
// throughput and 1 KiB latency of each and the on/off ratios.
// Run: go test -run NONE -bench TracingOverhead -benchtime 7x ./node/
func BenchmarkTracingOverhead(b *testing.B) {
	const size = 64 << 20
	pair := func(tune func(*node.Config)) (a, bn *node.Node) {
		a = nodetest.Start(b, nodetest.Options{Tune: tune})
		bn = nodetest.Start(b, nodetest.Options{Tune: tune})
		if err := bn.Network().Host.Connect(context.Background(), nodetest.AddrInfo(a)); err != nil {
			b.Fatal(err)
		}
		return a, bn
	}
	offA, offB := pair(benchTune)
	onA, onB := pair(func(c *node.Config) {
		benchTune(c)
		c.Tracing.Exporter = node.TraceFile
		c.Tracing.SampleRatio = 0.01
	})
	ctx := context.Background()
	opts := unixfs.DefaultOptions()
	p := newPairs(size, "off", "on")
	small := map[string][]float64{}
	cat := func(name string, a, bn *node.Node, i int) {
		data := make([]byte, 1024)
		copy(data, fmt.Sprintf("small %s %d %d", name, i, time.Now().UnixNano()))
		root, err := a.Add(ctx, files.NewBytesFile(data), opts, true, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := bn.Cat(ctx, root, 0, -1, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
		small[name] = append(small[name], float64(time.Since(t0).Microseconds())/1e3)
	}
	for i := range 10 { // warm up: the first fetches after start are slower
		cat("off", offA, offB, -1-i)
		cat("on", onA, onB, -1-i)
	}
	clear(small)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		steps := []struct {
			name  string
			a, bn *node.Node
		}{{"off", offA, offB}, {"on", onA, onB}}
		if i%2 == 1 { // alternate which goes first
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			b.StopTimer()
			root, err := step.a.Add(ctx, files.NewReaderFile(newBenchPattern(size)), opts, true, "", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			p.time(b, step.name, func() error { return step.bn.Fetch(ctx, root) })
			for j := range 5 {
				cat(step.name, step.a, step.bn, i*5+j)
			}
		}
	}
	p.report(b)
	var ratios []float64
	for i := range small["off"] {
		ratios = append(ratios, small["on"][i]/small["off"][i])
	}
	b.ReportMetric(median(small["off"]), "off-1KiB-ms")
	b.ReportMetric(median(small["on"]), "on-1KiB-ms")
	b.ReportMetric(median(ratios), "on/off-1KiB-latency")
}

// TestTracingOTLPHTTP sends a node's spans to a stand-in collector on
// 127.0.0.1 over OTLP/HTTP.
func TestTracingOTLPHTTP(t *testing.T) {
	var got atomic.Int64
	coll := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" && r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if len(body) > 0 {
				got.Add(1)
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(coll.Close)
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Tracing.Exporter = node.TraceOTLPHTTP
		c.Tracing.Endpoint = coll.URL // http://127.0.0.1:PORT
	}})
	if _, err := n.Add(context.Background(), files.NewBytesFile([]byte("traced")), unixfs.DefaultOptions(), true, "", nil); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	if got.Load() == 0 {
		t.Fatal("the collector received no spans")
	}
}
