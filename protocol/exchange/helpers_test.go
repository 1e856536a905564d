package exchange

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/weft-p2p/weft/protocol/unixfs"
)

// memBlocks is an in-memory boxo Blockstore that counts its writes.
type memBlocks struct {
	mu      sync.RWMutex
	m       map[string]blocks.Block
	puts    atomic.Int64 // PutMany calls
	written atomic.Int64 // blocks passed to PutMany
	gets    atomic.Int64
	// onGet, if set, runs before every Get or View.
	onGet func(c cid.Cid)
}

func newMem() *memBlocks { return &memBlocks{m: make(map[string]blocks.Block)} }

func (m *memBlocks) DeleteBlock(_ context.Context, c cid.Cid) error {
	m.mu.Lock()
	delete(m.m, string(c.Hash()))
	m.mu.Unlock()
	return nil
}

func (m *memBlocks) Has(_ context.Context, c cid.Cid) (bool, error) {
	m.mu.RLock()
	_, ok := m.m[string(c.Hash())]
	m.mu.RUnlock()
	return ok, nil
}

func (m *memBlocks) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	m.gets.Add(1)
	if m.onGet != nil {
		m.onGet(c)
	}
	m.mu.RLock()
	b, ok := m.m[string(c.Hash())]
	m.mu.RUnlock()
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	return b, nil
}

func (m *memBlocks) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	b, err := m.Get(ctx, c)
	if err != nil {
		return -1, err
	}
	return len(b.RawData()), nil
}

func (m *memBlocks) Put(ctx context.Context, b blocks.Block) error {
	return m.PutMany(ctx, []blocks.Block{b})
}

func (m *memBlocks) PutMany(_ context.Context, bs []blocks.Block) error {
	m.puts.Add(1)
	m.written.Add(int64(len(bs)))
	m.mu.Lock()
	for _, b := range bs {
		m.m[string(b.Cid().Hash())] = b
	}
	m.mu.Unlock()
	return nil
}

func (m *memBlocks) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	m.mu.RLock()
	ch := make(chan cid.Cid, len(m.m))
	for _, b := range m.m {
		ch <- b.Cid()
	}
	m.mu.RUnlock()
	close(ch)
	return ch, nil
}

func (m *memBlocks) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.m)
}

// drop removes every block but those keep says to keep.
func (m *memBlocks) drop(keep func(c cid.Cid) bool) {
	m.mu.Lock()
	for k, b := range m.m {
		if !keep(b.Cid()) {
			delete(m.m, k)
		}
	}
	m.mu.Unlock()
}

// clone copies the store (sharing the immutable blocks).
func (m *memBlocks) clone() *memBlocks {
	n := newMem()
	m.mu.RLock()
	for k, b := range m.m {
		n.m[k] = b
	}
	m.mu.RUnlock()
	return n
}

// verifyAll checks that every stored block hashes to its CID.
func (m *memBlocks) verifyAll(t testing.TB) {
	t.Helper()
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, b := range m.m {
		if err := verify(b.Cid(), b.RawData()); err != nil {
			t.Fatalf("stored block %s does not verify", b.Cid())
		}
	}
}

func dagOf(bs *memBlocks) ipld.DAGService {
	return merkledag.NewDAGService(blockservice.New(bs, nil))
}

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// smallOpts makes DAGs with many blocks and several levels from little
// data: 64 KiB dag-pb leaves (no raw leaves), 16 links per node.
func smallOpts() unixfs.Options {
	o, _ := unixfs.Profile(unixfs.ProfileV0_2015)
	o.ChunkSize = 64 << 10
	o.MaxLinks = 16
	return o
}

