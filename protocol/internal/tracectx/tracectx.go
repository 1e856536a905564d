// Package tracectx carries OpenTelemetry trace context in weft's own
// protocol requests as a W3C traceparent string, so that a request's server
// span is a child of the requester's span. The protocol packages use only
// OpenTelemetry's API; node/ hands them a tracer (or none).
package tracectx

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// w3c is the W3C Trace Context propagator (traceparent only).
var w3c = propagation.TraceContext{}

// Parent is the traceparent of ctx's span, or "" if it has none.
func Parent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c["traceparent"]
}

// RemoteParent returns ctx with the span of traceparent tp as its remote
// parent; ctx unchanged if tp does not parse.
func RemoteParent(ctx context.Context, tp string) context.Context {
	return w3c.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
