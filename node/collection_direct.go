package node

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/weft-p2p/weft/protocol/collection"
)

// The direct heads exchange (protocol/collection direct.go), wired to
// libp2p streams.
//
// A member that joins asks directFanout of its topic peers for their heads
// on a stream, instead of publishing a heads request that every member
// takes (and that members answered on the topic, each answer again to
// every member): a join costs the collection its first heartbeat, and
// nothing else that reaches every member. A member also asks a topic peer
// directly when the peer appears on the topic again after a silence (a
// partition healed, a connection came back). The topic request stays for
// what the streams cannot do: a member heard again after a silence over
// the topic, and a join whose direct asks all failed (peers of a version
// without the protocol).

const (
	// directFanout is how many answers from members a join collects.
	directFanout = 3
	// maxJoinAsks bounds the peers a join asks; with no answer from any of
	// them it asks on the topic.
	maxJoinAsks = 8
	// directTimeout bounds one exchange, each way.
	directTimeout = 10 * time.Second
	// joinAskFor is how long a join keeps asking topic peers directly
	// before it asks on the topic, if none answered.
	joinAskFor = 30 * time.Second
)

// serveHeads answers a direct heads request: the requester wrote an
// encoded HeadsRequest and closed its side.
func (cs *collections) serveHeads(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(directTimeout))
	req, err := io.ReadAll(io.LimitReader(s, collection.MaxHeadsRequestSize+1))
	if err != nil || len(req) > collection.MaxHeadsRequestSize {
		s.Reset()
		return
	}
	q, err := collection.DecodeHeadsRequest(req)
	if err != nil {
		s.Reset()
		return
	}
	cs.mu.Lock()
	m := cs.byID[q.Collection.KeyString()]
	cs.mu.Unlock()
	if m == nil {
		s.Reset() // not a member of it
		return
	}
	m.c.Advance(time.Now())
	ans, err := m.c.AnswerDirect(s.Conn().RemotePeer(), req)
	if err != nil {
		cs.log.Debug("collection: direct request refused", "collection", m.id, "from", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	if _, err := s.Write(ans); err != nil {
		s.Reset()
	}
}

// askJoin makes the join's direct asks: to topic peers not asked yet, as
// long as fewer than directFanout members answered and none is on its way
// for each missing answer. Under stepMu.
func (m *member) askJoin(now time.Time, topicPeers []peer.ID) {
	j := &m.join
	if j.done {
		return
	}
	ok := int(j.answered.Load())
	if ok >= directFanout || len(j.asked) >= maxJoinAsks || now.After(j.until) {
		j.done = true
		if ok == 0 {
			m.request.Store(true) // nobody answered: ask on the topic
		}
		j.asked = nil
		return
	}
	need := directFanout - ok - int(j.inflight.Load())
	if need <= 0 || len(topicPeers) == 0 {
		return
	}
	for _, i := range rand.Perm(len(topicPeers)) {
		if need == 0 || len(j.asked) >= maxJoinAsks {
			break
		}
		p := topicPeers[i]
		if _, done := j.asked[p]; done {
			continue
		}
		j.asked[p] = struct{}{}
		need--
		m.ask(p, true)
	}
}

// ask asks p for its heads on a stream, in a goroutine of the member's; a
// join's ask counts in m.join.
func (m *member) ask(p peer.ID, forJoin bool) {
	m.stats.directAsks.Add(1)
	if forJoin {
		m.join.inflight.Add(1)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.exchange(p)
		if forJoin {
			if err == nil {
				m.join.answered.Add(1)
			}
			m.join.inflight.Add(-1)
		}
		if err != nil {
			m.stats.directFailures.Add(1)
			if m.ctx.Err() == nil {
				m.cs.log.Debug("collection: direct heads", "collection", m.id, "peer", p, "err", err)
			}
		}
		m.cs.poke() // fetch what it named, or ask another peer
	}()
}

// exchange sends p a heads request on a new stream (over a connection
// there is: p is a topic peer) and takes its answer.
func (m *member) exchange(p peer.ID) error {
	ctx, cancel := context.WithTimeout(m.ctx, directTimeout)
	defer cancel()
	s, err := m.cs.n.net.Host.NewStream(network.WithNoDial(ctx, "collection heads"), p, protocol.ID(collection.HeadsProtocolID))
	if err != nil {
		return fmt.Errorf("open heads stream to %s: %w", p, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(directTimeout))
	m.c.Advance(time.Now())
	if _, err := s.Write(m.c.HeadsRequest()); err != nil {
		s.Reset()
		return fmt.Errorf("send heads request to %s: %w", p, err)
	}
	_ = s.CloseWrite()
	data, err := io.ReadAll(io.LimitReader(s, collection.MaxDirectAnswerSize+1))
	if err != nil {
		s.Reset()
		return fmt.Errorf("read heads answer from %s: %w", p, err)
	}
	if len(data) > collection.MaxDirectAnswerSize {
		s.Reset()
		return fmt.Errorf("heads answer from %s: over %d bytes", p, collection.MaxDirectAnswerSize)
	}
	m.c.Advance(time.Now())
	if err := m.c.TakeDirectAnswer(p, data); err != nil {
		return fmt.Errorf("heads answer from %s: %w", p, err)
	}
	return nil
}
