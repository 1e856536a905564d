package collection

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// seededReader is a deterministic byte source for key generation.
type seededReader struct{ r *rand.Rand }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

// testKey returns a deterministic Ed25519 key for seed.
func testKey(t testing.TB, seed int64) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(seededReader{rand.New(rand.NewSource(seed))})
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// itemCID returns the CID of a made-up item (a dag-pb CIDv0, as most pins
// are).
func itemCID(i int) cid.Cid {
	h, _ := mh.Sum([]byte(fmt.Sprintf("item %d", i)), mh.SHA2_256, -1)
	return cid.NewCidV0(h)
}

func testDescriptor(t testing.TB, creator crypto.PrivKey, r int) *Descriptor {
	t.Helper()
	d := &Descriptor{Name: "photos", CreatorKey: creator.GetPublic(), Replication: r, Nonce: []byte("nonce")}
	d.Creator, _ = peer.IDFromPublicKey(d.CreatorKey)
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	return d
}

// fastConfig has no warm-up and no GC delay, for unit tests.
func fastConfig() Config {
	c := DefaultConfig()
	c.WarmUp = -1
	c.GCDelay = -1
	return c
}

func newReplica(t testing.TB, d *Descriptor, key crypto.PrivKey, cfg Config) *Collection {
	t.Helper()
	c, err := New(d, key, cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustAdd(t testing.TB, c *Collection, items ...AddItem) []blocks.Block {
	t.Helper()
	bs, err := c.Add(items...)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func addItems(ids ...int) []AddItem {
	out := make([]AddItem, len(ids))
	for i, id := range ids {
		out[i] = AddItem{Cid: itemCID(id)}
	}
	return out
}

func feed(t testing.TB, c *Collection, bs ...blocks.Block) {
	t.Helper()
	for _, b := range bs {
		if _, err := c.AddBlock(b); err != nil {
			t.Fatalf("AddBlock %s: %v", b.Cid(), err)
		}
	}
}

// fingerprint summarises a replica's state: items with attributes, heads
// and clock. Replicas that converged have equal fingerprints.
func fingerprint(c *Collection) string {
	var b strings.Builder
	for _, it := range c.Items() {
		fmt.Fprintf(&b, "%s %q %d\n", it.Cid, it.Label, it.Replication)
	}
	b.WriteString("heads:")
	for _, h := range c.Status().Heads {
		fmt.Fprintf(&b, " %s", h.Cid)
	}
	b.WriteString("\nclock:")
	for _, d := range c.Clock() {
		fmt.Fprintf(&b, " %s=%d", d.Author, d.Seq)
	}
	return b.String()
}

func shortFP(c *Collection) string {
	s := sha256.Sum256([]byte(fingerprint(c)))
	return fmt.Sprintf("%x (%d items)", s[:6], c.Len())
}

// mapGetter serves blocks from a map.
type mapGetter map[string]blocks.Block

func (m mapGetter) put(bs ...blocks.Block) {
	for _, b := range bs {
		m[b.Cid().KeyString()] = b
	}
}

func (m mapGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan blocks.Block {
	ch := make(chan blocks.Block, len(cids))
	for _, c := range cids {
		if b, ok := m[c.KeyString()]; ok {
			ch <- b
		}
	}
	close(ch)
	return ch
}

func sortedCIDStrings(cs []cid.Cid) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	sort.Strings(out)
	return out
}

func mustKey(t testing.TB, seed int64) crypto.PrivKey {
	k, _ := testKey(t, seed)
	return k
}

// introduce makes a and b members of each other's replicas, as their
// first heartbeats do.
func introduce(t testing.TB, a, b *Collection) {
	t.Helper()
	for _, p := range [][2]*Collection{{a, b}, {b, a}} {
		hb, err := p[1].Heartbeat()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p[0].HandleMessage(p[1].Self(), hb); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
}

// ask has r request heads from src and returns src's answer, or nil.
func ask(t testing.TB, src, r *Collection) []byte {
	t.Helper()
	reply, err := src.HandleMessage(r.Self(), r.HeadsRequest())
	if err != nil {
		t.Fatal(err)
	}
	if !reply.Answer {
		return nil
	}
	return src.TakeAnswer()
}
