package collection

import (
	"errors"
	"fmt"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// junkHeads is a heads message naming n made-up heads, from offset on.
func junkHeads(r *Collection, offset, n int) []byte {
	h := Heads{Collection: r.ID()}
	for i := range n {
		h.Heads = append(h.Heads, Link{Cid: newBlock(fmt.Appendf(nil, "junk %d", offset+i)).Cid(), Author: r.Descriptor().Creator, Seq: uint64(offset + i + 1)})
	}
	sortLinks(h.Heads)
	return h.Encode()
}

// authFixture is a replica r (the creator's) and two other replicas,
// members of no one yet.
func authFixture(t *testing.T, cfg Config) (r, a, b *Collection) {
	t.Helper()
	ck, _ := testKey(t, 1)
	d := testDescriptor(t, ck, 2)
	r = newReplica(t, d, ck, cfg)
	ka, _ := testKey(t, 2)
	kb, _ := testKey(t, 3)
	return r, newReplica(t, d, ka, cfg), newReplica(t, d, kb, cfg)
}

func TestNonMemberRefused(t *testing.T) {
	r, stranger, _ := authFixture(t, fastConfig())
	from := stranger.Self()
	heads := junkHeads(r, 0, 10)
	req := stranger.HeadsRequest()
	for _, tc := range []struct {
		name string
		at   time.Duration // since t0
		data []byte
		want Verdict
	}{
		{"heads, sender new", 0, heads, Ignore},
		{"request, sender new", time.Second, req, Ignore},
		{"heads, still no heartbeat", 3 * r.cfg.HeartbeatInterval, heads, Reject},
		{"request, still no heartbeat", 3 * r.cfg.HeartbeatInterval, req, Reject},
		{"garbage", 0, []byte{KindHeads, 1, 2, 3}, Reject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.Tick(t0.Add(tc.at))
			v, err := r.Authorize(from, tc.data)
			if v != tc.want || err == nil {
				t.Fatalf("verdict %v (%v), want %v", v, err, tc.want)
			}
			if rep, err := r.HandleMessage(from, tc.data); rep.Answer || err == nil {
				t.Fatalf("handled: %+v %v", rep, err)
			}
			if n := len(r.Missing()); n != 0 {
				t.Fatalf("%d blocks wanted from a non-member's message", n)
			}
		})
	}
	if st := r.Stats(); st.NotMember == 0 || st.Answers != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A heartbeat published by another peer than its member is rejected.
	hb, err := stranger.Heartbeat()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := r.Authorize(peer.ID("someone else"), hb); v != Reject || !errors.Is(err, ErrSenderMismatch) {
		t.Fatalf("forwarded heartbeat: %v %v", v, err)
	}
	// Its own heartbeat makes it a member; its messages pass.
	if v, err := r.Authorize(from, hb); v != Accept {
		t.Fatalf("heartbeat: %v %v", v, err)
	}
	if v, err := r.Authorize(from, heads); v != Accept {
		t.Fatalf("heads from a member: %v %v", v, err)
	}
}

// A heads message that came just before its sender's first heartbeat is
// taken when the heartbeat comes.
func TestHeldHeadsTakenOnHeartbeat(t *testing.T) {
	r, m, _ := authFixture(t, fastConfig())
	if v, _ := r.Authorize(m.Self(), junkHeads(r, 0, 5)); v != Ignore {
		t.Fatalf("verdict %v", v)
	}
	hb, _ := m.Heartbeat()
	if v, err := r.Authorize(m.Self(), hb); v != Accept {
		t.Fatalf("heartbeat: %v %v", v, err)
	}
	if n := len(r.Missing()); n != 5 {
		t.Fatalf("wanted %d, want the 5 held heads", n)
	}
}