// addFile imports data into bs and returns its root.
func addFile(t testing.TB, bs *memBlocks, data []byte, opts unixfs.Options) cid.Cid {
	t.Helper()
	dag := dagOf(bs)
	batch := ipld.NewBufferedDAG(context.Background(), dag)
	root, err := unixfs.AddFile(context.Background(), batch, bytes.NewReader(data), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(); err != nil {
		t.Fatal(err)
	}
	return root
}

// catFile reads the file at root from bs alone (a missing block fails).
func catFile(t testing.TB, bs *memBlocks, root cid.Cid) []byte {
	t.Helper()
	r, err := unixfs.Cat(context.Background(), dagOf(bs), root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dagBlocks lists the CIDs of the DAG under root, in walk order.
func dagBlocks(t testing.TB, bs *memBlocks, root cid.Cid, scope Scope) []cid.Cid {
	t.Helper()
	wk := newWalk([]item{{c: root, scope: scope}}, DefaultMaxPending)
	var out []cid.Cid
	for {
		it, ok, err := wk.next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, it.c)
		b, err := bs.Get(context.Background(), it.c)
		if err != nil {
			t.Fatal(err)
		}
		if err := wk.expand(it, b.RawData()); err != nil {
			t.Fatal(err)
		}
	}
}

// newHost starts a libp2p host on 127.0.0.1 with weft's transport and
// security choices (TCP, TLS preferred over Noise, default muxers), closed
// at cleanup.
func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DefaultMuxers,
		libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// serve makes h a provider of bs; the Server closes at cleanup.
func serve(t testing.TB, h host.Host, bs Getter) *Server {
	t.Helper()
	s, err := NewServer(ServerConfig{Blocks: bs})
	if err != nil {
		t.Fatal(err)
	}
	h.SetStreamHandler(ProtocolID, func(st network.Stream) { s.Handle(st, st.Conn().RemotePeer()) })
	t.Cleanup(func() { s.Close() })
	return s
}

// hostStreams opens exchange streams from a libp2p host.
type hostStreams struct{ h host.Host }

func (s hostStreams) NewStream(ctx context.Context, p peer.ID) (Stream, error) {
	return s.h.NewStream(ctx, p, ProtocolID)
}

func newFetcher(t testing.TB, bs Blocks, st Streams, mod func(*Config)) *Fetcher {
	t.Helper()
	cfg := Config{Blocks: bs, Streams: st}
	if mod != nil {
		mod(&cfg)
	}
	f, err := NewFetcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// pipeStreams connects a Fetcher to in-process providers over net.Pipe:
// each peer is a function that serves one stream.
type pipeStreams struct {
	t     testing.TB
	wg    sync.WaitGroup
	peers map[peer.ID]func(Stream)
}

func newPipes(t testing.TB) *pipeStreams {
	ps := &pipeStreams{t: t, peers: make(map[peer.ID]func(Stream))}
	t.Cleanup(ps.wg.Wait)
	return ps
}

func (ps *pipeStreams) NewStream(ctx context.Context, p peer.ID) (Stream, error) {
	h, ok := ps.peers[p]
	if !ok {
		return nil, errors.New("no such peer")
	}
	a, b := net.Pipe()
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		h(pipeStream{b})
	}()
	return pipeStream{a}, nil
}

type pipeStream struct{ net.Conn }

func (p pipeStream) Reset() error { return p.Conn.Close() }

// serverPeer serves bs with a real Server.
func serverPeer(t testing.TB, bs Getter) func(Stream) {
	s, err := NewServer(ServerConfig{Blocks: bs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return func(st Stream) { s.Handle(st, "fetcher") }
}

// scriptedPeer reads one request and answers with whatever frames script
// writes, then keeps the stream open until the requester closes it.
func scriptedPeer(script func(req Request, w io.Writer)) func(Stream) {
	return func(st Stream) {
		defer st.Close()
		br := bufio.NewReader(st)
		req, err := ReadRequest(br)
		if err != nil {
			return
		}
		script(req, st)
		_, _ = io.Copy(io.Discard, st)
	}
}

func pid(s string) peer.ID { return peer.ID(s) }

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// runtimeMem reads the bytes allocated so far.
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.total = ms.TotalAlloc
}
