package node

import (
	"context"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/protocol/collection"
)

// This file connects the protocol's authorisation of topic messages
// (protocol/collection/auth.go) to gossipsub: the topic validator, the
// delayed answers to heads requests, and the counters behind
// weft_collection_refused_total and weft_collection_answers_total.

// authCounters add up, over every collection this node was a member of,
// what the protocol refused and answered.
type authCounters struct {
	notMember, overBudget, rateLimited, falseClaims, wantedFull, answers atomic.Uint64
}

// CollectionAuthStats is what the node's collections refused and answered
// since it started (summed over collections).
type CollectionAuthStats struct {
	// Refused counts refusals by reason: not_member, over_budget,
	// rate_limited, false_claim, wanted_full.
	Refused map[string]uint64
	// Answers counts answers to heads requests published.
	Answers uint64
}

// CollectionAuthStats returns the refusals and answers of the node's
// collections.
func (n *Node) CollectionAuthStats() CollectionAuthStats {
	if n.colls == nil {
		return CollectionAuthStats{Refused: map[string]uint64{}}
	}
	for _, m := range n.colls.list() {
		m.stepMu.Lock()
		m.reportAuth()
		m.stepMu.Unlock()
	}
	a := &n.colls.auth
	return CollectionAuthStats{
		Refused: map[string]uint64{
			"not_member":   a.notMember.Load(),
			"over_budget":  a.overBudget.Load(),
			"rate_limited": a.rateLimited.Load(),
			"false_claim":  a.falseClaims.Load(),
			"wanted_full":  a.wantedFull.Load(),
		},
		Answers: a.answers.Load(),
	}
}

// validate is the topic validator: the protocol's verdict on the message
// from its verified origin. Rejected messages lower the sender's gossipsub
// score; ignored ones are dropped without penalty.
func (m *member) validate(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	from := msg.GetFrom()
	m.c.Advance(time.Now())
	v, err := m.c.Authorize(from, msg.GetData())
	switch v {
	case collection.Accept:
		return pubsub.ValidationAccept
	case collection.Ignore:
		return pubsub.ValidationIgnore
	}
	m.stats.badMessages.Add(1)
	m.cs.log.Debug("collection: message rejected", "collection", m.id, "from", from, "err", err)
	return pubsub.ValidationReject
}

// scheduleAnswer has answerLoop answer a heads request after d.
func (m *member) scheduleAnswer(d time.Duration) {
	select {
	case m.answer <- d:
	default: // one is scheduled already; TakeAnswer serves both
	}
}

// answerLoop publishes the answers HandleMessage schedules, each after
// its random delay and at most one per answer_delay: first a heartbeat
// (so a requester that has not heard this member yet takes the answer),
// then the answer, unless another member answered alike meanwhile.
func (m *member) answerLoop() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	pending := false
	var last time.Time
	for {
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case d := <-m.answer:
			if pending {
				continue
			}
			if gap := m.cs.cfg.AnswerDelay.D() - time.Since(last); gap > d {
				d = gap
			}
			t.Reset(d)
			pending = true
		case <-t.C:
			pending = false
			ans := m.c.TakeAnswer()
			if ans == nil {
				continue
			}
			if hb, err := m.c.Heartbeat(); err == nil {
				m.publish(hb)
			}
			m.publish(ans)
			last = time.Now()
		}
	}
}

// reportAuth adds what the protocol counted since the last call to the
// node's counters, and logs a wanted set that filled up. Called with
// stepMu held.
func (m *member) reportAuth() {
	st := m.c.Stats()
	prev := m.reported
	m.reported = st
	a := &m.cs.auth
	a.notMember.Add(st.NotMember - prev.NotMember)
	a.overBudget.Add(st.OverBudget - prev.OverBudget)
	a.rateLimited.Add(st.RateLimited - prev.RateLimited)
	a.falseClaims.Add(st.FalseClaims - prev.FalseClaims)
	a.wantedFull.Add(st.WantedFull - prev.WantedFull)
	a.answers.Add(st.Answers - prev.Answers)
	if d := st.WantedFull - prev.WantedFull; d > 0 {
		m.cs.log.Warn("collection: wanted set full: claims of the members with the most were dropped",
			"collection", m.id, "dropped", d)
	}
	if d := st.FalseClaims - prev.FalseClaims; d > 0 {
		m.cs.log.Info("collection: announced blocks never fetched; their announcers' budgets shrink",
			"collection", m.id, "blocks", d)
	}
}
