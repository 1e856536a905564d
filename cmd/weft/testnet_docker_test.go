package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// dockerRun runs a docker (or docker-compose) command with a bounded time.
func dockerRun(t *testing.T, timeout time.Duration, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// composeCmd returns how to call Compose here: the docker plugin or the
// standalone docker-compose.
func composeCmd(t *testing.T) []string {
	if _, err := dockerRun(t, 20*time.Second, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	return nil
}

// TestTestnetDockerCompose builds the FROM-scratch image around a static
// weft binary (nothing is pulled), brings up 3 containers from the output
// of `weft testnet compose --nodes 3` on a compose-made internal bridge
// network, and checks that node3, which knows only node1, finds node2
// through the DHT and fetches content added on node2. It is skipped only
// when no Docker engine answers.
func TestTestnetDockerCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs containers")
	}
	if _, err := dockerRun(t, 30*time.Second, nil, "docker", "info"); err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	compose := composeCmd(t)
	if compose == nil {
		t.Fatal("a Docker engine answers but neither 'docker compose' nor docker-compose is installed")
	}
	b := make([]byte, 4)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	image := "weft-testnet-test:" + suffix
	project := "wefttest" + suffix

	// The image: a static binary and deploy/Dockerfile in a context of
	// their own.
	ctxDir := t.TempDir()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(ctxDir, "weft"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	df, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644)
	if out, err := dockerRun(t, 3*time.Minute, nil, "docker", "build", "--pull=false", "-t", image, ctxDir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = dockerRun(t, time.Minute, nil, "docker", "image", "rm", "-f", image) })

	// A subnet no interface or route of this machine uses.
	routes, _ := dockerRun(t, 10*time.Second, nil, "ip", "-4", "route", "show", "table", "all")
	subnet := ""
	for k := int(b[0])%200 + 20; k < 250 && subnet == ""; k++ {
		if !strings.Contains(routes, fmt.Sprintf("10.78.%d.", k)) {
			subnet = fmt.Sprintf("10.78.%d.0/24", k)
		}
	}
	code, yaml, stderr := weftQuiet("testnet", "compose", "--nodes", "3", "--image", image, "--subnet", subnet, "--name", project)
	if code != 0 {
		t.Fatalf("weft testnet compose: %s", stderr)
	}
	file := filepath.Join(t.TempDir(), "compose.yaml")
	os.WriteFile(file, []byte(yaml), 0o644)
	dc := func(timeout time.Duration, args ...string) (string, error) {
		return dockerRun(t, timeout, nil, compose[0], append(append(compose[1:], "-f", file, "-p", project), args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dc(time.Minute, "logs", "--no-color")
			t.Logf("container logs:\n%s", out)
		}
		if _, err := dc(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v", err)
		}
	})
	if out, err := dc(3*time.Minute, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	exe := func(node string, stdin []byte, args ...string) (string, error) {
		return dockerRun(t, 90*time.Second, stdin, "docker", append([]string{"exec", "-i", project + "-" + node, "/weft"}, args...)...)
	}
	ids := map[string]string{}
	for _, n := range []string{"node1", "node2", "node3"} {
		nodetest.WaitFor(t, 60*time.Second, n+" answers on its API", func() bool {
			out, err := exe(n, nil, "id", "--json")
			if err != nil {
				return false
			}
			var id api.ID
			if json.Unmarshal([]byte(out), &id) != nil {
				return false
			}
			ids[n] = id.ID
			return true
		})
	}
	// node3 knows only node1; it finds node2 through the DHT.
	var found string
	nodetest.WaitFor(t, 60*time.Second, "node3 finds node2 through the DHT", func() bool {
		out, err := exe("node3", nil, "dht", "find-peer", ids["node2"])
		if err != nil {
			return false
		}
		found = out
		return strings.Contains(out, "/tcp/4001")
	})
	t.Logf("node3 found node2 at:\n%s", found)
	content := []byte("across containers " + suffix + strings.Repeat("x", 300_000))
	out, err := exe("node2", content, "add", "-")
	if err != nil {
		t.Fatalf("add on node2: %v", err)
	}
	cid := strings.TrimSpace(out)
	got, err := exe("node3", nil, "cat", cid)
	if err != nil {
		t.Fatalf("cat on node3: %v", err)
	}
	if got != string(content) {
		t.Fatalf("node3 read %d bytes, want %d", len(got), len(content))
	}
	peers, _ := exe("node3", nil, "peers")
	if !strings.Contains(peers, ids["node2"]) {
		t.Errorf("node3 is not connected to node2 after the fetch:\n%s", peers)
	}
}
