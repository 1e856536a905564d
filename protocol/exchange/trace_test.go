package exchange

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Each request a traced Fetcher sends is a client span under the fetch's
// context, and a traced Server answers it under a server span whose
// parent is that request span (remote), in the same trace. An untraced
// Fetcher sends no trace, and the Server records nothing for it.
func TestFetchTrace(t *testing.T) {
	src := newMem()
	root := addFile(t, src, randBytes(9, 3<<20), smallOpts())
	fetchRec, serveRec := tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	tracer := func(r *tracetest.SpanRecorder) trace.Tracer {
		return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r)).Tracer("test")
	}
	srv, err := NewServer(ServerConfig{Blocks: src, Tracer: tracer(serveRec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	peers := newPipes(t)
	peers.peers["p"] = func(st Stream) { srv.Handle(st, "fetcher") }

	for _, traced := range []bool{true, false} {
		fetchRec.Reset()
		serveRec.Reset()
		f := newFetcher(t, newMem(), peers, func(c *Config) {
			if traced {
				c.Tracer = tracer(fetchRec)
			}
		})
		ctx, span := tracer(fetchRec).Start(context.Background(), "fetch")
		if _, err := f.Fetch(ctx, root, DAG(), []peer.ID{"p"}); err != nil {
			t.Fatal(err)
		}
		span.End()
		reqs := map[trace.SpanID]bool{}
		for _, s := range fetchRec.Ended() {
			if s.Name() == "weft.exchange.request" {
				if s.Parent().SpanID() != span.SpanContext().SpanID() || s.SpanKind() != trace.SpanKindClient {
					t.Errorf("request span not a client span under the fetch: %v", s.Parent())
				}
				reqs[s.SpanContext().SpanID()] = true
			}
		}
		if traced { // the server ends its span after its last write
			waitFor(t, 5*time.Second, func() bool { return len(serveRec.Ended()) >= len(reqs) })
		}
		served := serveRec.Ended()
		if !traced {
			if len(reqs) != 0 || len(served) != 0 {
				t.Fatalf("untraced fetch: %d request spans, %d server spans", len(reqs), len(served))
			}
			continue
		}
		if len(reqs) == 0 || len(served) != len(reqs) {
			t.Fatalf("%d request spans, %d server spans", len(reqs), len(served))
		}
		for _, s := range served {
			if s.Name() != "weft.exchange.serve" || !s.Parent().IsRemote() || !reqs[s.Parent().SpanID()] ||
				s.SpanContext().TraceID() != span.SpanContext().TraceID() {
				t.Errorf("server span %s: parent %v, trace %v", s.Name(), s.Parent(), s.SpanContext().TraceID())
			}
		}
	}
}
