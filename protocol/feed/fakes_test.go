package feed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// t0 is the fake clock's start: fixed, and in the future of any wall clock
// these tests run under, so that expiry judged by the fake clock and by
// boxo's wall clock can be told apart.
var t0 = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// memKV is an in-memory KV.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (kv *memKV) Get(_ context.Context, key string) ([]byte, bool, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	v, ok := kv.m[key]
	return bytes.Clone(v), ok, nil
}

func (kv *memKV) Put(_ context.Context, key string, value []byte) error {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.m[key] = bytes.Clone(value)
	return nil
}

func (kv *memKV) Delete(_ context.Context, key string) error {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	delete(kv.m, key)
	return nil
}

// fakePinner pins by feed label, fails CIDs on request, and can delay or
// hold pins.
type fakePinner struct {
	mu      sync.Mutex
	pins    map[string]map[cid.Cid]bool // feed -> pinned CIDs
	log     []pinEvent
	fail    map[cid.Cid]error
	delay   func() time.Duration // nil: none
	gate    chan struct{}        // if set, Pin waits for a token
	started chan cid.Cid         // if set, receives each CID as its Pin starts
}

type pinEvent struct {
	op  string // "pin" (completed) or "unpin"
	cid cid.Cid
}

func newPinner() *fakePinner {
	return &fakePinner{pins: map[string]map[cid.Cid]bool{}, fail: map[cid.Cid]error{}}
}

func (p *fakePinner) Pin(ctx context.Context, feed ipns.Name, c cid.Cid) error {
	if p.started != nil {
		select {
		case p.started <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if p.delay != nil {
		select {
		case <-time.After(p.delay()):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fail[c]; err != nil {
		return err
	}
	k := feed.String()
	if p.pins[k] == nil {
		p.pins[k] = map[cid.Cid]bool{}
	}
	p.pins[k][c] = true
	p.log = append(p.log, pinEvent{"pin", c})
	return nil
}

func (p *fakePinner) Unpin(_ context.Context, feed ipns.Name, c cid.Cid) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pins[feed.String()], c)
	p.log = append(p.log, pinEvent{"unpin", c})
	return nil
}

// waitPinnedOnly waits until feed's only pin is c. A newer version shows
// as pinned before the replaced one's unpin has run (it runs on the
// feed's next job), so a test reads the pin set only once it settles.
func (p *fakePinner) waitPinnedOnly(t testing.TB, feed ipns.Name, c cid.Cid) {
	t.Helper()
	eventually(t, 5*time.Second, "only "+c.String()+" pinned", func() bool {
		got := p.pinned(feed)
		return len(got) == 1 && got[0].Equals(c)
	})
}

func (p *fakePinner) pinned(feed ipns.Name) []cid.Cid {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []cid.Cid
	for c := range p.pins[feed.String()] {
		out = append(out, c)
	}
	return out
}

func (p *fakePinner) events() []pinEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pinEvent(nil), p.log...)
}

// fakeRouter is a DHT holding the best valid record per key, as boxo's
// ipns.Validator selects it.
type fakeRouter struct {
	mu   sync.Mutex
	m    map[string][]byte
	gets int
}

func newRouter() *fakeRouter { return &fakeRouter{m: map[string][]byte{}} }

func (r *fakeRouter) PutValue(_ context.Context, key string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.m[key]; ok {
		if i, err := (ipns.Validator{}).Select(key, [][]byte{old, value}); err != nil || i == 0 {
			return nil
		}
	}
	r.m[key] = bytes.Clone(value)
	return nil
}

func (r *fakeRouter) GetValue(_ context.Context, key string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gets++
	v, ok := r.m[key]
	if !ok {
		return nil, fmt.Errorf("routing: not found")
	}
	return bytes.Clone(v), nil
}

// testKey returns a deterministic Ed25519 key.
func testKey(t testing.TB, seed byte) crypto.PrivKey {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

func testName(t testing.TB, sk crypto.PrivKey) ipns.Name {
	t.Helper()
	n, err := NameFromKey(sk.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// contentCID returns the CID of version i's (notional) content.
func contentCID(i uint64) cid.Cid {
	sum := sha256.Sum256(fmt.Appendf(nil, "version %d", i))
	h, _ := mh.Encode(sum[:], mh.SHA2_256)
	return cid.NewCidV1(cid.Raw, h)
}

func mustRecord(t testing.TB, sk crypto.PrivKey, seq uint64, validity time.Duration, now time.Time) []byte {
	t.Helper()
	data, err := NewRecord(sk, path.FromCid(contentCID(seq)), seq, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func shuffle[T any](r *rand.Rand, s []T) {
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
}

var _ = peer.ID("")

var quiet = slog.New(slog.DiscardHandler)
