package testnet

import (
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/tracefile"
)

// Every shipped scenario parses and validates.
func TestShippedScenarios(t *testing.T) {
	files, _ := filepath.Glob("../../scripts/scenarios/*.toml")
	if len(files) < 5 {
		t.Fatalf("found %d scenarios", len(files))
	}
	for _, f := range files {
		sc, _, err := LoadScenario(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(sc.Steps) == 0 || len(sc.NodeNames()) < 5 {
			t.Errorf("%s: %d steps, %d nodes", f, len(sc.Steps), len(sc.NodeNames()))
		}
	}
}

func TestScenarioErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`name = "x"
[[groups]]
name = "n"
count = 2
[[steps]]
action = "fly"`, `unknown action "fly"`},
		{`[[groups]]
name = "n"
count = 2
[[steps]]
action = "add"
node = "n3"
size = "1KiB"`, `no node or group "n3"`},
		{`[[groups]]
name = "n"
count = 1
[[steps]]
action = "assert"
check = "holds"
cid = "$nope"`, `$nope is not set`},
		{`[[groups]]
name = "n"
count = 1
typo = 3`, `unknown key groups.typo`},
		{`[[groups]]
name = "n"
count = 2
[[steps]]
action = "attack"
node = "n1"
nodes = "n"
attack = "junk-heads"`, `collection is required`},
		{`[[groups]]
name = "n"
count = 2
[[steps]]
action = "attack"
node = "n1"
nodes = "n"
attack = "meteor"`, `attack "meteor"`},
		{`[network.link]
loss = "lots"
[[groups]]
name = "n"
count = 1`, `loss "lots"`},
		{`[network.sim_cpu]
cores = 2
[[groups]]
name = "n"
count = 1`, `network.sim_cpu: give both`},
		{`[config]
"dht.nonsense" = "1"
[[groups]]
name = "n"
count = 1`, `unknown config key`},
		{`[[groups]]
name = "a"
count = 12
[[groups]]
name = "a1"
count = 1`, `ambiguous`},
		{`[[groups]]
name = "n"
count = 2
nat = "cone"`, `NAT kind "cone"`},
		{`[[groups]]
name = "n"
count = 2
nat = "symmetric"`, `every group is behind a NAT`},
		{`[network]
mode = "loopback"
[[groups]]
name = "p"
count = 1
[[groups]]
name = "n"
count = 2
nat = "symmetric"`, `need namespaces`},
		{`[[groups]]
name = "p"
count = 1
[[groups]]
name = "n"
count = 2
nat = "port-restricted"
[[steps]]
action = "partition"
groups = [["p"], ["n"]]`, `partition is not available with NAT groups`},
		{`[[groups]]
name = "p"
count = 1
[groups.config]
"relay.nonsense" = "1"`, `group "p" config`},
		{`[[groups]]
name = "p"
count = 3
[[steps]]
action = "assert"
check = "connection"
via = "sideways"`, `via "sideways"`},
		{`[[groups]]
name = "p"
count = 3
[[steps]]
action = "wait-until"
check = "reachability"
peers = "q"`, `reachability ""`},
		{`[network]
subnet = "10.77.3.0/25"
[[groups]]
name = "n"
count = 2`, `want a /24`},
		{`[network]
subnet = "10.77.4.0/21"
[[groups]]
name = "n"
count = 2`, `want a /24`},
		{`[network]
subnet = "10.78.4.0/24"
[[groups]]
name = "n"
count = 2`, `want a /24`},
		{`[network]
subnet = "10.77.3.0/24"
[[groups]]
name = "n"
count = 254`, `holds 253 nodes`},
		{`[network]
subnet = "10.77.4.0/23"
[[groups]]
name = "n"
count = 600`, `use a /22`},
		{`[[groups]]
name = "n"
count = 1001`, `at most 1000`},
		{`[[groups]]
name = "p"
count = 250
[[groups]]
name = "n"
count = 4
nat = "symmetric"`, `at most 253`},
	}
	for _, c := range cases {
		sc, err := ParseScenario([]byte(c.doc))
		if err == nil {
			err = sc.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.doc, err, c.want)
		}
	}
}

