package main

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/tracefile"
)

// stop asks the daemon to shut down through the API (so it flushes its
// spans) and waits for it to exit.
func (d *daemonProc) stop(t *testing.T, dir string) {
	t.Helper()
	if code, _, stderr := weftQuiet("shutdown", "--repo", dir); code != 0 {
		t.Fatalf("shutdown: %s", stderr)
	}
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not stop within 30s:\n%s", d.log())
	}
}

func daemonClient(t *testing.T, dir string) *api.Client {
	t.Helper()
	addr, err := node.ReadAPIAddr(dir)
	if err != nil {
		t.Fatal(err)
	}
	return api.NewClient(addr, node.ReadToken(dir))
}

// swarmAddr is a dialable multiaddr (with /p2p/) of the daemon at dir.
func swarmAddr(t *testing.T, ctx context.Context, c *api.Client) string {
	t.Helper()
	id, err := c.ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range id.Addrs {
		if strings.Contains(a, "/127.0.0.1/tcp/") {
			if !strings.Contains(a, "/p2p/") {
				a += "/p2p/" + id.ID
			}
			return a
		}
	}
	t.Fatalf("no loopback TCP address in %v", id.Addrs)
	return ""
}

func randomFile(t *testing.T, n int) files.Node {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return files.NewBytesFile(b)
}

