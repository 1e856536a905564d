package exchange

import (
	"context"

	"github.com/weft-p2p/weft/protocol/internal/tracectx"
)

// Tracing: a Fetcher with Config.Tracer starts a client span for every
// request it sends and puts the span's W3C traceparent in Request.Trace; a
// Server with ServerConfig.Tracer answers a request that carries one under
// a server span whose parent is the requester's span. Both are
// OpenTelemetry API types only: node/ hands in its tracer (or none).

// traceParent is the traceparent of ctx's span, or "" if it has none.
func traceParent(ctx context.Context) string { return tracectx.Parent(ctx) }

// remoteParent returns ctx with the span of traceparent tp as its remote
// parent; ctx unchanged if tp does not parse.
func remoteParent(ctx context.Context, tp string) context.Context {
	return tracectx.RemoteParent(ctx, tp)
}
