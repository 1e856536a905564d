package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bsnetwork "github.com/ipfs/boxo/bitswap/network"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/files"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// liar is a libp2p host that speaks Bitswap and answers every want with
// HAVE and then with blocks whose bytes are garbage, sent under the wanted
// CID's prefix: the attack of a peer that claims to have everything. It
// records the CIDs its garbage hashes to, which a victim must never store.
type liar struct {
	h   host.Host
	bs  bsnetwork.BitSwapNetwork
	dht *dht.IpfsDHT

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	wants   int                  // want entries received
	garbage map[cid.Cid]struct{} // CIDs of the garbage sent
}

// liarVariants is how many different garbage blocks the liar sends for each
// want, one message each (a message holds one block per CID).
const liarVariants = 2

func startLiar(t *testing.T, dhtPrefix string) *liar {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatalf("liar host: %v", err)
	}
	l := &liar{h: h, garbage: map[cid.Cid]struct{}{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.dht, err = dht.New(h, dht.Mode(dht.ModeClient), dht.ProtocolPrefix(protocol.ID(dhtPrefix)))
	if err != nil {
		h.Close()
		t.Fatalf("liar DHT: %v", err)
	}
	l.bs = bsnet.NewFromIpfsHost(h)
	l.bs.Start(l)
	t.Cleanup(func() {
		l.cancel()
		l.wg.Wait()
		l.bs.Stop()
		l.dht.Close()
		h.Close()
	})
	return l
}

// garbageFor is the i-th lie about c: bytes that do not hash to c.
func garbageFor(c cid.Cid, i int) []byte {
	var out []byte
	for k := 0; len(out) < 2048; k++ {
		d := sha256.Sum256(fmt.Appendf(nil, "lie:%s:%d:%d", c, i, k))
		out = append(out, d[:]...)
	}
	return out
}

// ReceiveMessage implements bsnetwork.Receiver.
func (l *liar) ReceiveMessage(_ context.Context, from peer.ID, in bsmsg.BitSwapMessage) {
	for _, e := range in.Wantlist() {
		if e.Cancel {
			continue
		}
		var msgs []bsmsg.BitSwapMessage
		for i := range liarVariants {
			data := garbageFor(e.Cid, i)
			sum, err := e.Cid.Prefix().Sum(data)
			if err != nil {
				continue
			}
			l.mu.Lock()
			l.garbage[sum] = struct{}{}
			l.mu.Unlock()
			m := bsmsg.New(false)
			if i == 0 {
				m.AddHave(e.Cid)
			}
			// The block travels as (prefix of e.Cid, garbage); the
			// receiver computes its CID from the bytes.
			blk, err := blocks.NewBlockWithCid(data, e.Cid)
			if err != nil {
				continue
			}
			m.AddBlock(blk)
			msgs = append(msgs, m)
		}
		l.mu.Lock()
		l.wants++
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for _, m := range msgs {
				ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
				err := l.bs.SendMessage(ctx, from, m)
				cancel()
				if err != nil {
					return
				}
			}
		}()
	}
}

func (l *liar) ReceiveError(error)       {}
func (l *liar) PeerConnected(peer.ID)    {}
func (l *liar) PeerDisconnected(peer.ID) {}
func (l *liar) wantCount() int           { l.mu.Lock(); defer l.mu.Unlock(); return l.wants }
func (l *liar) info() peer.AddrInfo      { return peer.AddrInfo{ID: l.h.ID(), Addrs: l.h.Addrs()} }
func (l *liar) sentGarbage() []cid.Cid {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]cid.Cid, 0, len(l.garbage))
	for c := range l.garbage {
		out = append(out, c)
	}
	return out
}

