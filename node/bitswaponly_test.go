package node_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// startPlainIPFSPeer starts a libp2p host that speaks only Bitswap (boxo's,
// as Kubo does) over an in-memory blockstore: no weft protocol, no DHT.
func startPlainIPFSPeer(t *testing.T) (host.Host, *bitswap.Bitswap, blockservice.BlockService) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	bstore := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	bs := bitswap.New(ctx, bsnet.NewFromIpfsHost(h), nil, bstore)
	t.Cleanup(func() {
		bs.Close()
		cancel()
		h.Close()
	})
	return h, bs, blockservice.New(bstore, bs)
}

// TestBitswapOnlyPeer: a weft node fetches from, and serves to, a peer that
// speaks nothing but Bitswap; its Bitswap server runs only while asked
// (content.bitswap_server_idle), and starts again at the next want.
func TestBitswapOnlyPeer(t *testing.T) {
	w := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) {
		c.Content.BitswapServerIdle = node.Duration(time.Second)
	}})
	bsw := w.Network().Bitswap()
	if bsw.ServerRunning() {
		t.Fatal("the Bitswap server runs before any peer asked for a block")
	}
	h, _, bserv := startPlainIPFSPeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: w.ID(), Addrs: w.Network().Host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	dag := merkledag.NewDAGService(bserv)

	// The plain peer holds a file; weft fetches it over Bitswap.
	theirs := randomBytes(11, 2<<20+77)
	theirCID, err := unixfs.AddFile(ctx, dag, bytes.NewReader(theirs), unixfs.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := catBytes(t, w, theirCID); !bytes.Equal(got, theirs) {
		t.Fatal("weft fetched different bytes from the Bitswap-only peer")
	}

	// weft holds a file; the plain peer fetches it over Bitswap.
	ours := randomBytes(12, 3<<20+5)
	ourCID := addBytes(t, w, ours)
	r, err := unixfs.Cat(ctx, dag, ourCID)
	if err != nil {
		t.Fatalf("Bitswap-only peer cat: %v", err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatalf("Bitswap-only peer read: %v", err)
	}
	if !bytes.Equal(buf.Bytes(), ours) {
		t.Fatal("Bitswap-only peer fetched different bytes from weft")
	}
	st, err := bsw.Stat()
	if err != nil || st.BlocksSent == 0 {
		t.Fatalf("Bitswap stat after serving: %+v, %v", st, err)
	}

	// Idle: the server stops; the next want starts it again and is served.
	nodetest.WaitFor(t, 20*time.Second, "the idle Bitswap server stopped", func() bool { return !bsw.ServerRunning() })
	again := randomBytes(13, 1<<20+3)
	againCID := addBytes(t, w, again)
	r, err = unixfs.Cat(ctx, dag, againCID)
	if err != nil {
		t.Fatalf("Bitswap-only peer cat after the server stopped: %v", err)
	}
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil || !bytes.Equal(buf.Bytes(), again) {
		t.Fatalf("Bitswap-only peer read after the server stopped: %v", err)
	}
	if st2, _ := bsw.Stat(); st2.BlocksSent <= st.BlocksSent {
		t.Fatalf("blocks sent %d then %d: the second server's are not counted", st.BlocksSent, st2.BlocksSent)
	}
}
