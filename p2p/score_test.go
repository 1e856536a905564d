package p2p

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func startNetwork(t *testing.T, score ScoreConfig) *Network {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := New(ctx, Config{
		Identity:    sk,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Datastore:   dssync.MutexWrap(datastore.NewMapDatastore()),
		Score:       score,
	})
	if err != nil {
		t.Fatalf("start network: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestTopicScored: Topic joins once per name and gossipsub accepts the
// topic score parameters, for the default and for short test settings.
func TestTopicScored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		score ScoreConfig
	}{
		{"defaults", ScoreConfig{}},
		{"short", ScoreConfig{DecayInterval: time.Second, InvalidMessageDecay: 2 * time.Second, CheckInterval: 10 * time.Millisecond, BanDuration: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNetwork(t, tc.score)
			a, err := n.Topic("/weft/feed/1/x")
			if err != nil {
				t.Fatal(err)
			}
			again, err := n.Topic("/weft/feed/1/x")
			if err != nil || again != a {
				t.Fatalf("second Topic: %v, %v (same handle: %v)", again, err, again == a)
			}
			if _, err := n.Topic("user topic"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestScoreConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    ScoreConfig
		ok   bool
	}{
		{"defaults", ScoreConfig{}, true},
		{"decay under 1s", ScoreConfig{DecayInterval: 500 * time.Millisecond}, false},
		{"invalid decay not above interval", ScoreConfig{DecayInterval: 2 * time.Second, InvalidMessageDecay: 2 * time.Second}, false},
		{"short", ScoreConfig{DecayInterval: time.Second, InvalidMessageDecay: 2 * time.Second}, true},
	} {
		c := tc.c
		c.setDefaults()
		if err := c.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestThresholdCounts keeps the counts of invalid messages stated beside
// the thresholds true: the fewest invalid messages on one topic that take
// a peer with the best possible positive score below each threshold.
func TestThresholdCounts(t *testing.T) {
	p := topicScoreParams(ScoreConfig{DecayInterval: time.Second, InvalidMessageDecay: time.Hour})
	fewest := func(threshold float64) int {
		for n := 1; ; n++ {
			if topicScoreCap+float64(n*n)*p.InvalidMessageDeliveriesWeight*p.TopicWeight < threshold {
				return n
			}
		}
	}
	for _, tc := range []struct {
		name      string
		threshold float64
		want      int
	}{
		{"gossip", GossipThreshold, 8},
		{"publish", PublishThreshold, 11},
		{"graylist", GraylistThreshold, 16},
	} {
		if got := fewest(tc.threshold); got != tc.want {
			t.Errorf("%s threshold crossed after %d invalid messages; the comment says %d", tc.name, got, tc.want)
		}
	}
	// Positive credit never exceeds the cap it is documented to.
	if maxCredit := p.TimeInMeshCap*p.TimeInMeshWeight + p.FirstMessageDeliveriesCap*p.FirstMessageDeliveriesWeight; maxCredit > topicScoreCap || math.IsNaN(maxCredit) {
		t.Errorf("one topic can credit %v, over the cap %v", maxCredit, topicScoreCap)
	}
}

func TestGateBans(t *testing.T) {
	g := newGate(nil)
	p := peer.ID("banned")
	now := time.Now()
	g.ban(p, now.Add(time.Hour))
	if g.ok(p) || !g.banned(p, now) || g.bannedCount(now) != 1 {
		t.Fatal("a banned peer is let in")
	}
	if g.banned(p, now.Add(2*time.Hour)) {
		t.Fatal("a ban outlives its time")
	}
	g.pruneBans(now.Add(2 * time.Hour))
	if len(g.bans) != 0 || !g.ok(p) {
		t.Fatal("an expired ban stays")
	}
	for i := range maxBans + 10 {
		g.ban(peer.ID(rune(i)), now.Add(time.Hour))
	}
	if len(g.bans) > maxBans {
		t.Fatalf("%d bans kept, bound %d", len(g.bans), maxBans)
	}
}