// TestFetchPastLyingPeer fetches a file while a peer that announced it in
// the DHT answers every want with garbage. The victim at first knows only
// the liar; once it has counted the liar's blocks as bad and dropped the
// connection, an honest node that has the file connects. The file must
// arrive intact, the liar (and only the liar) must be counted, and the
// victim's store must hold exactly the file's blocks, each matching its CID.
func TestFetchPastLyingPeer(t *testing.T) {
	quiet := func(c *node.Config) {
		c.DHT.BootstrapInterval = node.Duration(time.Hour)
		c.Content.FetchTimeout = node.Duration(60 * time.Second)
	}
	honest := nodetest.Start(t, nodetest.Options{Tune: quiet})
	victim := nodetest.Start(t, nodetest.Options{Tune: quiet})
	x := victim.Network().Bitswap()
	if x == nil {
		t.Fatal("victim has no Bitswap exchange")
	}

	const size = 4 << 20
	opts := unixfs.DefaultOptions()
	opts.ChunkSize = 256 << 10 // 16 leaves and a root
	ctx := t.Context()
	root, err := honest.Add(ctx, files.NewReaderFile(newSHAStream("badpeer", size)), opts, true, "", nil)
	if err != nil {
		t.Fatalf("add on honest node: %v", err)
	}

	// The liar connects to the victim and announces the file through the
	// victim's DHT.
	l := startLiar(t, victim.Config().DHT.ProtocolPrefix)
	var liarDrops atomic.Int64
	nb := &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == l.h.ID() {
			liarDrops.Add(1)
		}
	}}
	victim.Network().Host.Network().Notify(nb)
	t.Cleanup(func() { victim.Network().Host.Network().StopNotify(nb) })
	if err := l.h.Connect(ctx, nodetest.AddrInfo(victim)); err != nil {
		t.Fatalf("liar connect: %v", err)
	}
	nodetest.WaitFor(t, 10*time.Second, "victim in the liar's DHT routing table", func() bool {
		return l.dht.RoutingTable().Find(victim.ID()) != ""
	})
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = l.dht.Provide(pctx, root, true)
	cancel()
	if err != nil {
		t.Fatalf("liar provide: %v", err)
	}
	// The victim stores the record a moment after the liar sent it.
	nodetest.WaitFor(t, 10*time.Second, "victim lists the liar as the one provider of the file", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		provs, err := victim.Providers(pctx, root, 10)
		return err == nil && len(provs) == 1 && provs[0].ID == l.h.ID()
	})

	// The victim reads the file through its API.
	type result struct {
		sum [sha256.Size]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := nodetest.Client(victim).Cat(ctx, root.String(), 0, -1)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer r.Close()
		h := sha256.New()
		n, err := io.Copy(h, r)
		var res result
		copy(res.sum[:], h.Sum(nil))
		res.n, res.err = n, err
		done <- res
	}()

	nodetest.WaitFor(t, 30*time.Second, "victim counts the liar's blocks as bad and drops it", func() bool {
		return x.BadPeers()[l.h.ID()] >= 3 && liarDrops.Load() > 0
	})
	if err := victim.Network().Host.Connect(ctx, nodetest.AddrInfo(honest)); err != nil {
		t.Fatalf("victim connect to honest node: %v", err)
	}

	var res result
	select {
	case res = <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("cat did not finish; bad peers %v, liar got %d wants", x.BadPeers(), l.wantCount())
	}
	if res.err != nil {
		t.Fatalf("cat %s on victim: %v", root, res.err)
	}
	want := sha256.New()
	io.Copy(want, newSHAStream("badpeer", size))
	if res.n != size || !bytes.Equal(res.sum[:], want.Sum(nil)) {
		t.Fatalf("victim read %d bytes with sha256 %x; want %d bytes, %x", res.n, res.sum, size, want.Sum(nil))
	}

	bad := x.BadPeers()
	t.Logf("liar got %d wants, sent %d distinct lies; victim counted %d bad blocks: %v; liar dropped %d times",
		l.wantCount(), len(l.sentGarbage()), x.BadBlocks(), bad, liarDrops.Load())
	if bad[l.h.ID()] < 3 {
		t.Errorf("liar counted %d times, want at least 3", bad[l.h.ID()])
	}
	if n, ok := bad[honest.ID()]; ok {
		t.Errorf("honest node counted as bad %d times", n)
	}
	if len(bad) != 1 {
		t.Errorf("bad peers %v; want the liar only", bad)
	}

	// Nothing unverified was stored: no lie is in the victim's store, every
	// stored block hashes to its CID, and the victim holds exactly the
	// honest node's blocks (the file's DAG and nothing else).
	vbs := victim.Store().Blockstore()
	for _, c := range l.sentGarbage() {
		if has, err := vbs.Has(ctx, c); err != nil || has {
			t.Fatalf("victim stored the liar's block %s (has %v, err %v)", c, has, err)
		}
	}
	keys, err := vbs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for c := range keys {
		blk, err := vbs.Get(ctx, c)
		if err != nil {
			t.Fatalf("get stored block %s: %v", c, err)
		}
		sum, err := c.Prefix().Sum(blk.RawData())
		if err != nil || !sum.Equals(c) {
			t.Fatalf("stored block %s hashes to %s (%v)", c, sum, err)
		}
		if has, _ := honest.Store().Blockstore().Has(ctx, c); !has {
			t.Fatalf("victim stored %s, which is not part of the file", c)
		}
		stored++
	}
	if hs := honest.Store().Stat().Blocks; stored != hs {
		t.Fatalf("victim stores %d blocks; the file has %d", stored, hs)
	}
}

// TestCancelledFetchBlamesNoHonestPeer cancels a fetch part-way, while the
// only provider, an honest node, has blocks in flight. Those blocks arrive
// after their wants were cancelled; they are correct, so the provider must
// not be counted as bad, let alone disconnected.
// p2p.Bitswap remembers, per peer, the CIDs asked of it, so these blocks
// are recognised as answers to our own (cancelled) wants.
func TestCancelledFetchBlamesNoHonestPeer(t *testing.T) {
	quiet := func(c *node.Config) { c.DHT.BootstrapInterval = node.Duration(time.Hour) }
	provider := nodetest.Start(t, nodetest.Options{Tune: quiet})
	fetcher := nodetest.Start(t, nodetest.Options{Tune: quiet})
	ctx := t.Context()
	opts := unixfs.DefaultOptions()
	opts.ChunkSize = 256 << 10
	big, err := provider.Add(ctx, files.NewReaderFile(newSHAStream("cancel-big", 32<<20)), opts, true, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	small, err := provider.Add(ctx, files.NewReaderFile(newSHAStream("cancel-small", 1<<20)), opts, true, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fetcher.Network().Host.Connect(ctx, nodetest.AddrInfo(provider)); err != nil {
		t.Fatal(err)
	}

	// Fetch the big file and cancel once 4 MiB of it are stored.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fetcher.Fetch(fctx, big) }()
	nodetest.WaitFor(t, 30*time.Second, "4 MiB of the big file fetched", func() bool {
		select {
		case err := <-done:
			t.Fatalf("fetch ended before the cancel: %v", err)
		default:
		}
		return fetcher.Store().Stat().BlockBytes >= 4<<20
	})
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled fetch reported success")
	}
	// A later fetch from the same peer: its blocks come after the late ones.
	if err := fetcher.Fetch(ctx, small); err != nil {
		t.Fatalf("fetch after the cancel: %v", err)
	}
	x := fetcher.Network().Bitswap()
	if bad := x.BadPeers(); len(bad) != 0 {
		t.Fatalf("an honest provider was counted as bad after a cancelled fetch: %v (provider %s, still connected: %v)",
			bad, provider.ID(), nodetest.Connected(fetcher, provider))
	}
}
