package feed

import (
	"context"

	"github.com/weft-p2p/weft/protocol/internal/tracectx"
)

// traceParent is the traceparent of ctx's span (for catch-up requests), or
// "" if it has none.
func traceParent(ctx context.Context) string { return tracectx.Parent(ctx) }

// remoteParent returns ctx with the span of traceparent tp as its remote
// parent; ctx unchanged if tp does not parse.
func remoteParent(ctx context.Context, tp string) context.Context {
	return tracectx.RemoteParent(ctx, tp)
}
