package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/weft-p2p/weft/scripts/bench/internal/kubo"
)

// (d) Kubo baseline: the same idle swarm of Kubo daemons, measured the same
// way, so the swarm figures of (c) have their baseline from the same run.
// Kubo runs as package kubo sets it up (test profile, telemetry off, a
// loopback-only network namespace); without root the baseline is skipped
// with a message.

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
	k, err := kubo.NewNet(ctx, b.o.kubo)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	ver, err := k.Version(ctx)
	if err != nil {
		return nil, err
	}
	n := b.o.nodes
	r := &KuboResult{Binary: b.o.kubo, Version: ver, SwarmResult: &SwarmResult{Nodes: n}}
	fmt.Printf("(d) Kubo baseline: %d Kubo %s daemons bootstrapped to the first (loopback only, in namespace %s), %s idle window\n",
		n, r.Version, k.NS, b.o.idle)

	ds := make([]*daemon, 0, n)
	defer func() { b.stopMany(ds) }()
	var seed string
	for i := range n {
		repo := filepath.Join(b.o.work, fmt.Sprintf("kubo-%02d", i))
		if err := k.Init(ctx, repo, seed); err != nil {
			return r, err
		}
		d, err := b.startKubo(k, repo, fmt.Sprintf("kubo-%02d", i))
		if err != nil {
			return r, err
		}
		ds = append(ds, d)
		if err := k.WaitReady(ctx, repo, d.p); err != nil {
			return r, err
		}
		if i == 0 {
			if seed, err = k.Addr(ctx, repo); err != nil {
				return r, err
			}
		}
	}
	fmt.Printf("    %d Kubo daemons ready; waiting up to %s for each to be connected to the %d others\n", n, b.o.formWait, n-1)
	r.FormationS, r.Formed, err = b.waitFormed(ctx, 500*time.Millisecond, func(fctx context.Context) bool {
		r.PeersMin, r.PeersMedian = kuboPeers(fctx, k, ds)
		return r.PeersMin >= n-1
	}, func() string {
		return fmt.Sprintf("connected (fewest peers %d of %d)", r.PeersMin, n-1)
	})
	if err != nil {
		return r, err
	}
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
	r.PeersMin, r.PeersMedian = kuboPeers(sctx, k, ds)
	return r, nil
}

// startKubo launches "ipfs daemon" on repo. It is registered for stopAll
// before it returns.
func (b *bench) startKubo(k *kubo.Net, repo, name string) (*daemon, error) {
	logf, err := os.Create(repo + ".log")
	if err != nil {
		return nil, err
	}
	p, err := k.StartDaemon(repo, logf)
	logf.Close() // the daemon has its own descriptor
	if err != nil {
		return nil, err
	}
	d := &daemon{name: name, repo: repo, p: p, pid: p.PID}
	b.mu.Lock()
	b.procs[d.pid] = d
	b.mu.Unlock()
	b.recordPID(d.pid)
	return d, nil
}

// kuboPeers returns the fewest and the median connected peers over ds (0
// for a daemon that does not answer).
func kuboPeers(ctx context.Context, k *kubo.Net, ds []*daemon) (lo, med int) {
	counts := make([]float64, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() {
			out, err := k.Run(ctx, d.repo, "swarm", "peers")
			if err == nil {
				counts[i] = float64(len(strings.Fields(out)))
			}
		})
	}
	wg.Wait()
	l, _ := minMax(counts)
	return int(l), int(median(counts))
}
