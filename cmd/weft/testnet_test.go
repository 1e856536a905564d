package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/node/testnet"
)

// reportOf reads a run's report.json.
func reportOf(t *testing.T, dir string) testnet.Report {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var r testnet.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	return r
}

// assertNothingLeft checks that no process, namespace or link of the
// testnet is left on the machine.
func assertNothingLeft(t *testing.T, st *testnet.State) {
	t.Helper()
	if st == nil {
		t.Fatal("no testnet state in the report")
	}
	for _, n := range st.Nodes {
		if n.PID > 0 && syscall.Kill(n.PID, 0) == nil {
			if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(n.PID), "cmdline")); err == nil && strings.Contains(string(b), n.Repo) {
				t.Errorf("node %s (pid %d) still runs", n.Name, n.PID)
			}
		}
	}
	if st.Mode == testnet.ModeNetns {
		if l := testnet.Leftovers(context.Background(), st.ID); !l.Empty() {
			t.Errorf("left behind: %s", l)
		}
	}
	if _, err := os.Stat(st.Dir); err == nil {
		t.Errorf("testnet dir %s still exists", st.Dir)
	}
}

// TestTestnetCIScenario runs scripts/scenarios/ci-partition-5.toml end to
// end through the CLI: 5 daemons (network namespaces as root, 127.0.0.1
// otherwise), a fetch, a feed, a collection, a kill, a partition, a
// restart inside it and a heal, with assertions after each. Then it checks
// the report folder and that nothing was left behind.
func TestTestnetCIScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 5 daemons for about a minute")
	}
	bin := buildWeft(t)
	work := t.TempDir()
	rep := filepath.Join(work, "report")
	dir := filepath.Join(work, "tn")
	code, out, stderr := weftQuiet("testnet", "run", "../../scripts/scenarios/ci-partition-5.toml",
		"--bin", bin, "--dir", dir, "--report", rep)
	if code != 0 {
		t.Fatalf("testnet run: exit %d\n%s\n%s", code, out, stderr)
	}
	r := reportOf(t, rep)
	if !r.Passed || len(r.Steps) != len(r.Settings.Steps) {
		t.Fatalf("report: passed=%v, %d of %d steps\n%s", r.Passed, len(r.Steps), len(r.Settings.Steps), out)
	}
	want := map[string]bool{"kill": false, "restart": false, "partition": false, "heal": false, "assert": false}
	for _, s := range r.Steps {
		if _, ok := want[s.Action]; ok && s.OK {
			want[s.Action] = true
		}
	}
	for a, ok := range want {
		if !ok {
			t.Errorf("no successful %s step", a)
		}
	}
	if len(r.Feeds) != 1 || r.Feeds[0].Ratio != 1 || r.Feeds[0].LatencyMS.Count == 0 {
		t.Errorf("feed report: %+v", r.Feeds)
	}
	if r.Testnet.Mode == testnet.ModeNetns && os.Geteuid() != 0 {
		t.Errorf("namespaces without root?")
	}
	if os.Geteuid() == 0 && r.Testnet.Mode != testnet.ModeNetns {
		t.Logf("root, but namespaces unavailable: %s", r.Testnet.Why)
	}
	for _, f := range []string{"summary.txt", "latency.svg", "delivery.svg", "fetch.svg", "scenario.toml"} {
		if st, err := os.Stat(filepath.Join(rep, f)); err != nil || st.Size() == 0 {
			t.Errorf("report file %s: %v", f, err)
		}
	}
	if r.Rerun == "" || !strings.Contains(r.Rerun, "--seed 5") {
		t.Errorf("re-run line %q", r.Rerun)
	}
	if len(r.Nodes) != 5 || r.TotalRSS <= 0 {
		t.Errorf("resources: %d nodes, total RSS %d", len(r.Nodes), r.TotalRSS)
	}
	t.Logf("mode %s, ran %.1fs, start-up %.1fs", r.Testnet.Mode, r.Duration, r.Startup.Seconds)
	assertNothingLeft(t, r.Testnet)
}

