package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/testnet"
)

// needDelayLine skips unless this machine can build namespaces and TAP
// devices (root on Linux with /dev/net/tun).
func needDelayLine(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs daemons")
	}
	if os.Geteuid() != 0 {
		t.Skip("the delay line shapes namespace links: needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN/TAP driver: %v", err)
	}
}

// medianRTT measures round trips between two nodes of the testnet in dir.
func medianRTT(t *testing.T, dir, from, to string) time.Duration {
	t.Helper()
	tn, err := testnet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rtts, err := tn.MeasureRTT(ctx, from, to, 9)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// assertShaperGone checks that the testnet's shaper process has exited.
func assertShaperGone(t *testing.T, st *testnet.State) {
	t.Helper()
	if st.ShaperPID > 0 && st.ShaperRunning() {
		t.Errorf("shaper (pid %d) still runs", st.ShaperPID)
	}
}

// TestTestnetDelayLineUpShapeDown: `weft testnet up --latency 20ms
// --shaper delayline` carries the links through the shaper process;
// status names the mechanism and the shaper; round trips between two
// nodes take about 40 ms; `weft testnet shape --latency 5ms` brings them
// to about 10 ms; `down` stops the shaper by its PID and leaves nothing.
func TestTestnetDelayLineUpShapeDown(t *testing.T) {
	needDelayLine(t)
	bin := buildWeft(t)
	dir := filepath.Join(t.TempDir(), "tn")
	t.Cleanup(func() { _ = testnet.Down(context.Background(), dir, true) })
	code, out, stderr := weftQuiet("testnet", "up", "--dir", dir, "--bin", bin, "--nodes", "3", "--seed", "3",
		"--latency", "20ms", "--shaper", "delayline")
	if code != 0 {
		t.Fatalf("up: exit %d\n%s\n%s", code, out, stderr)
	}
	st, err := testnet.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Shaping != testnet.ShapingDelayLine || !st.ShaperRunning() {
		t.Fatalf("shaping %q, shaper pid %d running %v", st.Shaping, st.ShaperPID, st.ShaperRunning())
	}
	code, out, _ = weftQuiet("testnet", "status", "--dir", dir)
	if code != 0 || !strings.Contains(out, "shaping: delayline") || !strings.Contains(out, "shaper: pid") || strings.Count(out, "latency 20ms") != 3 {
		t.Errorf("status:\n%s", out)
	}
	code, out, _ = weftQuiet("testnet", "status", "--dir", dir, "--json")
	var js struct {
		Testnet testnet.State `json:"testnet"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || js.Testnet.Shaping != "delayline" {
		t.Errorf("status --json: %s", out)
	}

	m := medianRTT(t, dir, "n1", "n2")
	t.Logf("20ms links: median RTT n1-n2 %v", m)
	if m < 40*time.Millisecond || m > 100*time.Millisecond {
		t.Errorf("median RTT %v on 20ms links, want about 40ms", m)
	}
	if code, out, stderr := weftQuiet("testnet", "shape", "--dir", dir, "--latency", "5ms"); code != 0 || !strings.Contains(out, "delayline") {
		t.Fatalf("shape: exit %d\n%s\n%s", code, out, stderr)
	}
	m = medianRTT(t, dir, "n1", "n3")
	t.Logf("5ms links: median RTT n1-n3 %v", m)
	if m < 10*time.Millisecond || m > 35*time.Millisecond {
		t.Errorf("median RTT %v after reshape to 5ms, want about 10ms", m)
	}

	if code, _, stderr := weftQuiet("testnet", "down", "--dir", dir); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	if err := syscall.Kill(st.ShaperPID, 0); err == nil && st.ShaperRunning() {
		t.Errorf("shaper still runs after down")
	}
	assertShaperGone(t, st)
	assertNothingLeft(t, st)
}

// TestTestnetDelayLineScenario runs scripts/scenarios/feed-latency-5.toml
// (5 nodes on 20 ms links) through the delay line: the report names the
// mechanism, its measured link round trips reflect the latency, every
// update is delivered, none faster than one 20 ms hop, and nothing is
// left behind.
func TestTestnetDelayLineScenario(t *testing.T) {
	needDelayLine(t)
	bin := buildWeft(t)
	work := t.TempDir()
	rep := filepath.Join(work, "report")
	code, out, stderr := weftQuiet("testnet", "run", "../../scripts/scenarios/feed-latency-5.toml",
		"--bin", bin, "--dir", filepath.Join(work, "tn"), "--report", rep, "--shaper", "delayline")
	if code != 0 {
		t.Fatalf("testnet run: exit %d\n%s\n%s", code, out, stderr)
	}
	r := reportOf(t, rep)
	if !r.Passed || r.Shaping != testnet.ShapingDelayLine || r.Testnet.Shaping != testnet.ShapingDelayLine {
		t.Fatalf("passed=%v shaping=%q\n%s", r.Passed, r.Shaping, out)
	}
	if r.LinkRTT.Count < 10 || r.LinkRTT.P50 < 40 || r.LinkRTT.P50 > 100 {
		t.Errorf("link RTT %+v ms on 20ms links, want a median of about 40", r.LinkRTT)
	}
	if len(r.Feeds) != 1 || r.Feeds[0].Ratio != 1 || r.Feeds[0].LatencyMS.Count == 0 {
		t.Fatalf("feed report: %+v", r.Feeds)
	}
	// Delivery latencies are measured in whole milliseconds or better; the
	// quickest delivery still crosses the publisher's 20 ms line.
	l := r.Feeds[0].LatencyMS
	if l.P50 < 20 {
		t.Errorf("feed delivery p50 %.1fms over 20ms links", l.P50)
	}
	summary, _ := os.ReadFile(filepath.Join(rep, "summary.txt"))
	if !strings.Contains(string(summary), "shaping   delayline") || !strings.Contains(string(summary), "link RTT") {
		t.Errorf("summary does not name the mechanism:\n%s", summary)
	}
	t.Logf("link RTT p50 %.1fms, feed p50 %.1fms p99 %.1fms, ran %.1fs", r.LinkRTT.P50, l.P50, l.P99, r.Duration)
	assertShaperGone(t, r.Testnet)
	assertNothingLeft(t, r.Testnet)
}
