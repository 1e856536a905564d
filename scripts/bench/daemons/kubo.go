package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weft-p2p/weft/node/proc"
)

// (d) Kubo baseline: the same idle swarm of Kubo daemons, measured the same
// way, so the swarm figures of (c) have their baseline from the same run.
//
// Kubo is started with its "test" profile (127.0.0.1 only, no bootstrap
// list, no mDNS, no AutoConf, no delegated routers or publishers) and
// telemetry off, and, as a second wall, every Kubo process runs in a network
// namespace of its own that holds nothing but a loopback interface: nothing
// it might try can leave the machine. That takes root; without it the
// baseline is skipped with a message.

// KuboResult is (d): an idle swarm of Kubo daemons.
type KuboResult struct {
	Binary  string `json:"binary"`
	Version string `json:"version"`
	*SwarmResult
}

// kuboSwarm runs b.o.nodes Kubo daemons bootstrapped to the first, in one
// loopback-only network namespace, and measures them over the idle window.
func (b *bench) kuboSwarm(ctx context.Context) (*KuboResult, error) {
	if os.Geteuid() != 0 {
		fmt.Println("(d) Kubo baseline skipped: it runs Kubo in a loopback-only network namespace, which needs root")
		return nil, nil
	}
	n := b.o.nodes
	ns := fmt.Sprintf("weft-bench-kubo-%d", os.Getpid())
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w: %s", ns, err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	if out, err := exec.CommandContext(ctx, "ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("loopback up in %s: %w: %s", ns, err, out)
	}
	k := &kubo{bin: b.o.kubo, ns: ns}
	ver, err := k.run(ctx, "", "version", "-n")
	if err != nil {
		return nil, err
	}
	r := &KuboResult{Binary: b.o.kubo, Version: strings.TrimSpace(ver), SwarmResult: &SwarmResult{Nodes: n}}
	fmt.Printf("(d) Kubo baseline: %d Kubo %s daemons bootstrapped to the first (loopback only, in namespace %s), %s idle window\n",
		n, r.Version, ns, b.o.idle)

	ds := make([]*daemon, 0, n)
	defer func() { b.stopMany(ds) }()
	var seed string
	for i := range n {
		repo := filepath.Join(b.o.work, fmt.Sprintf("kubo-%02d", i))
		if _, err := k.run(ctx, repo, "init", "--profile", "test", "--empty-repo"); err != nil {
			return r, err
		}
		if seed != "" {
			if _, err := k.run(ctx, repo, "config", "--json", "Bootstrap", fmt.Sprintf("[%q]", seed)); err != nil {
				return r, err
			}
		}
		d, err := b.startKubo(k, repo, fmt.Sprintf("kubo-%02d", i))
		if err != nil {
			return r, err
		}
		ds = append(ds, d)
		if err := k.waitReady(ctx, d, 60*time.Second); err != nil {
			return r, err
		}
		if i == 0 {
			if seed, err = k.seedAddr(ctx, repo); err != nil {
				return r, err
			}
		}
	}
	fmt.Printf("    %d Kubo daemons ready; waiting up to %s for each to be connected to the %d others\n", n, b.o.formWait, n-1)
	t0 := time.Now()
	fctx, cancel := context.WithTimeout(ctx, b.o.formWait)
	defer cancel()
	for {
		r.PeersMin, r.PeersMedian = k.peers(fctx, ds)
		if r.PeersMin >= n-1 {
			r.Formed = true
			break
		}
		if fctx.Err() != nil {
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			fmt.Printf("    not fully connected after %s (fewest peers %d of %d); measuring anyway\n", b.o.formWait, r.PeersMin, n-1)
			break
		}
		select {
		case <-fctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.FormationS = time.Since(t0).Seconds()
	if r.Formed {
		fmt.Printf("    connected in %.1fs (peers per node: min %d, median %d)\n", r.FormationS, r.PeersMin, r.PeersMedian)
	}
	procs, totals, err := b.measureIdle(ctx, ds)
	if err != nil {
		return r, err
	}
	summarizeSwarm(r.SwarmResult, procs, totals)
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	r.PeersMin, r.PeersMedian = k.peers(sctx, ds)
	return r, nil
}

// kubo runs the Kubo binary inside the namespace.
type kubo struct {
	bin string
	ns  string
}

func (k *kubo) command(ctx context.Context, repo string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", k.ns, k.bin}, args...)...)
	cmd.Env = append(os.Environ(), "IPFS_TELEMETRY=off")
	if repo != "" {
		cmd.Env = append(cmd.Env, "IPFS_PATH="+repo)
	}
	return cmd
}

// run runs a short Kubo command (not the daemon), bounded to 30s.
func (k *kubo) run(ctx context.Context, repo string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := k.command(ctx, repo, args...)
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

// startKubo launches "ipfs daemon" on repo (ip netns exec replaces itself
// with Kubo, so the PID is Kubo's). It is registered for stopAll before it
// returns.
func (b *bench) startKubo(k *kubo, repo, name string) (*daemon, error) {
	logf, err := os.Create(repo + ".log")
	if err != nil {
		return nil, err
	}
	cmd := k.command(context.Background(), repo, "daemon")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p, err := proc.Start(cmd)
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("start Kubo daemon %s: %w", name, err)
	}
	d := &daemon{name: name, repo: repo, p: p, pid: p.PID}
	b.mu.Lock()
	b.procs[d.pid] = d
	b.mu.Unlock()
	b.recordPID(d.pid)
	return d, nil
}

// waitReady waits until the daemon answers "ipfs id".
func (k *kubo) waitReady(ctx context.Context, d *daemon, deadline time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	for {
		if _, err := os.Stat(filepath.Join(d.repo, "api")); err == nil {
			if _, err := k.run(ctx, d.repo, "id"); err == nil {
				return nil
			}
		}
		if err := pause(ctx, d, 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s: waiting for Kubo to answer: %w", d.name, err)
		}
	}
}

// seedAddr returns the seed's /ip4/127.0.0.1/tcp address with its peer ID.
func (k *kubo) seedAddr(ctx context.Context, repo string) (string, error) {
	out, err := k.run(ctx, repo, "id")
	if err != nil {
		return "", err
	}
	var id struct {
		ID        string
		Addresses []string
	}
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		return "", fmt.Errorf("ipfs id: %w", err)
	}
	for _, a := range id.Addresses {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a, nil
		}
	}
	return "", fmt.Errorf("Kubo seed has no /ip4/127.0.0.1/tcp address: %v", id.Addresses)
}

// peers returns the fewest and the median connected peers over ds (0 for
// a daemon that does not answer).
func (k *kubo) peers(ctx context.Context, ds []*daemon) (lo, med int) {
	counts := make([]float64, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() {
			out, err := k.run(ctx, d.repo, "swarm", "peers")
			if err == nil {
				counts[i] = float64(len(strings.Fields(out)))
			}
		})
	}
	wg.Wait()
	l, _ := minMax(counts)
	return int(l), int(median(counts))
}
