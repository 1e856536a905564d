// Package nodetest starts real weft nodes inside a test: real libp2p hosts on
// 127.0.0.1, real Badger stores in t.TempDir(), real HTTP APIs. Every node is
// closed by t.Cleanup.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
)

// Options shape a test node. The zero value is a local-profile node on
// 127.0.0.1 with random ports and short intervals.
type Options struct {
	Dir       string             // repo dir (default: a new t.TempDir())
	Bootstrap []string           // bootstrap multiaddrs
	SwarmKey  []byte             // makes the node private
	QUIC      bool               // also listen on QUIC
	Tune      func(*node.Config) // last word on the config
	Init      *node.InitOptions  // override init options entirely
}

// Logger is the logger test nodes use: quiet unless WEFT_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("WEFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Init creates a repo for a test node and returns its directory.
func Init(t testing.TB, o Options) string {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	io := node.InitOptions{
		Listen:    []string{"/ip4/127.0.0.1/tcp/0"},
		API:       "127.0.0.1:0",
		Bootstrap: o.Bootstrap,
		SwarmKey:  o.SwarmKey,
	}
	if o.QUIC {
		io.Listen = append(io.Listen, "/ip4/127.0.0.1/udp/0/quic-v1")
	}
	if o.Init != nil {
		io = *o.Init
	}
	if _, err := node.InitRepo(dir, io); err != nil {
		t.Fatalf("init repo: %v", err)
	}
	return dir
}

// Start initialises (if needed) and starts a node, closed on cleanup.
func Start(t testing.TB, o Options) *node.Node {
	t.Helper()
	if o.Dir == "" {
		o.Dir = Init(t, o)
	} else if _, err := os.Stat(o.Dir + "/" + node.ConfigFile); err != nil {
		Init(t, o)
	}
	return StartRepo(t, o.Dir, o.Tune)
}

// StartRepo starts a node on an existing repo, closed on cleanup.
func StartRepo(t testing.TB, dir string, tune func(*node.Config)) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, dir, node.Options{Logger: Logger(), Tune: func(c *node.Config) {
		c.DHT.BootstrapInterval = node.Duration(time.Second)
		c.Swarm.DialTimeout = node.Duration(5 * time.Second)
		if tune != nil {
			tune(c)
		}
	}})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return n
}

// Client returns an API client for n.
func Client(n *node.Node) *api.Client { return api.NewClient(n.APIAddr(), n.Token()) }

// Addr returns a dialable multiaddr of n (with /p2p/ID).
func Addr(t testing.TB, n *node.Node) string {
	t.Helper()
	h := n.Network().Host
	for _, a := range h.Addrs() {
		return a.String() + "/p2p/" + h.ID().String()
	}
	t.Fatal("node has no listen address")
	return ""
}

// AddrInfo returns n's peer.AddrInfo.
func AddrInfo(n *node.Node) peer.AddrInfo {
	h := n.Network().Host
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

// Connected reports whether a has a live connection to b.
func Connected(a, b *node.Node) bool {
	return a.Network().Host.Network().Connectedness(b.ID()) == network.Connected
}

// WaitFor polls cond every 20ms until it holds or the deadline passes, then
// fails the test with msg.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
