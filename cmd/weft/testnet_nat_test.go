package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/weft-p2p/weft/node/testnet"
)

// natCIScenario is a small NAT scenario: 4 public relays (4 observers, so
// observed addresses are trusted), two nodes behind port-restricted NATs,
// one behind a symmetric NAT and one behind a full-cone NAT. Feeds are
// exchanged only between pairs with a direct connection: gossipsub opens
// no stream on a relayed (limited) connection, and across a relay-only
// pair (symmetric and port-restricted) an update arrived only when other
// followers bridged it (always in nat-matrix, not reliably with one); the
// relay-only pairs fetch files both ways. The network is TCP only (no
// quic), so the sweep punch, which needs QUIC, cannot make the symmetric
// and port-restricted pairs direct, and they stay relay-only as these
// fetches need (nat-matrix, with QUIC, has them swept).
const natCIScenario = `
name = "ci-nat"
seed = 16
timeout = "4m"
[network]
mode = "netns"
[config]
"dht.mode" = "auto"
[[groups]]
name = "relay"
count = 4
[groups.config]
"relay.service" = "true"
"relay.client" = "false"
"nat.autonat_service" = "true"
"relay.connection_data" = "4MiB"
[[groups]]
name = "pr"
count = 2
nat = "port-restricted"
[[groups]]
name = "sym"
count = 1
nat = "symmetric"
[[groups]]
name = "fc"
count = 1
nat = "full-cone"
[[steps]]
action = "wait-until"
check = "reachability"
reachability = "public"
nodes = ["relay", "fc"]
[[steps]]
action = "wait-until"
check = "reachability"
reachability = "private"
nodes = ["pr", "sym"]
[[steps]]
action = "connect"
nodes = ["pr", "sym", "fc"]
deadline = "10s"
[[steps]]
action = "assert"
check = "connection"
via = "direct"
nodes = "pr"
[[steps]]
action = "assert"
check = "connection"
via = "relayed"
nodes = "sym"
peers = "pr"
[[steps]]
action = "assert"
check = "connection"
via = "direct"
nodes = "fc"
peers = ["pr", "sym"]
[[steps]]
action = "pairwise"
nodes = ["pr", "fc"]
size = "16KiB"
[[steps]]
action = "pairwise"
nodes = ["sym", "fc"]
size = "16KiB"
key = "sym"
[[steps]]
action = "add"
node = "sym1"
size = "16KiB"
as = "fromsym"
[[steps]]
action = "fetch"
nodes = "pr"
cid = "$fromsym"
[[steps]]
action = "add"
node = "pr1"
size = "16KiB"
as = "frompr"
[[steps]]
action = "fetch"
nodes = "sym1"
cid = "$frompr"
`

// TestTestnetNATScenario runs a small scenario with NAT groups through
// `weft testnet run`: AutoNAT verdicts within 60 s, the port-restricted
// pair punched direct, the full-cone node dialed directly, the symmetric
// node's pairs with port-restricted ones on the relay, files and feed
// updates both ways between directly connected pairs and files over the
// relay-only ones, the NAT section of the
// report, and nothing left behind. It needs root (namespaces, nftables);
// without root it says so and skips.
func TestTestnetNATScenario(t *testing.T) {
	if why := testnet.CanNATLab(); why != "" {
		if why == "not root" || runtime.GOOS != "linux" {
			t.Skip("NAT groups need root on Linux (network namespaces, nftables): " + why)
		}
		t.Fatalf("cannot build NAT routers: %s", why)
	}
	if testing.Short() {
		t.Skip("runs 8 daemons, 4 behind NAT routers for about a minute")
	}
	bin := buildWeft(t)
	work := t.TempDir()
	scen := filepath.Join(work, "ci-nat.toml")
	if err := os.WriteFile(scen, []byte(natCIScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := filepath.Join(work, "report")
	code, out, stderr := weftQuiet("testnet", "run", scen, "--bin", bin, "--dir", filepath.Join(work, "tn"), "--report", rep)
	if code != 0 {
		t.Fatalf("testnet run: exit %d\n%s\n%s", code, out, stderr)
	}
	r := reportOf(t, rep)
	if l := testnet.Leftovers(context.Background(), r.Testnet.ID); !l.Empty() {
		t.Errorf("left behind: %s", l)
	}
	if !r.Passed || r.NAT == nil || !r.Testnet.Internet {
		t.Fatalf("report: passed=%v, internet=%v, NAT section %v\n%s", r.Passed, r.Testnet.Internet, r.NAT != nil, out)
	}
	for _, n := range r.NAT.Nodes {
		want := "private"
		if n.Kind == "public" || n.Kind == "full-cone" {
			want = "public"
		}
		if n.Reachability != want || n.VerdictSeconds > 60+r.Startup.Seconds {
			t.Errorf("%s (%s): verdict %q first seen %.1fs into the run, want %s within 60 s of start-up", n.Name, n.Kind, n.Reachability, n.VerdictSeconds, want)
		}
	}
	kinds := map[string]testnet.NATKindStats{}
	for _, k := range r.NAT.Kinds {
		kinds[k.Kinds] = k
	}
	if k := kinds["port-restricted × port-restricted"]; k.Pairs != 1 || k.Direct != 1 || k.Fetched != 2 || k.FeedsArrived != 2 {
		t.Errorf("port-restricted pair: %+v, want 1 pair, direct, 2 fetches and 2 feed updates", k)
	}
	if k := kinds["port-restricted × symmetric"]; k.Pairs != 2 || k.RelayedOnly != 2 {
		t.Errorf("port-restricted and symmetric pairs: %+v, want 2 pairs relayed only", k)
	}
	if r.Fetch.Count != 3 {
		t.Errorf("%d relayed fetches timed, want 3 (pr1 and pr2 from sym1, sym1 from pr1)", r.Fetch.Count)
	}
	if k := kinds["full-cone × symmetric"]; k.Pairs != 1 || k.Direct != 1 || k.Fetched != 2 || k.FeedsArrived != 2 {
		t.Errorf("full-cone and symmetric pair: %+v, want 1 pair, direct, 2 fetches and 2 feed updates", k)
	}
	t.Logf("NAT section of the summary:\n%s", out[max(0, len(out)-2500):])
}
