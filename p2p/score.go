package p2p

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ScoreConfig tunes gossipsub peer scoring and what follows a bad score.
// The zero value of every field is the default noted beside it.
type ScoreConfig struct {
	// DecayInterval is how often gossipsub decays the score counters
	// (default 5s, which the score watch matches; gossipsub refuses less
	// than 1s). Every decay factor is derived from it, so it sets the
	// granularity, not the speed, of decay; each tick wakes an idle node.
	DecayInterval time.Duration
	// InvalidMessageDecay is how long a peer's count of invalid messages on
	// a topic takes to decay to nothing while it stays connected (default
	// 1h). Longer means a slow trickle of garbage is caught too.
	InvalidMessageDecay time.Duration
	// CheckInterval is how often the scores are read to disconnect peers
	// below the graylist threshold (default 5s).
	CheckInterval time.Duration
	// BanDuration is how long a peer disconnected for its score is refused,
	// in both directions (default 10m).
	BanDuration time.Duration
}

func (c *ScoreConfig) setDefaults() {
	if c.DecayInterval <= 0 {
		c.DecayInterval = 5 * time.Second
	}
	if c.InvalidMessageDecay <= 0 {
		c.InvalidMessageDecay = time.Hour
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 5 * time.Second
	}
	if c.BanDuration <= 0 {
		c.BanDuration = 10 * time.Minute
	}
}

func (c *ScoreConfig) validate() error {
	if c.DecayInterval < time.Second {
		return fmt.Errorf("p2p: score decay interval %v is under gossipsub's minimum of 1s", c.DecayInterval)
	}
	if c.InvalidMessageDecay <= c.DecayInterval {
		return fmt.Errorf("p2p: invalid-message decay %v must be longer than the decay interval %v", c.InvalidMessageDecay, c.DecayInterval)
	}
	return nil
}

// Score thresholds. Scores only go below zero through penalties: invalid
// messages on a weft topic (P4), IP colocation outside private ranges (P6)
// and gossip misbehaviour such as broken IWANT promises (P7).
const (
	// Below GossipThreshold a peer gets no gossip from us and its gossip
	// is ignored (about 8 invalid messages on one topic).
	GossipThreshold = -500
	// Below PublishThreshold our own messages are not flood-published to
	// it (about 11 invalid messages).
	PublishThreshold = -1000
	// Below GraylistThreshold every RPC of the peer is ignored, and the
	// score watch disconnects and bans it (about 16 invalid messages).
	GraylistThreshold = -2500

	// invalidMessageWeight is P4's weight: the penalty is the square of the
	// (decaying) count of invalid messages times this, so a peer that
	// rejected one message by accident barely moves and a flooder falls
	// fast.
	invalidMessageWeight = -10
	// topicScoreCap bounds what good behaviour (P1, P2) on every topic
	// together can add, so that it never buys room for garbage.
	topicScoreCap = 50
)

// peerScoreParams turns gossipsub peer scoring on with weights that punish
// invalid messages and misbehaving peers. IP colocation is not punished for
// loopback and private ranges, where local testnets run many nodes per IP.
// Topic parameters are added per topic as it is joined (topicScoreParams,
// Network.Topic): gossipsub counts invalid messages only on scored topics.
func peerScoreParams(c ScoreConfig) *pubsub.PeerScoreParams {
	var private []*net.IPNet
	for _, cidr := range []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"} {
		_, n, _ := net.ParseCIDR(cidr)
		private = append(private, n)
	}
	return &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:               topicScoreCap,
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		IPColocationFactorWeight:    -10,
		IPColocationFactorThreshold: 8,
		IPColocationFactorWhitelist: private,
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       decay(c, 10*time.Minute),
		DecayInterval:               c.DecayInterval,
		DecayToZero:                 pubsub.DefaultDecayToZero,
		RetainScore:                 10 * time.Minute,
	}
}

// decay is the per-interval factor that takes a counter to zero in d.
func decay(c ScoreConfig, d time.Duration) float64 {
	return pubsub.ScoreParameterDecayWithBase(d, c.DecayInterval, pubsub.DefaultDecayToZero)
}

// topicScoreParams are the score parameters of every weft topic: feeds,
// collections and the topics users join with `weft pubsub`.
//
// Mesh delivery penalties (P3, P3b) are off (weight 0): they punish mesh
// peers that deliver fewer messages than a threshold, which on a small
// swarm, or on a feed that publishes once an hour, would be every honest
// peer, pruning the mesh to nothing.
func topicScoreParams(c ScoreConfig) *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight: 1,
		// P1: a little credit for staying in the mesh, up to +10.
		TimeInMeshWeight:  0.01,
		TimeInMeshQuantum: time.Second,
		TimeInMeshCap:     1000,
		// P2: credit for delivering messages first, up to +20.
		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  decay(c, 10*time.Minute),
		FirstMessageDeliveriesCap:    20,
		// P3, P3b: off, see above.
		MeshMessageDeliveriesWeight: 0,
		MeshFailurePenaltyWeight:    0,
		// P4: invalid messages (those a validator rejects, and bad
		// signatures) cost the square of their count.
		InvalidMessageDeliveriesWeight: invalidMessageWeight,
		InvalidMessageDeliveriesDecay:  decay(c, c.InvalidMessageDecay),
	}
}

