package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/weft-p2p/weft/node"
)

// cliTrace makes a client command a trace root, or part of a trace: with
// TRACEPARENT set (as CI systems and otel-cli export it), the command's
// API calls carry it; with the OTEL_* environment turning tracing on
// (OTEL_TRACES_EXPORTER), the CLI records a root span named name ("weft
// <command>") of its own, exports it when the command ends, and the daemon's spans go
// below it. Without either it does nothing. end must be called once the
// command is done. repo is where a relative trace file goes.
func cliTrace(ctx context.Context, name, repo string) (_ context.Context, end func()) {
	if tp := os.Getenv("TRACEPARENT"); tp != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
	}
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		return ctx, func() {}
	}
	s, err := node.ResolveTracing(node.TracingConfig{SampleRatio: 1}, repo, os.Getenv)
	if err != nil || s.Exporter == "" {
		if err != nil {
			fmt.Fprintln(os.Stderr, "weft: tracing off:", err)
		}
		return ctx, func() {}
	}
	provider, stop, err := node.StartTracing(ctx, s, "cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft: tracing off:", err)
		return ctx, func() {}
	}
	if name == "" {
		name = "weft " + commandName()
	}
	ctx, span := provider.Tracer("github.com/weft-p2p/weft/cmd/weft").Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindClient))
	return ctx, func() {
		span.End()
		if err := stop(); err != nil {
			fmt.Fprintln(os.Stderr, "weft:", err)
		}
	}
}

// commandName is the subcommand words of the command line (no flags, no
// arguments past the second word).
func commandName() string {
	var words []string
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-") || len(words) == 2 {
			break
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}
