// Command memprobe shows where an idle weft node's memory goes. It runs
// -nodes real nodes in this one process (repos in a temp dir, 127.0.0.1
// only, every node bootstrapped to the first), waits for their routing
// tables to fill, lets them idle, and then writes a heap profile and the
// runtime's memory statistics, divided per node. The heap profile attributes
// in-use memory to the code that allocated it; a goroutine profile says
// which code the goroutines (and so the stacks) belong to:
//
//	go run ./scripts/bench/memprobe -nodes 20 -idle 30s
//	go tool pprof -top -sample_index=inuse_space REPORT/heap.pprof
//
// With -nodes 1 it describes one node alone. The process's own RSS is
// reported too; it includes one copy of the runtime and binary shared by all
// nodes, so it is not N daemons' RSS.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/proc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "memprobe:", err)
		os.Exit(1)
	}
}

func run() error {
	nodes := flag.Int("nodes", 20, "nodes to run in this process")
	idle := flag.Duration("idle", 30*time.Second, "idle time before the profile")
	out := flag.String("out", "", "report dir (default: a new temp dir, printed)")
	cpuProfile := flag.Bool("cpu", false, "also write a CPU profile of the idle window (cpu.pprof)")
	var sets multiFlag
	flag.Var(&sets, "set", "KEY=VALUE config change for every node (repeatable)")
	flag.Parse()
	if *nodes < 1 || *nodes > 200 {
		return fmt.Errorf("-nodes must be in [1, 200]")
	}
	if *out == "" {
		d, err := os.MkdirTemp("", "weft-memprobe-")
		if err != nil {
			return err
		}
		*out = d
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "weft-memprobe-repos-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	ctx, cancel := context.WithTimeout(context.Background(), *idle+3*time.Minute)
	defer cancel()
	ns, err := startNodes(ctx, work, *nodes, sets)
	defer func() {
		for _, n := range ns {
			n.Close()
		}
	}()
	if err != nil {
		return err
	}
	waitRoutingTables(ns, 60*time.Second)
	fmt.Printf("%d nodes up; idling %s\n", *nodes, *idle)
	if err := idleWindow(ctx, *idle, *out, *cpuProfile); err != nil {
		return err
	}

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rssBefore := selfRSS()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for _, name := range []string{"heap", "goroutine"} {
		if err := writeProfile(name, filepath.Join(*out, name+".pprof")); err != nil {
			return err
		}
	}
	printMemTable(*nodes, before, ms, rssBefore)
	js, _ := json.MarshalIndent(map[string]any{"nodes": *nodes, "idle_s": idle.Seconds(), "before_gc": before, "after_gc": ms, "rss_before_gc": rssBefore}, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "memstats.json"), js, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nheap profile: %s\n  go tool pprof -top -sample_index=inuse_space %s\n", filepath.Join(*out, "heap.pprof"), filepath.Join(*out, "heap.pprof"))
	fmt.Printf("goroutine profile: %s\n  go tool pprof -top %s\n", filepath.Join(*out, "goroutine.pprof"), filepath.Join(*out, "goroutine.pprof"))
	return nil
}

// startNodes starts count nodes with repos under work, each bootstrapped to
// the first, with the KEY=VALUE config changes sets. It returns the nodes
// started so far also on error, for the caller to close.
func startNodes(ctx context.Context, work string, count int, sets []string) ([]*node.Node, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ns []*node.Node
	var seed string
	for i := range count {
		dir := filepath.Join(work, fmt.Sprintf("n%02d", i))
		opts := node.InitOptions{Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: "127.0.0.1:0"}
		if seed != "" {
			opts.Bootstrap = []string{seed}
		}
		if _, err := node.InitRepo(dir, opts); err != nil {
			return ns, err
		}
		if err := applySets(dir, sets); err != nil {
			return ns, err
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := node.Start(sctx, dir, node.Options{Logger: quiet})
		scancel()
		if err != nil {
			return ns, fmt.Errorf("start node %d: %w", i, err)
		}
		ns = append(ns, n)
		if i == 0 {
			h := n.Network().Host
			seed = h.Addrs()[0].String() + "/p2p/" + h.ID().String()
		}
	}
	return ns, nil
}

// applySets writes the KEY=VALUE config changes sets into the repo at dir.
func applySets(dir string, sets []string) error {
	if len(sets) == 0 {
		return nil
	}
	cfg, err := node.ReadConfig(dir)
	if err != nil {
		return err
	}
	for _, kv := range sets {
		k, v, _ := strings.Cut(kv, "=")
		if err := cfg.Set(k, v); err != nil {
			return err
		}
	}
	return node.SaveConfigFile(dir, cfg)
}

// waitRoutingTables waits up to max until every node's routing table holds
// every other node, and says so on stderr if they do not.
func waitRoutingTables(ns []*node.Node, max time.Duration) {
	deadline := time.Now().Add(max)
	for _, n := range ns {
		for n.Network().DHT.RoutingTable().Size() < len(ns)-1 {
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "memprobe: routing tables not full after %s; profiling anyway\n", max)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// idleWindow waits idle (or until ctx ends), with a CPU profile of the
// window in out/cpu.pprof when cpu is set.
func idleWindow(ctx context.Context, idle time.Duration, out string, cpu bool) error {
	if cpu {
		f, err := os.Create(filepath.Join(out, "cpu.pprof"))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			fmt.Printf("CPU profile of the idle window: %s\n", f.Name())
		}()
	}
	select {
	case <-time.After(idle):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeProfile writes the named runtime profile to path.
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s profile: %w", name, err)
	}
	return f.Close()
}

// printMemTable prints where the process's memory is, in total and per node.
func printMemTable(nodes int, before, ms runtime.MemStats, rssBefore int64) {
	per := func(v uint64) string { return fmt.Sprintf("%.2f MiB", float64(v)/float64(nodes)/(1<<20)) }
	tot := func(v uint64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	rows := []struct {
		name string
		v    uint64
	}{
		{"heap in use before GC (HeapInuse)", before.HeapInuse},
		{"heap live after GC (HeapAlloc)", ms.HeapAlloc},
		{"heap spans in use after GC (HeapInuse)", ms.HeapInuse},
		{"heap idle, not returned (HeapIdle-HeapReleased), before GC", before.HeapIdle - before.HeapReleased},
		{"goroutine stacks (StackInuse)", ms.StackInuse},
		{"runtime metadata (MSpan+MCache+GC+Other+BuckHash)", ms.MSpanInuse + ms.MCacheInuse + ms.GCSys + ms.OtherSys + ms.BuckHashSys},
	}
	fmt.Printf("\n%-60s %12s %12s\n", "", "total", "per node")
	for _, r := range rows {
		fmt.Printf("%-60s %12s %12s\n", r.name, tot(r.v), per(r.v))
	}
	fmt.Printf("%-60s %12d %12.0f\n", "goroutines", runtime.NumGoroutine(), float64(runtime.NumGoroutine())/float64(nodes))
	fmt.Printf("%-60s %12s\n", "process RSS before GC (one runtime, shared binary)", tot(uint64(rssBefore)))
	fmt.Printf("%-60s %12s\n", "process RSS after GC + FreeOSMemory", tot(uint64(selfRSS())))
}

// selfRSS is this process's VmRSS (0 if unreadable).
func selfRSS() int64 {
	m, _ := proc.ReadMem(os.Getpid())
	return m.RSS
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*m = append(*m, v)
	return nil
}
