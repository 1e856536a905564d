package simrun

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"
	"testing/synctest"

	"github.com/weft-p2p/weft/node/testnet"
)

var (
	scenario = flag.String("sim.scenario", "", "scenario file to simulate")
	seed     = flag.Int64("sim.seed", 0, "override the scenario's seed")
	report   = flag.String("sim.report", "", "report folder (default ./testnet-report-NAME-sim)")
	dir      = flag.String("sim.dir", "", "folder for the nodes' repos and log (default: a temporary one, removed)")
)

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