// TestTestnetFailedAssertion: a failing assertion makes `weft testnet run`
// exit non-zero naming it; --keep-on-failure leaves the testnet up, and
// `weft testnet down` then removes everything.
func TestTestnetFailedAssertion(t *testing.T) {
	if testing.Short() {
		t.Skip("runs daemons")
	}
	bin := buildWeft(t)
	work := t.TempDir()
	scen := filepath.Join(work, "fail.toml")
	os.WriteFile(scen, []byte(`
name = "must-fail"
seed = 7
[[groups]]
name = "n"
count = 2
[[steps]]
action = "add"
node = "n1"
text = "only on n1"
as = "f"
[[steps]]
action = "assert"
name = "n2 holds what it never fetched"
check = "holds"
nodes = "n2"
cid = "$f"
`), 0o644)
	dir := filepath.Join(work, "tn")
	code, out, stderr := weftQuiet("testnet", "run", scen, "--bin", bin, "--dir", dir, "--report", filepath.Join(work, "rep"), "--keep-on-failure")
	if code == 0 || !strings.Contains(stderr, `assertion "n2 holds what it never fetched" (step 2) failed`) {
		t.Fatalf("exit %d, stderr %q\n%s", code, stderr, out)
	}
	st, err := testnet.LoadState(dir)
	if err != nil {
		t.Fatalf("kept testnet: %v", err)
	}
	code, out, _ = weftQuiet("testnet", "status", "--dir", dir)
	if code != 0 || strings.Count(out, "running") < 2 {
		t.Errorf("status of the kept testnet: %d\n%s", code, out)
	}
	if code, _, stderr := weftQuiet("testnet", "down", "--dir", dir); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	assertNothingLeft(t, st)
}

// TestTestnetDownAfterCrash SIGKILLs a `weft testnet run` in the middle of
// its scenario; `weft testnet down` must still stop every daemon and
// remove every namespace and link, from the state file alone.
func TestTestnetDownAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs daemons")
	}
	bin := buildWeft(t)
	work := t.TempDir()
	scen := filepath.Join(work, "long.toml")
	os.WriteFile(scen, []byte(`
name = "long"
[[groups]]
name = "n"
count = 3
[[steps]]
action = "sleep"
duration = "5m"
`), 0o644)
	dir := filepath.Join(work, "tn")
	cmd := exec.Command(bin, "testnet", "run", scen, "--dir", dir, "--report", filepath.Join(work, "rep"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var st *testnet.State
	nodetest.WaitFor(t, 60*time.Second, "3 nodes started", func() bool {
		s, err := testnet.LoadState(dir)
		if err != nil {
			return false
		}
		started := 0
		for _, n := range s.Nodes {
			if n.PID > 0 {
				started++
			}
		}
		st = s
		return started == 3
	})
	time.Sleep(500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	st, _ = testnet.LoadState(dir)
	for _, n := range st.Nodes {
		if syscall.Kill(n.PID, 0) != nil {
			t.Fatalf("node %s died with the testnet command; the test means to leave it running", n.Name)
		}
	}
	if code, _, stderr := weftQuiet("testnet", "down", "--dir", dir); code != 0 {
		t.Fatalf("down after crash: %s", stderr)
	}
	assertNothingLeft(t, st)
}

// TestTestnetLoopbackScenario runs the CI scenario in the fallback mode
// (every node on 127.0.0.1, partitions through the daemons' deny lists),
// which a root CI run would otherwise never exercise.
func TestTestnetLoopbackScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 5 daemons")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: TestTestnetCIScenario already runs on loopback")
	}
	bin := buildWeft(t)
	work := t.TempDir()
	rep := filepath.Join(work, "report")
	code, out, stderr := weftQuiet("testnet", "run", "../../scripts/scenarios/ci-partition-5.toml",
		"--bin", bin, "--dir", filepath.Join(work, "tn"), "--report", rep, "--mode", "loopback")
	if code != 0 {
		t.Fatalf("testnet run --mode loopback: exit %d\n%s\n%s", code, out, stderr)
	}
	r := reportOf(t, rep)
	if !r.Passed || r.Testnet.Mode != testnet.ModeLoopback {
		t.Fatalf("passed=%v mode=%s", r.Passed, r.Testnet.Mode)
	}
	assertNothingLeft(t, r.Testnet)
}
