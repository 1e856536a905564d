package simrun

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"testing"
	"testing/cryptotest"
	"testing/synctest"
	"time"

	"github.com/weft-p2p/weft/node/testnet"
)

var (
	scenario = flag.String("sim.scenario", "", "scenario file to simulate")
	seed     = flag.Int64("sim.seed", 0, "override the scenario's seed")
	report   = flag.String("sim.report", "", "report folder (default ./testnet-report-NAME-sim)")
	dir      = flag.String("sim.dir", "", "folder for the nodes' repos and log (default: a temporary one, removed)")
	maxMem   = flag.Int64("sim.maxmem", 16<<30, "abort the run (exit 3) when the process holds more memory than this many bytes; 0: no limit")
	profDir  = flag.String("sim.profile", "", "write heap and goroutine profiles into this folder at the -sim.profile-at wall times and once when the process first holds 90% of -sim.maxmem (*-near-limit.prof), and a CPU profile (cpu.prof) from the start to the last of the -sim.profile-at times")
	gcPct    = flag.Int("sim.gogc", 200, "the collector's GOGC while the simulation runs (the GOGC variable, when set, wins); with a hundred thousand goroutines or more, each collection scans every stack, so fewer and larger cycles; the heap stays under -sim.maxmem*3/4")
	profAt   = flag.String("sim.profile-at", "60s", "comma-separated wall-clock times after the start for -sim.profile")
	cpuFrom  = flag.Duration("sim.cpu-from", 0, "with -sim.profile: start the CPU profile this long after the start (wall clock) instead of at once, to profile a later phase alone")
)

// watch runs outside the simulation's bubble, on the machine's clock,
// until stop is called: it aborts the process when it holds more than
// -sim.maxmem (a simulation too big for the machine must not take the
// memory of everything else on it) and writes the -sim.profile profiles.
func watch(t *testing.T) (stop func()) {
	t.Helper()
	var at []time.Duration
	var stopCPU func()
	if *profDir != "" {
		for _, f := range strings.Split(*profAt, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("-sim.profile-at: %v", err)
			}
			at = append(at, d)
		}
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	startCPU := func() {
		f, err := os.Create(filepath.Join(*profDir, "cpu.prof"))
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "weft-testnet-sim: CPU profile: %v\n", err)
			return
		}
		stopCPU = func() { pprof.StopCPUProfile(); f.Close() }
	}
	cpuPending := *profDir != ""
	if cpuPending && *cpuFrom <= 0 {
		startCPU()
		cpuPending = false
	}
	nearSaid := false
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				if stopCPU != nil {
					stopCPU()
				}
				return
			case <-tick.C:
			}
			if cpuPending && time.Since(start) >= *cpuFrom {
				startCPU()
				cpuPending = false
			}
			metrics.Read(samples)
			held := int64(samples[0].Value.Uint64() - samples[1].Value.Uint64())
			// Near the limit, say what holds the memory (once): a run
			// aborted for its memory otherwise leaves nothing to learn
			// from.
			if *maxMem > 0 && *profDir != "" && !nearSaid && held > *maxMem/10*9 {
				nearSaid = true
				fmt.Fprintf(os.Stderr, "weft-testnet-sim: the process holds %d MiB, 90%% of -sim.maxmem: writing near-limit profiles\n", held>>20)
				writeProfile(filepath.Join(*profDir, "heap-near-limit.prof"), "heap")
				writeProfile(filepath.Join(*profDir, "goroutine-near-limit.prof"), "goroutine")
			}
			if *maxMem > 0 && held > *maxMem {
				fmt.Fprintf(os.Stderr, "weft-testnet-sim: the process holds %d MiB, over -sim.maxmem %d MiB: aborting\n", held>>20, *maxMem>>20)
				os.Exit(3)
			}
			for len(at) > 0 && time.Since(start) >= at[0] {
				name := fmt.Sprintf("%03.0fs", at[0].Seconds())
				writeProfile(filepath.Join(*profDir, "heap-"+name+".prof"), "heap")
				writeProfile(filepath.Join(*profDir, "goroutine-"+name+".prof"), "goroutine")
				at = at[1:]
				if len(at) == 0 && stopCPU != nil {
					stopCPU()
					stopCPU = nil
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

func writeProfile(path, name string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile: %v\n", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fmt.Fprintf(os.Stderr, "profile %s: %v\n", name, err)
	}
}

// TestRun simulates the scenario given by -sim.scenario; it is how `weft
// testnet run --mode sim` runs one (see the package comment).
func TestRun(t *testing.T) {
	if *scenario == "" {
		t.Skip("no -sim.scenario: this test is the driver of 'weft testnet run --mode sim'; TestSimFeed100 in node/testnet is the simulation's test")
	}
	sc, text, err := testnet.LoadScenario(*scenario)
	if err != nil {
		t.Fatal(err)
	}
	if *seed != 0 {
		sc.Seed = *seed
	}
	rdir := *report
	if rdir == "" {
		rdir = "testnet-report-" + sc.Name + "-sim"
	}
	if rdir, err = filepath.Abs(rdir); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(*scenario)
	ndir := *dir
	if ndir == "" {
		ndir = filepath.Join(t.TempDir(), "net")
	}
	// crypto/rand from the seed too (keys, nonces, libp2p's choices), so
	// runs differ only by goroutine scheduling and map order.
	cryptotest.SetGlobalRandom(t, uint64(sc.Seed))
	defer watch(t)()
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(*gcPct))
	}
	if *maxMem > 0 && os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(*maxMem * 3 / 4))
	}
	synctest.Test(t, func(t *testing.T) {
		rep, err := testnet.RunSim(context.Background(), sc, testnet.RunOptions{
			Options:   testnet.Options{Dir: ndir, Progress: os.Stderr},
			ReportDir: rdir, ScenarioPath: path, ScenarioText: text,
		})
		if rep != nil {
			fmt.Fprint(os.Stdout, rep.Summary())
			fmt.Fprintf(os.Stdout, "\nreport: %s (report.json, summary.txt, latency.svg, delivery.svg)\n", rdir)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}
