package node_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node/adversary"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/exchange"
)

// slowExchangePeer is an adversary that asks a provider for a whole DAG
// over the native exchange on many streams at once and then reads each
// answer at 1 KiB every 10 s, opening a new stream whenever one is cut
// off or refused: the slot-hogging attack of issue 22. Its streams end
// when the test does.
func slowExchangePeer(t *testing.T, victim peer.AddrInfo, root cid.Cid, streams int) *adversary.Peer {
	t.Helper()
	a, err := adversary.New(t.Context(), adversary.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.Connect(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	a.SlowExchange(t.Context(), victim.ID, root, streams)
	return a
}

// TestSlowExchangeFlood (issue 22, item 4): one peer holding 80 slow
// native-exchange requests used to take all 64 of a provider's slots, so
// honest peers got busy and fell back to Bitswap, and the provider held
// megabytes of blocks for each stalled stream. Now one peer gets at most
// content.native_streams_per_peer (8) slots: another peer's fetch goes
// through the native exchange (not a single block over Bitswap), and what
// the provider's exchange server holds stays under a bound stated below.
func TestSlowExchangeFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two nodes and an attacker for several seconds")
	}
	prov := nodetest.Start(t, nodetest.Options{})
	data := randomBytes(22, 8<<20)
	root := addBytes(t, prov, data)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	const attackStreams, slots = 80, 8
	slowExchangePeer(t, nodetest.AddrInfo(prov), root, attackStreams)
	nodetest.WaitFor(t, 30*time.Second, "the attacker's streams beyond its share refused", func() bool {
		return prov.NativeStats().Served.Busy >= attackStreams-slots
	})
	// The attacker's streams that were let in are stalled now.
	nodetest.WaitFor(t, 30*time.Second, "the attacker's streams stalled", func() bool {
		return prov.NativeStats().Served.Held > 0
	})

	t0 := time.Now()
	honest := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, prov)}})
	nodetest.WaitFor(t, 30*time.Second, "the honest peer knows the provider speaks the native exchange", func() bool {
		ps, _ := honest.Network().Host.Peerstore().SupportsProtocols(prov.ID(), exchange.ProtocolID)
		return nodetest.Connected(honest, prov) && len(ps) > 0
	})
	t1 := time.Now()
	if got := catBytes(t, honest, root); !bytes.Equal(got, data) {
		t.Fatal("honest peer fetched different bytes")
	}
	t.Logf("honest peer: connected in %v, fetched 8 MiB in %v", t1.Sub(t0), time.Since(t1))
	m := scrape(t, honest)
	if m["weft_exchange_native_blocks_received_total"] == 0 || m["weft_bitswap_blocks_received_total"] != 0 {
		t.Fatalf("honest fetch: %v blocks native, %v over Bitswap; want all native",
			m["weft_exchange_native_blocks_received_total"], m["weft_bitswap_blocks_received_total"])
	}

	// The bound (ServerStats.Held): the attacker's streams hold at most
	// 8 stream buffers, the peer's 4 MiB share of read-ahead and 8 blocks
	// being read, each in a buffer of at most 1 MiB (the store's buffers
	// for 256 KiB blocks); the honest peer's fetch as much again. Before
	// the per-peer limits, the attacker's 64 stalled streams held about
	// 5 MiB each.
	const perPeer = 8*exchange.StreamBuffers + 4<<20 + exchange.PeerReads*(1<<20)
	const bound = 2 * perPeer
	st := prov.NativeStats().Served
	if st.MaxHeld > bound {
		t.Fatalf("provider's exchange server held up to %d bytes, bound %d", st.MaxHeld, bound)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("provider: busy %d, slow %d, held now %d, peak %d (bound %d); live heap of the whole test process %+.1f MiB",
		st.Busy, st.Slow, st.Held, st.MaxHeld, bound, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
}