func TestClaimBudget(t *testing.T) {
	cfg := fastConfig()
	r, m, _ := authFixture(t, cfg)
	introduce(t, r, m)
	from := m.Self()
	// 1,024 made-up heads: only MaxClaims are taken.
	if _, err := r.HandleMessage(from, junkHeads(r, 0, MaxHeads)); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Missing()); n != cfg.MaxClaims {
		t.Fatalf("wanted %d, want the budget %d", n, cfg.MaxClaims)
	}
	if st := r.Stats(); st.OverBudget != uint64(MaxHeads-cfg.MaxClaims) {
		t.Fatalf("over budget %d", st.OverBudget)
	}
	// None of them can be fetched: past ClaimTimeout they are false, and
	// the budget halves for each.
	r.Tick(t0.Add(cfg.ClaimTimeout + time.Second))
	if n := len(r.Missing()); n != 0 {
		t.Fatalf("still wanted %d", n)
	}
	if st := r.Stats(); st.FalseClaims != uint64(cfg.MaxClaims) {
		t.Fatalf("false claims %d", st.FalseClaims)
	}
	if _, err := r.HandleMessage(from, junkHeads(r, 5000, 100)); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Missing()); n != 0 {
		t.Fatalf("a member with false claims still has %d taken", n)
	}
	// Another member is unaffected.
	_, _, o := authFixture(t, cfg)
	introduce(t, r, o)
	if _, err := r.HandleMessage(o.Self(), junkHeads(r, 9000, 10)); err != nil {
		t.Fatal(err)
	}
	if n := r.Claims()[o.Self()]; n != 10 {
		t.Fatalf("other member's claims %d", n)
	}
}

// A true claim (the block arrives) gives back half of what a false one
// took.
func TestTrueClaimRestoresBudget(t *testing.T) {
	cfg := fastConfig()
	r, w, _ := authFixture(t, cfg)
	introduce(t, r, w)
	r.Tick(t0.Add(time.Second))
	r.HandleMessage(w.Self(), junkHeads(r, 0, 1))
	r.Tick(t0.Add(cfg.ClaimTimeout + 2*time.Second))
	if b := r.budget(w.Self()); b != cfg.MaxClaims/2 {
		t.Fatalf("budget after a false claim %d", b)
	}
	// The creator's real delta, announced by w.
	ck, _ := testKey(t, 1)
	creator := newReplica(t, r.Descriptor(), ck, cfg)
	bs := mustAdd(t, creator, addItems(1)...)
	r.HandleMessage(w.Self(), creator.Heads())
	if _, err := r.AddBlock(bs[0]); err != nil {
		t.Fatal(err)
	}
	if b := r.budget(w.Self()); b != cfg.MaxClaims {
		t.Fatalf("budget after a true claim %d", b)
	}
}

func TestWantedFullReported(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxPending = 300
	r, a, b := authFixture(t, cfg)
	introduce(t, r, a)
	introduce(t, r, b)
	r.HandleMessage(a.Self(), junkHeads(r, 0, 256))
	r.HandleMessage(b.Self(), junkHeads(r, 1000, 256))
	if n := len(r.Missing()); n != cfg.MaxPending {
		t.Fatalf("wanted %d, want full at %d", n, cfg.MaxPending)
	}
	st := r.Stats()
	if st.WantedFull == 0 {
		t.Fatal("wanted set full and nothing reported")
	}
	// The member with the most claims made room: both have their share.
	cl := r.Claims()
	if cl[a.Self()] != 150 || cl[b.Self()] != 150 {
		t.Fatalf("claims %v", cl)
	}
}

