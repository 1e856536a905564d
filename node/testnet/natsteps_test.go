package testnet

import (
	"strings"
	"testing"
	"time"
)

// The NAT section sums pairs up per kind pair (in NATKinds order, public
// first), with the median time to direct, and prints them in the summary.
func TestNATReportKinds(t *testing.T) {
	st := &State{Internet: true, Nodes: []*NodeState{
		{Name: "relay1", IP: "11.77.1.1"},
		{Name: "pr1", NAT: "port-restricted", IP: "10.78.2.2", PublicIP: "11.77.1.2"},
		{Name: "pr2", NAT: "port-restricted", IP: "10.78.3.2", PublicIP: "11.77.1.3"},
		{Name: "sym1", NAT: "symmetric", IP: "10.78.4.2", PublicIP: "11.77.1.4"},
	}}
	r := &runner{t: &Testnet{st: st}, rep: &Report{started: time.Now()}}
	r.nat.pairs = []NATPair{
		{Target: "pr1", Dialer: "pr2", Kinds: "port-restricted × port-restricted", Direct: true, Seconds: 0.3, Transport: "tcp"},
		{Target: "pr1", Dialer: "sym1", Kinds: "port-restricted × symmetric", Relayed: true, Seconds: 30},
		{Target: "pr2", Dialer: "sym1", Kinds: "port-restricted × symmetric", Error: "dial: timeout"},
	}
	r.nat.exchange = []PairExchange{
		{From: "pr1", To: "sym1", Kinds: "port-restricted × symmetric", Fetched: true, FetchSeconds: 0.5, FeedArrived: true, FeedSeconds: 0.2},
		{From: "sym1", To: "pr1", Kinds: "port-restricted × symmetric", Fetched: true, FetchSeconds: 0.7},
	}
	r.nat.verdicts = map[string]verdict{"pr1": {want: "private", at: 21.5}}
	rep := r.natReport()
	if rep == nil || len(rep.Nodes) != 4 || rep.Nodes[1].Address != "11.77.1.2" || rep.Nodes[0].Kind != "public" {
		t.Fatalf("nodes: %+v", rep)
	}
	if len(rep.Kinds) != 2 {
		t.Fatalf("kinds: %+v", rep.Kinds)
	}
	pp, ps := rep.Kinds[0], rep.Kinds[1]
	if pp.Kinds != "port-restricted × port-restricted" || pp.Direct != 1 || pp.DirectP50 != 0.3 || pp.Transports != "tcp 1" {
		t.Errorf("port-restricted pair: %+v", pp)
	}
	if ps.Pairs != 2 || ps.RelayedOnly != 1 || ps.Failed != 1 || ps.Direct != 0 || ps.Exchanges != 2 || ps.Fetched != 2 || ps.FeedsArrived != 1 {
		t.Errorf("port-restricted × symmetric: %+v", ps)
	}
	if got := pairKinds(st.Nodes[3], st.Nodes[1]); got != "port-restricted × symmetric" {
		t.Errorf("pairKinds = %q", got)
	}
	var b strings.Builder
	rep.summary(&b)
	for _, want := range []string{"pr1        port-restricted     11.77.1.2       private at 21.5s", "port-restricted × symmetric", "2/2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
