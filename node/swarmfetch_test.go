package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/exchange"
)

// meshNodes starts n nodes and connects every pair, returning once every
// node knows every other one speaks the native exchange (identify has run),
// so a fetch that starts next sees the whole swarm as candidate providers.
func meshNodes(t *testing.T, n int, tune func(*node.Config)) []*node.Node {
	t.Helper()
	nodes := make([]*node.Node, n)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i] = nodetest.Start(t, nodetest.Options{Tune: tune})
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Each node dials the later ones, one at a time: all pairs at once
	// time out in the handshakes on a loaded machine (and under -race).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, n)
	for i, a := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range nodes[i+1:] {
				if err := connectRetry(ctx, a, b); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 30*time.Second, "every node sees every other speak the native exchange", func() bool {
		for _, a := range nodes {
			for _, b := range nodes {
				if a == b {
					continue
				}
				ps, err := a.Network().Host.Peerstore().SupportsProtocols(b.ID(), exchange.ProtocolID)
				if err != nil || len(ps) == 0 {
					return false
				}
			}
		}
		return true
	})
	return nodes
}

// connectRetry connects a to b, trying again while ctx lasts: a handshake
// can time out on a loaded machine.
func connectRetry(ctx context.Context, a, b *node.Node) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.Network().Host.Connect(cctx, nodetest.AddrInfo(b))
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect %s to %s: %w", a.ID(), b.ID(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestSwarmFetchAtOnce is fetch-swarm-30 in one process: one node adds a
// file, every other node of a full mesh fetches and pins it at the same
// moment. At the start only the adder holds the file, so most peers a
// fetcher asks first answer Missing; later they hold it. Every fetch must
// end, with the file, long before the idle timeout: none may wait on peers
// that lacked the file when asked while the one that holds it goes unasked.
func TestSwarmFetchAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 17 nodes")
	}
	const fetchers = 16
	// The idle timeout is far above what a fetch takes even on a loaded
	// machine (about 4 s alone under -race, 17 s beside the rest of CI), so
	// a fetch that waited it out cannot pass for a slow one.
	idle := 90 * time.Second
	nodes := meshNodes(t, 1+fetchers, func(c *node.Config) {
		c.Content.FetchTimeout = node.Duration(idle)
	})
	adder, rest := nodes[0], nodes[1:]
	data := randomBytes(30, 4<<20)
	root := addBytes(t, adder, data)

	type result struct {
		who peer.ID
		err error
		dur time.Duration
	}
	results := make(chan result, len(rest))
	ctx, cancel := context.WithTimeout(context.Background(), 2*idle)
	defer cancel()
	start := make(chan struct{})
	for _, n := range rest {
		go func() {
			<-start
			t0 := time.Now()
			err := n.Pin(ctx, root, true, "")
			results <- result{n.ID(), err, time.Since(t0)}
		}()
	}
	close(start)
	var slowest time.Duration
	var failed []string
	for range rest {
		r := <-results
		slowest = max(slowest, r.dur)
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("%s after %v: %v", r.who.ShortString(), r.dur.Round(time.Millisecond), r.err))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d fetches failed:\n%v", len(failed), len(rest), failed)
	}
	// A fetch that waited out a stall or the idle timeout before it found
	// the holder would take that long; none should.
	if slowest >= idle/2 {
		t.Errorf("slowest fetch took %v, at least half the idle timeout %v", slowest, idle)
	}
	served := adder.NativeStats().Served
	t.Logf("%d fetches, slowest %v; the adder served %d blocks on %d streams, refused %d busy",
		len(rest), slowest, served.Blocks, served.Streams, served.Busy)
	for _, n := range rest {
		if err := holdsAll(n, root); err != nil {
			t.Error(err)
		}
	}
}

// holdsAll checks that n has root pinned.
func holdsAll(n *node.Node, root cid.Cid) error {
	ok, err := n.Store().Pins().IsPinned(context.Background(), root)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New(n.ID().ShortString() + " has not pinned " + root.String())
	}
	return nil
}