func TestSelectors(t *testing.T) {
	sc, err := ParseScenario([]byte(`
[[groups]]
name = "a"
count = 2
[[groups]]
name = "edge2"
count = 2
[[steps]]
action = "kill"
nodes = "a"
[[steps]]
action = "partition"
groups = ["a", ["edge2-1", "edge2-2"]]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	got, _ := sc.Resolve(sc.Steps[0].Nodes)
	if strings.Join(got, ",") != "a1,a2" {
		t.Errorf("a -> %v", got)
	}
	got, _ = sc.Resolve(Selector{"edge2-2", "all"})
	if strings.Join(got, ",") != "a1,a2,edge2-1,edge2-2" {
		t.Errorf("all -> %v", got)
	}
	if len(sc.Steps[1].Groups) != 2 {
		t.Errorf("groups %v", sc.Steps[1].Groups)
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]int64{"100mbit": 100e6, "10mbps": 80e6, "1.5gbit": 1.5e9, "500kbit": 500e3} {
		if got, err := parseBandwidth(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	if _, err := parseBandwidth("fast"); err == nil {
		t.Error("fast parsed")
	}
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	if p := percentile(xs, 50); p != 5 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(xs, 99); p != 10 {
		t.Errorf("p99 %v", p)
	}
	if p := percentile(xs, 90); p != 9 {
		t.Errorf("p90 %v", p)
	}
}

// The plots are well-formed XML, with or without samples.
func TestSVG(t *testing.T) {
	lat := make([]float64, 500)
	for i := range lat {
		lat[i] = float64(i%97) + 0.5
	}
	rep := &Report{Feeds: []FeedReport{{Delivery: Delivery{Expected: 500, Delivered: 500, OnTopic: 500}}}}
	for i := range lat {
		rep.deliveries = append(rep.deliveries, deliveryPoint{at: float64(i) / 50, lat: lat[i]})
	}
	for name, svg := range map[string]string{
		"hist":      histogramSVG("t", "ms", lat),
		"empty":     histogramSVG("t", "ms", nil),
		"delivery":  deliverySVG(rep),
		"nodeliver": deliverySVG(&Report{}),
	} {
		var v any
		if err := xml.Unmarshal([]byte(svg), &v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !strings.HasPrefix(svg, "<svg") {
			t.Errorf("%s: not an svg", name)
		}
	}
}

func TestCompose(t *testing.T) {
	y, err := Compose(ComposeOptions{Nodes: 3, Subnet: "10.78.9.0/24", Seed: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node3:", "ipv4_address: 10.78.9.4", "internal: true", `"0@10.78.9.2:4001"`, "WEFT_TESTNET_SEED: ${WEFT_TESTNET_SEED:-s}"} {
		if !strings.Contains(y, want) {
			t.Errorf("compose file lacks %q:\n%s", want, y)
		}
	}
	if _, err := Compose(ComposeOptions{Nodes: 0}); err == nil {
		t.Error("0 nodes accepted")
	}
	_, a, _ := DeriveIdentity("s", 0)
	_, b, _ := DeriveIdentity("s", 0)
	_, c, _ := DeriveIdentity("s", 1)
	if a != b || a == c || a == "" {
		t.Errorf("derived IDs %s %s %s", a, b, c)
	}
}

// The Kubernetes manifests hold a StatefulSet behind a headless Service.
func TestKubernetesManifest(t *testing.T) {
	b, err := os.ReadFile("../../deploy/k8s/weft.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"kind: StatefulSet", "kind: Service", "clusterIP: None", "serviceName: weft", "--bootstrap=0@weft-0.weft:4001"} {
		if !strings.Contains(s, want) {
			t.Errorf("manifest lacks %q", want)
		}
	}
}

// A loopback testnet of 2 nodes comes up, answers, and goes without a
// trace; namespaces are not needed for this.
func TestLoopbackUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs daemons")
	}
	bin := os.Getenv("WEFT_TESTNET_BIN")
	if bin == "" {
		t.Skip("set WEFT_TESTNET_BIN to a weft binary (cmd/weft's tests build one and run scenarios)")
	}
	sc := QuickScenario(2, "star", Shape{})
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tn")
	tn, err := Up(context.Background(), sc, Options{Dir: dir, Bin: bin, Mode: ModeLoopback})
	if err != nil {
		t.Fatal(err)
	}
	st := tn.Status(context.Background())
	if len(st) != 2 || !st[0].Running || st[0].Peers < 1 {
		t.Errorf("status %+v", st)
	}
	if err := tn.Down(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("dir left")
	}
}

func TestTimelineSVG(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	sp := func(node, id, parent, name string, from, to int, attrs map[string]string) tracefile.Span {
		return tracefile.Span{Node: node, TraceID: "t", SpanID: id, ParentID: parent, Name: name,
			Start: at.Add(time.Duration(from) * time.Millisecond), End: at.Add(time.Duration(to) * time.Millisecond), Attrs: attrs}
	}
	spans := []tracefile.Span{
		sp("a", "1", "remote", "api POST /api/v1/pin/add", 0, 900, nil),
		sp("a", "2", "1", "weft.fetch", 5, 890, nil),
		sp("a", "3", "2", "weft.exchange.request", 10, 800, map[string]string{"peer": "PB"}),
		sp("b", "4", "3", "weft.exchange.serve", 20, 790, map[string]string{"peer": "PA"}),
		sp("a", "5", "1", "IpfsDHT.Provide", 890, 1200, nil),
		sp("a", "6", "5", "KademliaDHT.Query", 900, 1000, nil),
		sp("a", "7", "6", "KademliaDHT.Dial", 900, 950, nil),
	}
	spans[3].Kind = 2 // server
	tr := tracefile.Group(spans)
	if len(tr) != 1 {
		t.Fatalf("%d traces", len(tr))
	}
	svg := timelineSVG("Slowest fetch", tr[0], map[string]string{"PA": "a", "PB": "b"})
	var v struct{}
	if err := xml.Unmarshal([]byte(svg), &v); err != nil {
		t.Fatalf("not XML: %v", err)
	}
	for _, want := range []string{
		"a: api POST /api/v1/pin/add",
		"    a: weft.exchange.request → b",
		"      b: weft.exchange.serve ← a",
		"  a: IpfsDHT.Provide (+2)",
		"1200 ms",
	} {
		if !strings.Contains(svg, want) {
			t.Errorf("timeline lacks %q:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "KademliaDHT.Dial") {
		t.Error("a library's inner spans are drawn instead of folded")
	}
}
