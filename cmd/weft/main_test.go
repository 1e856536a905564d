package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// weft runs the CLI in-process and returns its exit code, stdout and stderr.
func weft(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// snapshot records every file of a repo except the lock and store, to show
// that a failed command changed nothing.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, f := range []string{node.ConfigFile, node.IdentityFile, node.TokenFile, node.SwarmKeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err == nil {
			m[f] = string(b)
		}
	}
	return m
}

func sameSnapshot(t *testing.T, a, b map[string]string) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("repo files changed: %d -> %d", len(a), len(b))
	}
	for k, v := range a {
		if b[k] != v {
			t.Fatalf("repo file %s changed", k)
		}
	}
}

func freePort(t *testing.T) (string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Addr().String(), func() { l.Close() }
}

func initRepo(t *testing.T, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	args := append([]string{"init", "--repo", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"}, extra...)
	if code, _, stderr := weft(t, args...); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	return dir
}

// TestErrors checks that each common mistake gives a non-zero exit, one line
// on stderr that says what to do, and leaves the repo as it was.
func TestErrors(t *testing.T) {
	running := nodetest.Start(t, nodetest.Options{})
	runningDir := running.Repo().Path
	busyAPI, release := freePort(t)
	defer release()

	cases := []struct {
		name  string
		setup func(t *testing.T) (dir string, args []string)
		want  string // substring of the one-line error
	}{
		{"unknown config key", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			return d, []string{"config", "set", "--repo", d, "swarm.no_such_key", "1"}
		}, "unknown config key"},
		{"invalid config value", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			return d, []string{"config", "set", "--repo", d, "dht.mode", "sideways"}
		}, "dht.mode"},
		{"bad listen multiaddr at init", func(t *testing.T) (string, []string) {
			d := filepath.Join(t.TempDir(), "r")
			return d, []string{"init", "--repo", d, "--listen", "/ip4/not-an-ip/tcp/1"}
		}, "bad multiaddr"},
		{"bad multiaddr to connect", func(t *testing.T) (string, []string) {
			return runningDir, []string{"connect", "--repo", runningDir, "/ip4/1.2.3/tcp/x"}
		}, "bad multiaddr"},
		{"bad peer to find", func(t *testing.T) (string, []string) {
			return runningDir, []string{"dht", "find-peer", "--repo", runningDir, "not-a-peer"}
		}, "bad peer ID"},
		{"API port in use", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			weft(t, "config", "set", "--repo", d, "addresses.api", busyAPI)
			return d, []string{"daemon", "--repo", d}
		}, "address already in use"},
		{"swarm port in use", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			weft(t, "config", "set", "--repo", d, "addresses.swarm", `["/ip4/127.0.0.1/tcp/`+strings.Split(busyAPI, ":")[1]+`"]`)
			return d, []string{"daemon", "--repo", d}
		}, "already in use"},
		{"missing repo", func(t *testing.T) (string, []string) {
			d := filepath.Join(t.TempDir(), "nothing")
			return d, []string{"daemon", "--repo", d}
		}, "weft init"},
		{"locked repo", func(t *testing.T) (string, []string) {
			return runningDir, []string{"daemon", "--repo", runningDir}
		}, "weft shutdown"},
		{"daemon not running", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			return d, []string{"id", "--repo", d}
		}, "weft daemon"},
		{"init twice", func(t *testing.T) (string, []string) {
			d := initRepo(t)
			return d, []string{"init", "--repo", d}
		}, "already initialised"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, args := tc.setup(t)
			before := snapshot(t, dir)
			code, _, stderr := weft(t, args...)
			if code == 0 {
				t.Fatalf("exit 0, want failure")
			}
			line := strings.TrimRight(stderr, "\n")
			if strings.Contains(line, "\n") {
				t.Fatalf("error is not one line: %q", stderr)
			}
			if !strings.HasPrefix(line, "weft: ") || !strings.Contains(line, tc.want) {
				t.Fatalf("error %q does not contain %q", line, tc.want)
			}
			sameSnapshot(t, before, snapshot(t, dir))
			if _, err := os.Stat(filepath.Join(dir, node.ConfigFile)); err == nil {
				if _, err := node.ReadConfig(dir); err != nil {
					t.Fatalf("repo damaged: %v", err)
				}
			}
		})
	}
	// The daemon whose repo others tried to open still answers.
	if code, out, stderr := weft(t, "id", "--repo", runningDir); code != 0 || !strings.Contains(out, running.ID().String()) {
		t.Fatalf("running daemon after errors: exit %d %s %s", code, out, stderr)
	}
}

func TestInitAndConfig(t *testing.T) {
	dir := initRepo(t)
	st, err := os.Stat(filepath.Join(dir, node.IdentityFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity.key mode: %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(dir, node.TokenFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("api.token mode: %v", err)
	}
	code, out, _ := weft(t, "config", "show", "--repo", dir)
	if code != 0 || !strings.Contains(out, "# ") || !strings.Contains(out, "protocol_prefix") {
		t.Fatalf("config show: %d %s", code, out)
	}
	if code, _, e := weft(t, "config", "set", "--repo", dir, "dht.mode", "client"); code != 0 {
		t.Fatalf("config set: %s", e)
	}
	if code, out, _ := weft(t, "config", "get", "--repo", dir, "dht.mode"); code != 0 || strings.TrimSpace(out) != `'client'` && strings.TrimSpace(out) != `"client"` {
		t.Fatalf("config get: %q", out)
	}
	if code, _, e := weft(t, "config", "set", "--repo", dir, "store.max_bytes", "64MiB"); code != 0 {
		t.Fatalf("config set size: %s", e)
	}
	cfg, err := node.ReadConfig(dir)
	if err != nil || cfg.Store.MaxBytes != 64<<20 {
		t.Fatalf("max_bytes: %v %v", cfg.Store.MaxBytes, err)
	}
	// A private swarm: init with a new key writes swarm.key.
	priv := initRepo(t, "--new-swarm-key")
	if _, err := os.Stat(filepath.Join(priv, node.SwarmKeyFile)); err != nil {
		t.Fatalf("swarm.key: %v", err)
	}
}