func TestRequestAnswers(t *testing.T) {
	cfg := fastConfig()
	r, a, b := authFixture(t, cfg)
	var written []blocks.Block
	for i := range 3 {
		written = append(written, mustAdd(t, r, addItems(i)...)...)
	}
	introduce(t, r, a)
	introduce(t, r, b)
	introduce(t, a, b)
	rep, err := r.HandleMessage(a.Self(), a.HeadsRequest())
	if err != nil || !rep.Answer || rep.Delay < 0 || rep.Delay > cfg.AnswerDelay {
		t.Fatalf("first request: %+v %v", rep, err)
	}
	// b's request meanwhile is served by the same answer.
	if rep, err := r.HandleMessage(b.Self(), b.HeadsRequest()); err != nil || rep.Answer {
		t.Fatalf("second requester: %+v %v", rep, err)
	}
	ans := r.TakeAnswer()
	h, err := DecodeHeads(ans)
	if err != nil || len(h.Recent) != 3 {
		t.Fatalf("answer %v, recent %d", err, len(h.Recent))
	}
	if r.TakeAnswer() != nil {
		t.Fatal("answered twice")
	}
	// Within AnswerInterval a requester gets nothing, however often it asks.
	for range 100 {
		if v, _ := r.Authorize(a.Self(), a.HeadsRequest()); v != Ignore {
			t.Fatalf("verdict %v", v)
		}
		if rep, err := r.HandleMessage(a.Self(), a.HeadsRequest()); rep.Answer || !errors.Is(err, ErrRateLimited) {
			t.Fatalf("repeat: %+v %v", rep, err)
		}
	}
	// After it, once more; an identical answer from another member during
	// the delay cancels ours.
	r.Tick(t0.Add(cfg.AnswerInterval))
	if rep, _ := r.HandleMessage(a.Self(), a.HeadsRequest()); !rep.Answer {
		t.Fatal("not answered after the interval")
	}
	for _, blk := range written {
		if _, err := b.AddBlock(blk); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	bAns := b.headsReply()
	b.mu.Unlock()
	r.HandleMessage(b.Self(), bAns)
	if r.TakeAnswer() != nil {
		t.Fatal("answered though another member answered alike")
	}
	if st := r.Stats(); st.Answers != 1 || st.Suppressed != 1 || st.RateLimited != 200 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHeardSuppression: a member does not announce heads another member
// announced within RebroadcastInterval, nor ask for heads when a member
// with the same heads asked within AnswerInterval (and then takes the
// answers' Recent lists as if it had asked).
func TestHeardSuppression(t *testing.T) {
	cfg := fastConfig()
	r, a, b := authFixture(t, cfg)
	introduce(t, r, a)
	introduce(t, r, b)
	introduce(t, a, b)
	if a.HeadsHeard() || a.RequestHeard() {
		t.Fatal("heard something before any message")
	}

	// r writes and announces; a and b apply the delta and come to r's heads.
	written := mustAdd(t, r, addItems(1)...)
	for _, m := range []*Collection{a, b} {
		if _, err := m.HandleMessage(r.Self(), r.Heads()); err != nil {
			t.Fatal(err)
		}
		feed(t, m, written...)
		if !m.HeadsHeard() {
			t.Fatalf("%s: r announced these heads, yet HeadsHeard is false", m.Self())
		}
	}
	// r itself heard no one announce its new heads.
	if r.HeadsHeard() {
		t.Fatal("the author heard its own heads")
	}
	// Past RebroadcastInterval it is a's turn to announce again.
	a.Tick(t0.Add(cfg.RebroadcastInterval))
	if a.HeadsHeard() {
		t.Fatal("heads still count as heard after RebroadcastInterval")
	}
	// Heads that differ from a's are not a's.
	r.Tick(t0.Add(cfg.RebroadcastInterval))
	mustAdd(t, r, addItems(2)...)
	if _, err := a.HandleMessage(r.Self(), r.Heads()); err != nil {
		t.Fatal(err)
	}
	if a.HeadsHeard() {
		t.Fatal("r's newer heads counted as a's")
	}

	// Requests: b asks with heads equal to r's; r's own request is then
	// skipped, and its answer window is open.
	r2, a2, b2 := authFixture(t, cfg)
	introduce(t, r2, a2)
	introduce(t, r2, b2)
	introduce(t, a2, b2)
	if _, err := a2.HandleMessage(b2.Self(), b2.HeadsRequest()); err != nil {
		t.Fatal(err)
	}
	if !a2.RequestHeard() {
		t.Fatal("b2 asked with a2's heads, yet RequestHeard is false")
	}
	if !a2.answerWindow() {
		t.Fatal("a skipped request did not open the answer window")
	}
	a2.Tick(t0.Add(cfg.AnswerInterval))
	if a2.RequestHeard() {
		t.Fatal("a request still counts as heard after AnswerInterval")
	}
	// A request with other heads is not a2's.
	mustAdd(t, r2, addItems(3)...)
	if _, err := a2.HandleMessage(r2.Self(), r2.HeadsRequest()); err != nil {
		t.Fatal(err)
	}
	if a2.RequestHeard() {
		t.Fatal("a request with other heads counted as a2's")
	}
	if st := a2.Stats(); st.RequestsSkipped != 1 {
		t.Fatalf("stats %+v", st)
	}
	if st := a.Stats(); st.HeadsSkipped != 1 {
		t.Fatalf("stats %+v", st)
	}
}
