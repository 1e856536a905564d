package main

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// TestVersion: `weft version` and `weft --version` print the daemon
// version, the module version, the VCS revision (unknown in a test binary,
// which Go does not stamp) and the Go release.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, stderr := weft(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		for _, want := range []string{"weft " + node.Version, "module ", "revision ", runtime.Version()} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: %q lacks %q", args, out, want)
			}
		}
	}
}

// TestProvidersNoneExits1: `weft providers` of a CID nobody provides
// exits 1 and says so; of one that is provided, exits 0 with the peer.
func TestProvidersNoneExits1(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := a.Add(ctx, files.NewBytesFile([]byte("provided by a")), unixfs.DefaultOptions(), true, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody has this one.
	code, out, stderr := weft(t, "providers", "--api", b.APIAddr(), "--token", b.Token(), "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	if code != 1 || !strings.Contains(stderr, "no providers found") {
		t.Fatalf("nobody: exit %d, out %q, err %q", code, out, stderr)
	}
	nodetest.WaitFor(t, 30*time.Second, "b finds a as provider", func() bool {
		code, out, _ := weft(t, "providers", "--api", b.APIAddr(), "--token", b.Token(), c.String())
		return code == 0 && strings.Contains(out, a.ID().String())
	})
}

// TestFollowNoRecordYet: following a name nobody has published says so,
// instead of "(at seq 0)".
func TestFollowNoRecordYet(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{})
	keys, err := b.Keys()
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := weft(t, "feed", "follow", "--api", a.APIAddr(), "--token", a.Token(), keys[0].Feed)
	if code != 0 || !strings.Contains(out, "(no record yet)") || strings.Contains(out, "seq 0") {
		t.Fatalf("exit %d, out %q, err %q", code, out, stderr)
	}
}
