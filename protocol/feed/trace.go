package feed

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// w3c is the W3C Trace Context propagator (traceparent only) of catch-up
// requests.
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
