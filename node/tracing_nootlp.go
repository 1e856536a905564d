//go:build weft_nootlp

package node

import (
	"context"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpExporter: this binary was built without the OTLP exporters.
func otlpExporter(_ context.Context, kind, _ string) (sdktrace.SpanExporter, error) {
	return nil, fmt.Errorf("this weft was built with -tags weft_nootlp, without the %s exporter: use the file exporter", kind)
}
