//go:build !weft_nootlp

package node

import (
	"context"
	neturl "net/url"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpExporter is the otlp-http or otlp-grpc exporter to endpoint: a URL
// (its scheme decides TLS; for HTTP a URL without a path gets
// /v1/traces), host:port (plain text), or "" (the exporter's default, or
// the OTEL_EXPORTER_OTLP_* variables). The OTLP exporters
// bring gRPC and the OTLP protobufs into the binary (about 8 MiB);
// `go build -tags weft_nootlp` leaves them out (tracing_nootlp.go).
func otlpExporter(ctx context.Context, kind, endpoint string) (sdktrace.SpanExporter, error) {
	url := strings.Contains(endpoint, "://")
	if kind == TraceOTLPGRPC {
		var opts []otlptracegrpc.Option
		switch {
		case url:
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		case endpoint != "":
			opts = append(opts, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	var opts []otlptracehttp.Option
	switch {
	case url:
		opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		// A base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is: the signal's path
		// goes after it unless it names one.
		if u, err := neturl.Parse(endpoint); err == nil && (u.Path == "" || u.Path == "/") {
			opts = append(opts, otlptracehttp.WithURLPath("/v1/traces"))
		}
	case endpoint != "":
		opts = append(opts, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure())
	}
	return otlptracehttp.New(ctx, opts...)
}
