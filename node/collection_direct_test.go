package node_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/collection"
)

// TestCollectionJoinDirect: a member that joins a collection with history
// asks members for their heads on direct streams. It converges, and the
// join makes no heads request or answer on the topic: neither the
// newcomer nor any member publishes one, so a join costs the members one
// delivery (the newcomer's heartbeat), not three or more.
func TestCollectionJoinDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := newCollCluster(t, ctx, 5, collTune(2*time.Second))
	old, newcomer := cl.nodes[:4], cl.nodes[4]
	id := create(t, ctx, old[0], "shared", 2)
	joinAll(t, ctx, id, old[1:])
	items := addFiles(t, ctx, old[0], 12)
	c0 := nodetest.Client(old[0])
	for i := 0; i < len(items); i += 4 {
		if _, err := c0.CollectionAdd(ctx, id, items[i:i+4], 0, "batch"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the first four agree and placed every item", func() (bool, string) {
		if ok, why := sameState(t, id, old); !ok {
			return false, why
		}
		return placed(t, ctx, id, items, 2, old)
	})
	stats := func(n *node.Node) api.CollectionStats {
		t.Helper()
		st, err := n.CollectionStatus(id)
		if err != nil {
			t.Fatal(err)
		}
		return st.Stats
	}
	before := make([]api.CollectionStats, len(old))
	for i, n := range old {
		before[i] = stats(n)
	}

	joinAll(t, ctx, id, []*node.Node{newcomer})
	d := waitFor(t, 30*time.Second, "the newcomer holds the collection's state", func() (bool, string) {
		return sameState(t, id, cl.nodes)
	})
	t.Logf("newcomer converged %v after its join", d.Round(time.Millisecond))

	got := stats(newcomer)
	t.Logf("newcomer: %d direct asks, %d failed, %d answers taken, %d requests published", got.DirectAsks, got.DirectFailures, got.DirectTaken, got.RequestsPublished)
	if got.DirectTaken == 0 {
		t.Error("the newcomer took no direct answer")
	}
	if got.RequestsPublished != 0 {
		t.Errorf("the newcomer published %d heads requests on the topic", got.RequestsPublished)
	}
	var answered uint64
	for i, n := range old {
		after := stats(n)
		answered += after.DirectAnswers - before[i].DirectAnswers
		if r := after.RequestsPublished - before[i].RequestsPublished; r != 0 {
			t.Errorf("member %d published %d heads requests for the join", i, r)
		}
		if a := after.Answers - before[i].Answers; a != 0 {
			t.Errorf("member %d answered on the topic %d times for the join", i, a)
		}
	}
	if answered == 0 {
		t.Error("no member answered directly")
	}
}

// TestCollectionDirectRequestFlood: a peer that asks a member for heads
// on stream after stream is answered once per collection.answer_interval;
// the other streams are reset, and the member's topic is untouched.
func TestCollectionDirectRequestFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newCollCluster(t, ctx, 2, collTune(2*time.Second))
	member, flooder := cl.nodes[0], cl.nodes[1]
	id := create(t, ctx, member, "shared", 1)
	c, err := cid.Decode(id)
	if err != nil {
		t.Fatal(err)
	}
	req := (&collection.HeadsRequest{Collection: c}).Encode()
	const requests = 200
	began := time.Now()
	answers := 0
	for range requests {
		s, err := flooder.Network().Host.NewStream(ctx, member.ID(), collection.HeadsProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(req); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseWrite()
		data, err := io.ReadAll(io.LimitReader(s, collection.MaxDirectAnswerSize+1))
		s.Close()
		if err == nil && len(data) > 0 {
			if _, err := collection.DecodeDirectAnswer(data); err != nil {
				t.Fatalf("answer: %v", err)
			}
			answers++
		}
	}
	interval := node.DefaultCollectionConfig().AnswerInterval.D()
	bound := int(time.Since(began)/interval) + 1
	st, err := member.CollectionStatus(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d answers to %d requests in %v (bound %d); rate limited %d", answers, requests, time.Since(began).Round(time.Millisecond), bound, st.Stats.RateLimited)
	if answers == 0 || answers > bound {
		t.Errorf("%d answers, want 1..%d", answers, bound)
	}
	if st.Stats.DirectAnswers != uint64(answers) || st.Stats.RateLimited < uint64(requests-answers) {
		t.Errorf("stats: %d direct answers, %d rate limited", st.Stats.DirectAnswers, st.Stats.RateLimited)
	}
}
