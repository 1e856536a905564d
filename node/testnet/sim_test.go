package testnet

import (
	"context"
	"os"
	"testing"
	"testing/synctest"
)

// simFeed is a feed scenario on simulated links: every node follows one
// publisher, which publishes updates; every follower must get all of them.
func simScenario(t *testing.T, text string) *Scenario {
	t.Helper()
	sc, err := ParseScenario([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Validate(); err != nil {
		t.Fatal(err)
	}
	return sc
}

const simFeed10 = `
name = "sim-feed-10"
seed = 7
timeout = "5m"
[network]
topology = "random"
degree = 3
[network.link]
latency = "20ms"
jitter = "5ms"
[[groups]]
name = "n"
count = 10
[[steps]]
action = "wait-until"
check = "peers"
min = 2
deadline = "60s"
[[steps]]
action = "follow"
publisher = "n1"
key = "blog"
nodes = "all"
as = "blog"
[[steps]]
action = "sleep"
duration = "5s"
[[steps]]
action = "publish"
node = "n1"
key = "blog"
count = 10
interval = "250ms"
size = "1KiB"
[[steps]]
action = "wait-until"
check = "feed-seq"
feed = "$blog"
seq = 10
deadline = "60s"
[[steps]]
action = "assert"
check = "delivery"
feed = "$blog"
min = 1.0
`

func TestSimFeedSmall(t *testing.T) {
	sc := simScenario(t, simFeed10)
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		rep, err := RunSim(context.Background(), sc, RunOptions{Options: Options{Dir: dir + "/net", Progress: os.Stderr}, ReportDir: dir + "/report"})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if rep.Simulated == nil || len(rep.Feeds) != 1 || rep.Feeds[0].Delivery.Ratio != 1 {
			t.Fatalf("report: %+v", rep)
		}
		t.Logf("%s", rep.Summary())
	})
}
