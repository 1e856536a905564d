package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing exporters (tracing.exporter).
const (
	TraceOTLPHTTP = "otlp-http"
	TraceOTLPGRPC = "otlp-grpc"
	TraceFile     = "file"
	// DefaultTraceFile is the file exporter's file in the repo.
	DefaultTraceFile = "traces.jsonl"
)

// tracerName names weft's own instrumentation scope.
const tracerName = "github.com/weft-p2p/weft"

// TraceSettings is the tracing set-up a node runs with: its config keys
// with the OTEL_* environment applied (see ResolveTracing).
type TraceSettings struct {
	// Exporter is "" (off), TraceOTLPHTTP, TraceOTLPGRPC or TraceFile.
	Exporter string
	// Endpoint is the collector from tracing.endpoint; "" when the
	// OTEL_EXPORTER_OTLP_* variables name it (the exporter reads them).
	Endpoint string
	// File is the file exporter's path (absolute).
	File string
	// Sampler decides which new traces are recorded.
	Sampler sdktrace.Sampler
}

// ResolveTracing applies the standard OTEL_* variables (read with getenv)
// over the config's tracing keys. The environment wins: it is per process,
// the way collectors and orchestrators set tracing up. OTEL_SDK_DISABLED=true
// or OTEL_TRACES_EXPORTER=none turn tracing off; OTEL_TRACES_EXPORTER=otlp
// picks OTLP over OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (http/protobuf by
// default, or grpc); weft's own names (otlp-http, otlp-grpc, file) work
// there too. OTEL_TRACES_SAMPLER and _ARG replace tracing.sample_ratio.
// repo is the repo folder a relative tracing.file is in.
func ResolveTracing(cfg TracingConfig, repo string, getenv func(string) string) (TraceSettings, error) {
	s := TraceSettings{Exporter: cfg.Exporter, Endpoint: cfg.Endpoint}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return TraceSettings{}, nil
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "":
	case "none":
		return TraceSettings{}, nil
	case "otlp":
		proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch proto {
		case "", "http/protobuf":
			s.Exporter = TraceOTLPHTTP
		case "grpc":
			s.Exporter = TraceOTLPGRPC
		default:
			return TraceSettings{}, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: weft supports http/protobuf and grpc", proto)
		}
	case TraceOTLPHTTP, TraceOTLPGRPC, TraceFile:
		s.Exporter = v
	default:
		return TraceSettings{}, fmt.Errorf("OTEL_TRACES_EXPORTER %q: weft supports otlp, none, %s, %s and %s", v, TraceOTLPHTTP, TraceOTLPGRPC, TraceFile)
	}
	if s.Exporter == "" {
		return TraceSettings{}, nil
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		s.Endpoint = ""
	}
	s.File = cfg.File
	if s.File == "" {
		s.File = DefaultTraceFile
	}
	if !filepath.IsAbs(s.File) {
		s.File = filepath.Join(repo, s.File)
	}
	sampler, err := traceSampler(cfg.SampleRatio, getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return TraceSettings{}, err
	}
	s.Sampler = sampler
	return s, nil
}

// traceSampler is parent-based sampling at ratio, or the sampler the
// OTEL_TRACES_SAMPLER variable names (with its _ARG ratio).
func traceSampler(ratio float64, name, arg string) (sdktrace.Sampler, error) {
	if name == "" {
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	r := 1.0
	if arg != "" {
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: want a ratio from 0 to 1", arg)
		}
		r = v
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(r), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER %q is not supported", name)
}

// tracing is a node's tracer provider. Off, it is OpenTelemetry's no-op
// provider: no exporter, no goroutine, no file.
type tracing struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	sdk    *sdktrace.TracerProvider // nil when off
	file   *os.File
}

// startTracing builds the provider s describes; peerID and version go into
// the resource (service.instance.id, service.version).
func startTracing(ctx context.Context, s TraceSettings, peerID string) (*tracing, error) {
	if s.Exporter == "" {
		tp := noop.NewTracerProvider()
		return &tracing{tp: tp, tracer: tp.Tracer(tracerName)}, nil
	}
	t := &tracing{}
	var exp sdktrace.SpanExporter
	var err error
	switch s.Exporter {
	case TraceFile:
		t.file, err = os.OpenFile(s.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open trace file: %w", err)
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(t.file))
	case TraceOTLPHTTP, TraceOTLPGRPC:
		exp, err = otlpExporter(ctx, s.Exporter, s.Endpoint)
	default:
		err = fmt.Errorf("unknown exporter %q", s.Exporter)
	}
	if err != nil {
		if t.file != nil {
			t.file.Close()
		}
		return nil, fmt.Errorf("start %s trace exporter: %w", s.Exporter, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "weft"),
			attribute.String("service.version", Version),
			attribute.String("service.instance.id", peerID),
		),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
	)
	if err != nil && res == nil {
		res = resource.Empty()
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(s.Sampler),
		sdktrace.WithResource(res),
	)
	t.tp = t.sdk
	t.tracer = t.sdk.Tracer(tracerName)
	return t, nil
}

// close flushes what is queued and stops the exporter.
func (t *tracing) close() error {
	if t == nil || t.sdk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := t.sdk.Shutdown(ctx)
	if t.file != nil {
		err = errors.Join(err, t.file.Close())
	}
	if err != nil {
		return fmt.Errorf("stop tracing: %w", err)
	}
	return nil
}

// TracerProvider is the node's tracer provider: OpenTelemetry's no-op one
// when tracing is off. The daemon makes it the global provider so the
// DHT's and Bitswap's own spans are recorded too.
func (n *Node) TracerProvider() trace.TracerProvider { return n.tracing.tp }

// Tracing reports whether the node records spans.
func (n *Node) Tracing() bool { return n.tracing.sdk != nil }

// startSpan starts one of weft's spans.
func (n *Node) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return n.tracing.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// exchangeTracer is the tracer handed to protocol packages: nil when
// tracing is off, so they skip even the no-op calls.
func (n *Node) exchangeTracer() trace.Tracer {
	if !n.Tracing() {
		return nil
	}
	return n.tracing.tracer
}

// endSpan records err (if any) on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceContext is the W3C Trace Context propagator of API requests.
var traceContext = propagation.TraceContext{}

// serveTraced serves an API request under its W3C traceparent (and
// tracestate) header, if it has one, so a client can be the root of a
// trace: the request gets a server span named after its route, and the
// spans its handler starts go below it. Requests without the header are
// served as they are.
func (n *Node) serveTraced(route string, h http.Handler, w http.ResponseWriter, r *http.Request) {
	if !n.Tracing() || r.Header.Get("traceparent") == "" {
		h.ServeHTTP(w, r)
		return
	}
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		h.ServeHTTP(w, r)
		return
	}
	ctx, span := n.tracing.tracer.Start(ctx, "api "+route, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	h.ServeHTTP(w, r.WithContext(ctx))
}

// StartTracing builds a tracer provider for s outside a node (the CLI
// uses it for its root span): the no-op provider when s.Exporter is "".
// stop flushes and closes it.
func StartTracing(ctx context.Context, s TraceSettings, instance string) (tp trace.TracerProvider, stop func() error, err error) {
	t, err := startTracing(ctx, s, instance)
	if err != nil {
		return nil, nil, err
	}
	return t.tp, t.close, nil
}
