package feed

import (
	"context"
	"testing"

	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/peer"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A catch-up request carries the asker's span to the peer answering it:
// the peer's server span is the child of the asker's client span, in the
// asker's trace. A peer without a tracer answers the same.
func TestCatchUpTrace(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	servedRec, askedRec := tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	tracer := func(r *tracetest.SpanRecorder) trace.Tracer {
		return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r)).Tracer("test")
	}
	pub := newManager(t, Config{Clock: clock, Tracer: tracer(servedRec)})
	if _, err := pub.Publish(t.Context(), sk, path.FromCid(contentCID(1))); err != nil {
		t.Fatal(err)
	}
	plain := newManager(t, Config{Clock: clock})
	if _, err := plain.Publish(t.Context(), sk, path.FromCid(contentCID(1))); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		peer   *Manager
		served int
	}{{"traced peer", pub, 1}, {"untraced peer", plain, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			servedRec.Reset()
			askedRec.Reset()
			asker := newManager(t, Config{Clock: clock, Tracer: tracer(askedRec),
				Exchange: &localExchange{peers: map[peer.ID]*Manager{"p": tc.peer}}})
			ctx, root := tracer(askedRec).Start(context.Background(), "root")
			rec, err := asker.Resolve(ctx, name)
			root.End()
			if err != nil || rec.Seq != 1 {
				t.Fatalf("Resolve = %+v, %v", rec, err)
			}
			var req sdktrace.ReadOnlySpan
			for _, s := range askedRec.Ended() {
				if s.Name() == "weft.feed.catchup.request" {
					req = s
				}
			}
			if req == nil || req.Parent().SpanID() != root.SpanContext().SpanID() {
				t.Fatalf("no client span under the caller's: %v", askedRec.Ended())
			}
			served := servedRec.Ended()
			if len(served) != tc.served {
				t.Fatalf("%d server spans, want %d", len(served), tc.served)
			}
			for _, s := range served {
				if s.Name() != "weft.feed.catchup.serve" || !s.Parent().IsRemote() ||
					s.Parent().SpanID() != req.SpanContext().SpanID() || s.SpanContext().TraceID() != root.SpanContext().TraceID() {
					t.Fatalf("server span %s has parent %v in trace %v; want the request span %v",
						s.Name(), s.Parent(), s.SpanContext().TraceID(), req.SpanContext())
				}
			}
		})
	}
}
