// Command apilat measures the 1 KiB fetch of scripts/bench/latency.sh
// without the CLI's process start: one client process, already running,
// asks daemon A to add a fresh 1 KiB file and then times daemon B's
// /api/v1/cat of it to the last byte, rounds times after a few untimed
// warm-up fetches; then it times B's cat of a file B already holds. It
// prints the median and p90 of each, in ms. On machines where starting a
// process is slow, this separates what weft's fetch costs from what the
// machine charges to start `weft`.
//
//	go run ./scripts/bench/apilat -a REPO_A -b REPO_B [-rounds 21]
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "apilat:", err)
		os.Exit(1)
	}
}

func client(repo string) (*api.Client, error) {
	addr, err := node.ReadAPIAddr(repo)
	if err != nil {
		return nil, fmt.Errorf("daemon of %s: %w", repo, err)
	}
	return api.NewClient(addr, node.ReadToken(repo)), nil
}

func run() error {
	repoA := flag.String("a", "", "repo of daemon A (adds the files)")
	repoB := flag.String("b", "", "repo of daemon B (fetches them)")
	rounds := flag.Int("rounds", 21, "timed fetches of each kind")
	flag.Parse()
	if *repoA == "" || *repoB == "" || *rounds < 1 {
		return fmt.Errorf("usage: apilat -a REPO_A -b REPO_B [-rounds N]")
	}
	a, err := client(*repoA)
	if err != nil {
		return err
	}
	b, err := client(*repoB)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cat := func(cid string) (time.Duration, error) {
		t0 := time.Now()
		r, err := b.Cat(ctx, cid, 0, -1)
		if err != nil {
			return 0, fmt.Errorf("cat %s on B: %w", cid, err)
		}
		defer r.Close()
		n, err := io.Copy(io.Discard, r)
		if err != nil || n != 1024 {
			return 0, fmt.Errorf("cat %s on B: %d bytes: %v", cid, n, err)
		}
		return time.Since(t0), nil
	}
	var fresh, held []time.Duration
	last := ""
	const warmUp = 5
	for i := 0; i < warmUp+*rounds; i++ {
		data := make([]byte, 1024)
		if _, err := rand.Read(data); err != nil {
			return err
		}
		cid, err := a.Add(ctx, files.NewBytesFile(data), nil, nil, nil)
		if err != nil {
			return fmt.Errorf("add on A: %w", err)
		}
		d, err := cat(cid)
		if err != nil {
			return err
		}
		if i >= warmUp {
			fresh = append(fresh, d)
		}
		last = cid
	}
	for range *rounds {
		d, err := cat(last)
		if err != nil {
			return err
		}
		held = append(held, d)
	}
	fmt.Printf("1 KiB fetched from a connected peer, API from a running client: %s (%d runs)\n", stats(fresh), *rounds)
	fmt.Printf("baseline, the same client's cat of a block already held:        %s\n", stats(held))
	return nil
}

// stats formats the median and p90 (nearest rank) of ds in ms.
func stats(ds []time.Duration) string {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	p90 := ds[min(len(ds)-1, (len(ds)*9+9)/10-1)]
	return fmt.Sprintf("median %.2f ms, p90 %.2f ms", ms(ds[(len(ds)-1)/2]), ms(p90))
}
