package node_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// sinkProto is a test protocol whose handler reads everything and counts it.
const sinkProto = protocol.ID("/weft-test/sink/1.0.0")

// newPlainHost is a go-libp2p host on 127.0.0.1 with go-libp2p's defaults
// (the circuit relay client transport among them), closed on cleanup.
func newPlainHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestRelayLimitsUnderLoad runs a weft relay (relay service on, limits set
// small through relay.*) and loads it with go-libp2p hosts on 127.0.0.1:
// 12 hosts ask for a reservation at once and exactly max_reservations get
// one; 4 hosts open circuits to one reserved host at once and at most
// max_circuits get through; a circuit pushing 1 MiB is reset by the relay
// after connection_data, with the receiver having got less than that. The
// relay stays up throughout: its API answers, its relay service is still
// on, a freed reservation slot can be taken again, and a small transfer
// over a fresh circuit arrives whole.
func TestRelayLimitsUnderLoad(t *testing.T) {
	const (
		maxRsvp     = 4
		maxCircuits = 2
		dataLimit   = 64 << 10
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	relay := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Relay.Service = true
		c.Relay.Client = false
		c.NAT.Reachability = "public"
		c.Relay.MaxReservations = maxRsvp
		c.Relay.MaxReservationsPerIP = 100 // every host here is 127.0.0.1
		c.Relay.MaxReservationsPerASN = 100
		c.Relay.MaxCircuits = maxCircuits
		c.Relay.ConnectionData = dataLimit
		c.Relay.ConnectionDuration = node.Duration(time.Minute)
	}})
	nodetest.WaitFor(t, 30*time.Second, "the relay runs its relay service", func() bool {
		st, err := nodetest.Client(relay).Status(ctx)
		return err == nil && st.NAT.RelayService
	})
	ri, err := peer.AddrInfoFromString(nodetest.Addr(t, relay))
	if err != nil {
		t.Fatal(err)
	}
	relayStillUp := func(when string) {
		t.Helper()
		st, err := nodetest.Client(relay).Status(ctx)
		if err != nil || !st.NAT.RelayService {
			t.Fatalf("%s: the relay's status = %+v, %v; want its API up and its relay service on", when, st.NAT, err)
		}
	}

	// Reservations: 12 at once against a limit of 4.
	hosts := make([]host.Host, 12)
	for i := range hosts {
		hosts[i] = newPlainHost(t)
	}
	var mu sync.Mutex
	var reserved []host.Host
	var refused []error
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() {
			if err := h.Connect(ctx, *ri); err != nil {
				mu.Lock()
				refused = append(refused, err)
				mu.Unlock()
				return
			}
			_, err := client.Reserve(ctx, h, *ri)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
			} else {
				reserved = append(reserved, h)
			}
		})
	}
	wg.Wait()
	if len(reserved) != maxRsvp {
		t.Fatalf("%d of %d hosts got a reservation, want max_reservations = %d (refusals: %v)", len(reserved), len(hosts), maxRsvp, refused)
	}
	for _, err := range refused {
		var re client.ReservationError
		if !errors.As(err, &re) {
			t.Errorf("a refused reservation failed with %v, want the relay's refusal", err)
		}
	}
	t.Logf("%d reservations granted, %d refused (e.g. %v)", len(reserved), len(refused), refused[0])
	relayStillUp("after the reservation storm")

	// B, a reserved host, counts what reaches it over the sink protocol.
	b := reserved[0]
	var got atomic.Int64   // bytes B read, counted as they arrive
	var ended atomic.Int32 // sink streams B is done with
	b.SetStreamHandler(sinkProto, func(s network.Stream) {
		defer ended.Add(1)
		defer s.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	circuit, err := ma.NewMultiaddr(ri.Addrs[0].String() + "/p2p/" + ri.ID.String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	bInfo := peer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{circuit}}

	// Circuits: 4 hosts at once to B against a limit of 2 per peer; the
	// ones that get through stay open.
	var opened, failed atomic.Int32
	var dialers []host.Host
	for range 4 {
		a := newPlainHost(t)
		dialers = append(dialers, a)
		wg.Go(func() {
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			defer ccancel()
			if err := a.Connect(cctx, bInfo); err != nil {
				failed.Add(1)
				return
			}
			opened.Add(1)
		})
	}
	wg.Wait()
	if opened.Load() > maxCircuits || opened.Load() == 0 {
		t.Fatalf("%d of 4 circuits to one peer opened at once, want between 1 and max_circuits = %d", opened.Load(), maxCircuits)
	}
	t.Logf("%d circuits to B opened at once, %d refused", opened.Load(), failed.Load())
	relayStillUp("after the circuit storm")

	// Data: the circuit hosts leave, and a fresh circuit (once the relay
	// has freed a slot) pushes 1 MiB; the relay resets it after its data
	// limit.
	for _, a := range dialers {
		a.Close()
	}
	pusher := newPlainHost(t)
	nodetest.WaitFor(t, 30*time.Second, "a circuit slot to B", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return pusher.Connect(cctx, bInfo) == nil
	})
	push := func(h host.Host, n int) (int, error) {
		sctx, scancel := context.WithTimeout(network.WithAllowLimitedConn(ctx, "test"), 20*time.Second)
		defer scancel()
		s, err := h.NewStream(sctx, b.ID(), sinkProto)
		if err != nil {
			return 0, err
		}
		defer s.Close()
		s.SetDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 16<<10)
		sent := 0
		for sent < n {
			k, err := s.Write(buf[:min(len(buf), n-sent)])
			sent += k
			if err != nil {
				return sent, err
			}
		}
		return sent, s.CloseWrite()
	}
	sent, err := push(pusher, 1<<20)
	if err == nil {
		t.Fatalf("1 MiB went through a circuit limited to %d bytes", dataLimit)
	}
	// B's handler may never run: when the relay resets the circuit before
	// B has accepted the stream, the stream goes with the connection.
	nodetest.WaitFor(t, 10*time.Second, "B's sink stream or its circuit from the pusher ends", func() bool {
		return ended.Load() >= 1 || len(b.Network().ConnsToPeer(pusher.ID())) == 0
	})
	if g := got.Load(); g >= dataLimit {
		t.Errorf("B received %d bytes over a circuit limited to %d", g, dataLimit)
	}
	t.Logf("pusher wrote %d bytes before the relay reset the circuit (%v); B received %d", sent, err, got.Load())
	relayStillUp("after the data limit")

	// A slot freed by a host that leaves can be taken again.
	reserved[len(reserved)-1].Close()
	late := newPlainHost(t)
	if err := late.Connect(ctx, *ri); err != nil {
		t.Fatal(err)
	}
	nodetest.WaitFor(t, 20*time.Second, "a new host reserves the freed slot", func() bool {
		_, err := client.Reserve(ctx, late, *ri)
		return err == nil
	})
	// And a small transfer over a fresh circuit arrives whole.
	got.Store(0)
	small := newPlainHost(t)
	nodetest.WaitFor(t, 30*time.Second, "a fresh circuit to B", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return small.Connect(cctx, bInfo) == nil
	})
	if _, err := push(small, 4<<10); err != nil {
		t.Fatalf("a 4 KiB transfer over a fresh circuit: %v", err)
	}
	nodetest.WaitFor(t, 10*time.Second, "B receives the 4 KiB", func() bool { return got.Load() >= 4<<10 })
	if g := got.Load(); g != 4<<10 {
		t.Errorf("B received %d bytes over the fresh circuit, want 4096", g)
	}
	relayStillUp("at the end")
}
