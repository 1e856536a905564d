package node_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReadyz: a node whose bootstrap peer is not up yet is healthy but not
// ready; once it has a peer, /readyz answers 200.
func TestReadyz(t *testing.T) {
	seedDir := nodetest.Init(t, nodetest.Options{})
	// Reserve the seed's address by starting it once, then stop it.
	seed := nodetest.StartRepo(t, seedDir, nil)
	seedAddr := nodetest.Addr(t, seed)
	if err := seed.Close(); err != nil {
		t.Fatal(err)
	}
	n := nodetest.Start(t, nodetest.Options{Bootstrap: []string{seedAddr}})
	base := "http://" + n.APIAddr()
	if got := status(t, base+"/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz = %d", got)
	}
	if got := status(t, base+"/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any peer = %d, want 503", got)
	}
	// Bring the seed back on the same address; the node's bootstrap loop
	// reaches it.
	nodetest.StartRepo(t, seedDir, func(c *node.Config) {
		c.Addresses.Swarm = []string{seedAddr[:len(seedAddr)-len("/p2p/")-len(seed.ID().String())]}
	})
	nodetest.WaitFor(t, 20*time.Second, "/readyz answers 200", func() bool {
		return status(t, base+"/readyz") == http.StatusOK
	})
}