// TestTraceAcrossThreeNodes runs three real daemons with the file
// exporter. B and C each hold half of a directory (the root block, and
// one of its two files): a fetch of the directory on A can only complete
// by asking both. The CLI's `pin add` on A runs under a TRACEPARENT, as a
// CI job or otel-cli would set it, with OTEL_TRACES_EXPORTER=file. The
// three trace files must then hold one trace under that parent: the CLI's
// span, A's API span under it, its fetch, and its native exchange
// requests to B and to C; B's and C's server spans, each the child of A's
// request span to that node.
func TestTraceAcrossThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three daemons")
	}
	bin := buildWeft(t)
	dirs := map[string]string{}
	procs := map[string]*daemonProc{}
	clients := map[string]*api.Client{}
	for _, name := range []string{"A", "B", "C"} {
		dirs[name] = initRepo(t)
		if code, _, stderr := weft(t, "config", "set", "--repo", dirs[name], "tracing.exporter", "file"); code != 0 {
			t.Fatalf("config set: %s", stderr)
		}
		procs[name] = startDaemon(t, bin, dirs[name])
		clients[name] = daemonClient(t, dirs[name])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b, c := clients["A"], clients["B"], clients["C"]
	ids := map[string]string{}
	for name, cl := range clients {
		id, err := cl.ID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[id.ID] = name
	}
	if _, err := c.Connect(ctx, swarmAddr(t, ctx, b)); err != nil {
		t.Fatalf("connect C to B: %v", err)
	}

	// B adds the directory; C takes file y and the root block from B; B
	// then lets go of y.
	dir := files.NewMapDirectory(map[string]files.Node{"x": randomFile(t, 1<<20), "y": randomFile(t, 1<<20)})
	root, err := b.Add(ctx, dir, nil, nil, nil)
	if err != nil {
		t.Fatalf("add on B: %v", err)
	}
	ls, err := b.Ls(ctx, root)
	if err != nil || len(ls) != 2 {
		t.Fatalf("ls: %v %v", ls, err)
	}
	cids := map[string]string{}
	for _, e := range ls {
		cids[e.Name] = e.CID
	}
	if _, err := c.PinAdd(ctx, cids["y"], true, ""); err != nil {
		t.Fatalf("pin y on C: %v", err)
	}
	if _, err := c.PinAdd(ctx, root, false, ""); err != nil {
		t.Fatalf("pin the root block on C: %v", err)
	}
	if err := b.PinRm(ctx, root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		cid       string
		recursive bool
	}{{cids["x"], true}, {root, false}} {
		if _, err := b.PinAdd(ctx, p.cid, p.recursive, ""); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := b.GC(ctx); err != nil || res.BlocksFreed == 0 {
		t.Fatalf("GC on B freed nothing (%+v, %v): y is still there", res, err)
	}

	for _, p := range []*api.Client{b, c} {
		if _, err := a.Connect(ctx, swarmAddr(t, ctx, p)); err != nil {
			t.Fatalf("connect A: %v", err)
		}
	}
	// The traced fetch: `weft pin add` on A, under the caller's trace,
	// recording its own span (into A's repo: the file exporter).
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	t.Setenv("TRACEPARENT", "00-"+traceID+"-"+parentID+"-01")
	t.Setenv("OTEL_TRACES_EXPORTER", "file")
	if code, _, stderr := weft(t, "pin", "add", "--repo", dirs["A"], root); code != 0 {
		t.Fatalf("pin add on A: %s", stderr)
	}
	os.Unsetenv("TRACEPARENT")
	os.Unsetenv("OTEL_TRACES_EXPORTER")

	spans := map[string][]tracefile.Span{}
	for name, d := range dirs {
		procs[name].stop(t, d)
		ss, err := tracefile.ReadFile(filepath.Join(d, node.DefaultTraceFile), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if s.TraceID == traceID {
				spans[name] = append(spans[name], s)
			}
		}
	}
	for _, name := range []string{"A", "B", "C"} {
		if len(spans[name]) == 0 {
			t.Fatalf("node %s recorded no span of trace %s", name, traceID)
		}
	}
	byID := map[string]tracefile.Span{}
	for _, ss := range spans {
		for _, s := range ss {
			if _, dup := byID[s.SpanID]; dup {
				t.Fatalf("span ID %s twice", s.SpanID)
			}
			byID[s.SpanID] = s
		}
	}
	find := func(node, name string) []tracefile.Span {
		var out []tracefile.Span
		for _, s := range spans[node] {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return out
	}
	one := func(node, name string) tracefile.Span {
		t.Helper()
		ss := find(node, name)
		if len(ss) != 1 {
			t.Fatalf("%s: %d %q spans, want 1: %+v", node, len(ss), name, spans[node])
		}
		return ss[0]
	}
	cli := one("A", "weft pin add")
	if cli.ParentID != parentID || !cli.Remote {
		t.Errorf("the CLI's span has parent %s (remote %v), want TRACEPARENT's %s", cli.ParentID, cli.Remote, parentID)
	}
	apiSpan := one("A", "api POST /api/v1/pin/add")
	if apiSpan.ParentID != cli.SpanID || !apiSpan.Remote {
		t.Errorf("A's API span has parent %s (remote %v), want the CLI's span %s", apiSpan.ParentID, apiSpan.Remote, cli.SpanID)
	}
	fetch := one("A", "weft.fetch")
	if fetch.ParentID != apiSpan.SpanID {
		t.Errorf("weft.fetch is not under the API span")
	}
	native := one("A", "weft.fetch.native")
	if native.ParentID != fetch.SpanID {
		t.Errorf("weft.fetch.native is not under weft.fetch")
	}
	if bs := find("A", "weft.fetch.bitswap"); len(bs) != 0 {
		t.Errorf("the fetch fell back to Bitswap: the native exchange should have done it all")
	}
	// A's request spans, by the peer asked.
	reqTo := map[string]map[string]bool{} // node -> request span IDs
	for _, s := range find("A", "weft.exchange.request") {
		if s.ParentID != native.SpanID {
			t.Errorf("request span %s is not under weft.fetch.native", s.SpanID)
		}
		to := ids[s.Attrs["peer"]]
		if reqTo[to] == nil {
			reqTo[to] = map[string]bool{}
		}
		reqTo[to][s.SpanID] = true
	}
	for _, name := range []string{"B", "C"} {
		if len(reqTo[name]) == 0 {
			t.Errorf("A sent no traced request to %s (requests: %v)", name, reqTo)
		}
		serves := find(name, "weft.exchange.serve")
		if len(serves) == 0 {
			t.Errorf("%s recorded no weft.exchange.serve span in the trace", name)
		}
		for _, s := range serves {
			if !reqTo[name][s.ParentID] || !s.Remote {
				t.Errorf("%s's serve span %s has parent %s (remote %v), not one of A's requests to %s", name, s.SpanID, s.ParentID, s.Remote, name)
			}
			if s.Start.Before(apiSpan.Start) || s.End.After(apiSpan.End.Add(time.Second)) {
				t.Errorf("%s's serve span [%v, %v] lies outside A's API span [%v, %v]", name, s.Start, s.End, apiSpan.Start, apiSpan.End)
			}
		}
	}
	// Every span of the trace hangs off the caller's span through spans
	// that are all in the files.
	for _, s := range byID {
		for hops := 0; s.ParentID != parentID; hops++ {
			p, ok := byID[s.ParentID]
			if !ok || hops > 20 {
				t.Fatalf("span %s (%s on %s) does not lead back to the caller's span", s.SpanID, s.Name, s.Node)
			}
			s = p
		}
	}
	t.Logf("trace %s: %d spans on A, %d on B, %d on C", traceID, len(spans["A"]), len(spans["B"]), len(spans["C"]))
}

// TestTracingOffDaemon runs a daemon with the default config (tracing off)
// through an add and a traced API call, and checks nothing was written.
func TestTracingOffDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a daemon")
	}
	bin := buildWeft(t)
	dir := initRepo(t)
	d := startDaemon(t, bin, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := daemonClient(t, dir)
	root, err := c.Add(ctx, randomFile(t, 256<<10), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if code, _, stderr := weft(t, "pin", "add", "--repo", dir, root); code != 0 {
		t.Fatalf("pin add: %s", stderr)
	}
	d.stop(t, dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), "trace") {
			t.Errorf("tracing is off, yet the repo has %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, node.DefaultTraceFile)); !os.IsNotExist(err) {
		t.Errorf("%s: %v", node.DefaultTraceFile, err)
	}
}