func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:   GossipThreshold,
		PublishThreshold:  PublishThreshold,
		GraylistThreshold: GraylistThreshold,
		// Unreachable with topicScoreCap: peer exchange is never taken.
		AcceptPXThreshold:           1000,
		OpportunisticGraftThreshold: 3.5,
	}
}

// Topic joins topic, with weft's topic score parameters, or returns the
// handle joined before: gossipsub allows one handle per topic and router.
// Every weft topic (feeds, collections, user pubsub) is joined here, so
// every one is scored.
func (n *Network) Topic(topic string) (*pubsub.Topic, error) {
	n.topicsMu.Lock()
	defer n.topicsMu.Unlock()
	if t, ok := n.topics[topic]; ok {
		return t, nil
	}
	t, err := n.PubSub.Join(topic)
	if err != nil {
		return nil, fmt.Errorf("join topic %q: %w", topic, err)
	}
	if err := t.SetScoreParams(topicScoreParams(n.cfg.Score)); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("score topic %q: %w", topic, err)
	}
	n.topics[topic] = t
	return t, nil
}

// ScoreStats describes peer scoring as last read.
type ScoreStats struct {
	// Scored is how many peers gossipsub keeps a score for (connected, or
	// disconnected with a retained score).
	Scored int
	// Graylisted is how many of them are below GraylistThreshold.
	Graylisted int
	// Banned is how many peers are refused for their score now.
	Banned int
	// Disconnected counts disconnections for a score below
	// GraylistThreshold since start.
	Disconnected uint64
}

// scoreWatch reads gossipsub's peer scores every ScoreConfig.CheckInterval
// and disconnects and bans peers below GraylistThreshold. Gossipsub only
// graylists (ignores a peer's RPCs); the peer would otherwise keep its
// connection, its streams and its place in our DHT and exchange.
type scoreWatch struct {
	n      *Network
	latest chan map[peer.ID]*pubsub.PeerScoreSnapshot // the newest snapshot, at most one

	mu     sync.Mutex
	scores map[peer.ID]float64

	disconnected atomic.Uint64
}

func newScoreWatch(n *Network) *scoreWatch {
	return &scoreWatch{n: n, latest: make(chan map[peer.ID]*pubsub.PeerScoreSnapshot, 1), scores: map[peer.ID]float64{}}
}

// inspect is gossipsub's score inspector. Gossipsub calls it on a
// goroutine of its own; it hands the snapshot over without blocking,
// replacing one the loop has not taken yet.
func (w *scoreWatch) inspect(snap map[peer.ID]*pubsub.PeerScoreSnapshot) {
	for {
		select {
		case w.latest <- snap:
			return
		default:
		}
		select {
		case <-w.latest:
		default:
		}
	}
}

// run handles snapshots until ctx ends.
func (w *scoreWatch) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case snap := <-w.latest:
			w.handle(snap)
		}
	}
}

func (w *scoreWatch) handle(snap map[peer.ID]*pubsub.PeerScoreSnapshot) {
	scores := make(map[peer.ID]float64, len(snap))
	var bad []peer.ID
	for p, s := range snap {
		scores[p] = s.Score
		if s.Score < GraylistThreshold && w.n.Host.Network().Connectedness(p) == network.Connected {
			bad = append(bad, p)
		}
	}
	w.mu.Lock()
	w.scores = scores
	w.mu.Unlock()
	now := time.Now()
	w.n.gate.pruneBans(now)
	for _, p := range bad {
		s := snap[p]
		var invalid []string
		for t, ts := range s.Topics {
			if ts.InvalidMessageDeliveries > 0 {
				invalid = append(invalid, fmt.Sprintf("%s=%.0f", t, ts.InvalidMessageDeliveries))
			}
		}
		sort.Strings(invalid)
		w.n.gate.ban(p, now.Add(w.n.cfg.Score.BanDuration))
		_ = w.n.Host.Network().ClosePeer(p)
		w.disconnected.Add(1)
		w.n.cfg.Logger.Warn("p2p: disconnected and banned a peer below the gossipsub graylist threshold",
			"peer", p, "score", s.Score, "invalid_messages", invalid,
			"behaviour_penalty", s.BehaviourPenalty, "ban", w.n.cfg.Score.BanDuration)
	}
}

// PeerScore returns p's gossipsub score as last read (every
// ScoreConfig.CheckInterval); ok is false if gossipsub kept none.
func (n *Network) PeerScore(p peer.ID) (score float64, ok bool) {
	n.scores.mu.Lock()
	defer n.scores.mu.Unlock()
	score, ok = n.scores.scores[p]
	return score, ok
}

// Banned reports whether p is refused for its score now.
func (n *Network) Banned(p peer.ID) bool { return n.gate.banned(p, time.Now()) }

// ScoreStats returns the peer scoring figures as last read.
func (n *Network) ScoreStats() ScoreStats {
	n.scores.mu.Lock()
	st := ScoreStats{Scored: len(n.scores.scores)}
	for _, s := range n.scores.scores {
		if s < GraylistThreshold {
			st.Graylisted++
		}
	}
	n.scores.mu.Unlock()
	st.Banned = n.gate.bannedCount(time.Now())
	st.Disconnected = n.scores.disconnected.Load()
	return st
}
