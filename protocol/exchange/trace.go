package exchange

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: a Fetcher with Config.Tracer starts a client span for every
// request it sends and puts the span's W3C traceparent in Request.Trace; a
// Server with ServerConfig.Tracer answers a request that carries one under
// a server span whose parent is the requester's span. Both are
// OpenTelemetry API types only: node/ hands in its tracer (or none).

// w3c is the W3C Trace Context propagator (traceparent only).
var w3c = propagation.TraceContext{}

// traceParent is the traceparent of ctx's span, or "" if it has none.
func traceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c["traceparent"]
}

// remoteParent returns ctx with the span of traceparent tp as its remote
// parent; ctx unchanged if tp does not parse.
func remoteParent(ctx context.Context, tp string) context.Context {
	return w3c.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
