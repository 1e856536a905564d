package p2p

import (
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// TopicStats counts gossipsub messages of one topic.
type TopicStats struct {
	// Delivered messages passed validation and reached local subscribers
	// (this node's own publishes included).
	Delivered uint64
	// Sent counts message copies queued to peers.
	Sent uint64
	// Rejected counts messages dropped by validation, by reason
	// ("validation failed", "validation ignored", "invalid signature", ...).
	Rejected map[string]uint64
	// Duplicates counts copies of messages already seen.
	Duplicates uint64
}

// pubsubStats is a gossipsub raw tracer that counts per topic. Tracer
// methods run synchronously inside gossipsub, so each takes one short lock.
type pubsubStats struct {
	mu     sync.Mutex
	topics map[string]*TopicStats
}

func newPubsubStats() *pubsubStats { return &pubsubStats{topics: map[string]*TopicStats{}} }

func (s *pubsubStats) topic(t string) *TopicStats {
	ts := s.topics[t]
	if ts == nil {
		ts = &TopicStats{Rejected: map[string]uint64{}}
		s.topics[t] = ts
	}
	return ts
}

// snapshot copies the counters.
func (s *pubsubStats) snapshot() map[string]TopicStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]TopicStats, len(s.topics))
	for t, ts := range s.topics {
		c := *ts
		c.Rejected = make(map[string]uint64, len(ts.Rejected))
		for k, v := range ts.Rejected {
			c.Rejected[k] = v
		}
		out[t] = c
	}
	return out
}

func (s *pubsubStats) DeliverMessage(m *pubsub.Message) {
	s.mu.Lock()
	s.topic(m.GetTopic()).Delivered++
	s.mu.Unlock()
}

func (s *pubsubStats) RejectMessage(m *pubsub.Message, reason string) {
	s.mu.Lock()
	s.topic(m.GetTopic()).Rejected[reason]++
	s.mu.Unlock()
}

func (s *pubsubStats) DuplicateMessage(m *pubsub.Message) {
	s.mu.Lock()
	s.topic(m.GetTopic()).Duplicates++
	s.mu.Unlock()
}

func (s *pubsubStats) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	if len(rpc.GetPublish()) == 0 {
		return
	}
	s.mu.Lock()
	for _, m := range rpc.GetPublish() {
		s.topic(m.GetTopic()).Sent++
	}
	s.mu.Unlock()
}

func (s *pubsubStats) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (s *pubsubStats) OnClosedOutboundStream(peer.ID)                       {}
func (s *pubsubStats) Join(string)                                          {}
func (s *pubsubStats) Leave(string)                                         {}
func (s *pubsubStats) Graft(peer.ID, string)                                {}
func (s *pubsubStats) Prune(peer.ID, string)                                {}
func (s *pubsubStats) ValidateMessage(*pubsub.Message)                      {}
func (s *pubsubStats) ThrottlePeer(peer.ID)                                 {}
func (s *pubsubStats) RecvRPC(*pubsub.RPC)                                  {}
func (s *pubsubStats) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (s *pubsubStats) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (s *pubsubStats) UndeliverableMessage(*pubsub.Message)                 {}

// PubsubStats returns per-topic message counters.
func (n *Network) PubsubStats() map[string]TopicStats { return n.psStats.snapshot() }
