// Package kubo runs Kubo (ipfs) as a benchmark baseline. Every Kubo process
// runs with the test profile (127.0.0.1 only, no bootstrap list, no mDNS,
// no AutoConf, no delegated routers or publishers) and telemetry off, and,
// as a second wall, inside a network namespace that holds nothing but a
// loopback interface: nothing a Kubo daemon tries can leave the machine.
// Creating the namespace needs root.
package kubo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weft-p2p/weft/node/proc"
)

var nets atomic.Int64

// Net is a loopback-only network namespace to run Kubo in.
type Net struct {
	Bin string // the ipfs binary
	NS  string // the namespace's name
}

// NewNet creates the namespace (with its loopback up) for Kubo binary bin.
func NewNet(ctx context.Context, bin string) (*Net, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("kubo: running Kubo in a loopback-only network namespace needs root")
	}
	k := &Net{Bin: bin, NS: fmt.Sprintf("weft-bench-kubo-%d-%d", os.Getpid(), nets.Add(1))}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", k.NS).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kubo: create network namespace %s: %w: %s", k.NS, err, out)
	}
	if out, err := exec.CommandContext(ctx, "ip", "-n", k.NS, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		k.Close()
		return nil, fmt.Errorf("kubo: loopback up in %s: %w: %s", k.NS, err, out)
	}
	return k, nil
}

// Close removes the namespace (stop the daemons in it first).
func (k *Net) Close() error {
	if out, err := exec.Command("ip", "netns", "del", k.NS).CombinedOutput(); err != nil {
		return fmt.Errorf("kubo: remove network namespace %s: %w: %s", k.NS, err, out)
	}
	return nil
}

// Command is ipfs args for repo ("" for none) inside the namespace. ip
// netns exec replaces itself with Kubo, so a started command's PID is
// Kubo's.
func (k *Net) Command(ctx context.Context, repo string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", k.NS, k.Bin}, args...)...)
	cmd.Env = append(os.Environ(), "IPFS_TELEMETRY=off")
	if repo != "" {
		cmd.Env = append(cmd.Env, "IPFS_PATH="+repo)
	}
	return cmd
}

// Run runs a short Kubo command (not the daemon), bounded to 30s, and
// returns its standard output.
func (k *Net) Run(ctx context.Context, repo string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := k.Command(ctx, repo, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("ipfs %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("ipfs %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Version is the Kubo version.
func (k *Net) Version(ctx context.Context) (string, error) {
	v, err := k.Run(ctx, "", "version", "-n")
	return strings.TrimSpace(v), err
}

// Init makes a repo with the test profile, bootstrapping to bootstrap (a
// multiaddr with /p2p/, or "" for none).
func (k *Net) Init(ctx context.Context, repo, bootstrap string) error {
	if _, err := k.Run(ctx, repo, "init", "--profile", "test", "--empty-repo"); err != nil {
		return err
	}
	if bootstrap == "" {
		return nil
	}
	_, err := k.Run(ctx, repo, "config", "--json", "Bootstrap", fmt.Sprintf("[%q]", bootstrap))
	return err
}

// StartDaemon starts "ipfs daemon" on repo, its output to log (nil:
// discarded). If this program dies without stopping it, the kernel sends
// it SIGTERM.
func (k *Net) StartDaemon(repo string, log io.Writer) (*proc.Process, error) {
	cmd := k.Command(context.Background(), repo, "daemon")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p, err := proc.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("kubo: start daemon on %s: %w", repo, err)
	}
	return p, nil
}

// WaitReady waits until daemon p on repo answers "ipfs id", up to a minute,
// or until p exits or ctx ends.
func (k *Net) WaitReady(ctx context.Context, repo string, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if _, err := os.Stat(filepath.Join(repo, "api")); err == nil {
			if _, err := k.Run(ctx, repo, "id"); err == nil {
				return nil
			}
		}
		select {
		case <-p.Done():
			return fmt.Errorf("kubo daemon %s exited: %v", repo, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("kubo daemon %s: waiting for it to answer: %w", repo, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addr returns the daemon's /ip4/127.0.0.1/tcp address with its peer ID.
func (k *Net) Addr(ctx context.Context, repo string) (string, error) {
	out, err := k.Run(ctx, repo, "id")
	if err != nil {
		return "", err
	}
	var id struct{ Addresses []string }
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		return "", fmt.Errorf("ipfs id: %w", err)
	}
	for _, a := range id.Addresses {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a, nil
		}
	}
	return "", fmt.Errorf("kubo daemon %s has no /ip4/127.0.0.1/tcp address: %v", repo, id.Addresses)
}
