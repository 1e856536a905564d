package tracefile

import (
	"strings"
	"testing"
	"time"
)

const (
	rootLine  = `{"Name":"api POST /api/v1/pin/add","SpanContext":{"TraceID":"4bf92f3577b34da6a3ce929d0e0e4736","SpanID":"1111111111111111","TraceFlags":"01"},"Parent":{"TraceID":"4bf92f3577b34da6a3ce929d0e0e4736","SpanID":"00f067aa0ba902b7","Remote":true},"SpanKind":2,"StartTime":"2026-12-04T12:00:00Z","EndTime":"2026-12-04T12:00:02Z","Attributes":null,"Status":{"Code":"Unset"},"Resource":[{"Key":"service.instance.id","Value":{"Type":"STRING","Value":"peerA"}}]}`
	childLine = `{"Name":"weft.exchange.request","SpanContext":{"TraceID":"4bf92f3577b34da6a3ce929d0e0e4736","SpanID":"2222222222222222"},"Parent":{"TraceID":"4bf92f3577b34da6a3ce929d0e0e4736","SpanID":"1111111111111111"},"SpanKind":3,"StartTime":"2026-12-04T12:00:01Z","EndTime":"2026-12-04T12:00:03Z","Attributes":[{"Key":"peer","Value":{"Type":"STRING","Value":"peerB"}},{"Key":"wants","Value":{"Type":"INT64","Value":3}}],"Status":{"Code":"Error","Description":"refused"}}`
	otherLine = `{"Name":"weft.provide","SpanContext":{"TraceID":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","SpanID":"3333333333333333"},"Parent":{"TraceID":"00000000000000000000000000000000","SpanID":"0000000000000000"},"StartTime":"2026-12-04T11:00:00Z","EndTime":"2026-12-04T11:00:00.5Z"}`
)

func TestRead(t *testing.T) {
	in := strings.Join([]string{rootLine, "not json", childLine, `{"Name":"no ids"}`, otherLine, `{"Name":"half`}, "\n")
	spans, err := Read(strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (junk lines skipped)", len(spans))
	}
	root, child, other := spans[0], spans[1], spans[2]
	if root.Node != "peerA" || !root.Remote || root.ParentID != "00f067aa0ba902b7" || root.Duration() != 2*time.Second {
		t.Errorf("root %+v", root)
	}
	if child.ParentID != root.SpanID || child.Attrs["peer"] != "peerB" || child.Attrs["wants"] != "3" || child.Error != "refused" {
		t.Errorf("child %+v", child)
	}
	if other.ParentID != "" {
		t.Errorf("a root span has parent %q", other.ParentID)
	}
	labelled, _ := Read(strings.NewReader(rootLine), "A")
	if labelled[0].Node != "A" {
		t.Errorf("label: %q", labelled[0].Node)
	}

	traces := Group(spans)
	if len(traces) != 2 || traces[0].ID != "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Fatalf("traces %+v", traces)
	}
	tr := traces[1]
	if tr.Root().SpanID != root.SpanID || tr.Duration() != 3*time.Second || len(tr.Nodes()) != 2 { // the child names no node
		t.Errorf("trace root %s, duration %v, nodes %v", tr.Root().SpanID, tr.Duration(), tr.Nodes())
	}
}
