package collection

import (
	"errors"
	"testing"

	blocks "github.com/ipfs/go-block-format"
)

// TestDirectExchange: a newcomer asks a member on a stream; the answer
// makes the member known at once (its heartbeat) and names everything the
// newcomer lacks (heads and Recent), which Sync then fetches.
func TestDirectExchange(t *testing.T) {
	cfg := fastConfig()
	r, a, _ := authFixture(t, cfg)
	var written []blocks.Block
	for i := range 3 {
		written = append(written, mustAdd(t, r, addItems(i)...)...)
	}
	if _, err := r.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	ans, err := r.AnswerDirect(a.Self(), a.HeadsRequest())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.TakeDirectAnswer(r.Self(), ans); err != nil {
		t.Fatal(err)
	}
	known := false
	for _, m := range a.Status().Members {
		known = known || (m.ID == r.Self() && m.State == MemberAlive)
	}
	if !known {
		t.Error("the answerer is not an alive member after its answer")
	}
	if got := len(a.Missing()); got != len(written) {
		t.Fatalf("missing %d blocks after the answer, want %d (heads and Recent)", got, len(written))
	}
	g := mapGetter{}
	g.put(written...)
	if _, err := a.Sync(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	if fingerprint(a) != fingerprint(r) {
		t.Fatalf("not converged:\n%s\n%s", fingerprint(a), fingerprint(r))
	}
	// Alike now: the answer is the plain heads, without Recent.
	r.Tick(t0.Add(cfg.AnswerInterval))
	ans, err = r.AnswerDirect(a.Self(), a.HeadsRequest())
	if err != nil {
		t.Fatal(err)
	}
	da, err := DecodeDirectAnswer(ans)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := DecodeHeads(da.Heads); err != nil || len(h.Recent) != 0 || len(h.Heads) == 0 {
		t.Fatalf("answer to an alike requester: %+v %v", h, err)
	}
	if st := r.Stats(); st.DirectAnswers != 2 {
		t.Errorf("DirectAnswers %d, want 2", st.DirectAnswers)
	}
	// The same heartbeat again (the topic brought it first, say) is no
	// error and no bad heartbeat.
	if err := a.TakeDirectAnswer(r.Self(), ans); err != nil {
		t.Fatalf("the same answer again: %v", err)
	}
	if st := a.Stats(); st.DirectTaken != 2 || st.BadHeartbeats != 0 {
		t.Errorf("DirectTaken %d (want 2), BadHeartbeats %d (want 0)", st.DirectTaken, st.BadHeartbeats)
	}
}

// TestDirectRefusals: what a direct request or answer may not do.
func TestDirectRefusals(t *testing.T) {
	cfg := fastConfig()
	r, a, b := authFixture(t, cfg)
	mustAdd(t, r, addItems(1)...)
	if _, err := r.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	good, err := r.AnswerDirect(a.Self(), a.HeadsRequest())
	if err != nil {
		t.Fatal(err)
	}
	goodAns, _ := DecodeDirectAnswer(good)
	other := newReplica(t, testDescriptor(t, mustKey(t, 9), 2), mustKey(t, 9), cfg)

	t.Run("rate limited", func(t *testing.T) {
		for range 50 {
			if _, err := r.AnswerDirect(a.Self(), a.HeadsRequest()); !errors.Is(err, ErrRateLimited) {
				t.Fatalf("repeat within the interval: %v", err)
			}
		}
		r.Tick(t0.Add(cfg.AnswerInterval))
		if _, err := r.AnswerDirect(a.Self(), a.HeadsRequest()); err != nil {
			t.Fatalf("after the interval: %v", err)
		}
	})
	t.Run("request for another collection", func(t *testing.T) {
		if _, err := r.AnswerDirect(b.Self(), other.HeadsRequest()); !errors.Is(err, ErrWrongCollection) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("oversized request", func(t *testing.T) {
		if _, err := r.AnswerDirect(b.Self(), make([]byte, MaxHeadsRequestSize+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		from func() *Collection // who a believes answered
		ans  func() []byte
		want error
	}{
		{"another member's heartbeat", func() *Collection { return r }, func() []byte {
			bb, _ := b.Heartbeat()
			x := DirectAnswer{Heartbeat: bb, Heads: goodAns.Heads}
			return x.Encode()
		}, ErrSenderMismatch},
		{"forged heartbeat signature", func() *Collection { return r }, func() []byte {
			hb := append([]byte(nil), goodAns.Heartbeat...)
			hb[len(hb)-1] ^= 1
			x := DirectAnswer{Heartbeat: hb, Heads: goodAns.Heads}
			return x.Encode()
		}, ErrBadSignature},
		{"heads of another collection", func() *Collection { return r }, func() []byte {
			x := DirectAnswer{Heartbeat: goodAns.Heartbeat, Heads: other.Heads()}
			return x.Encode()
		}, ErrWrongCollection},
		{"no heartbeat, not a member", func() *Collection { return b }, func() []byte {
			x := DirectAnswer{Heads: goodAns.Heads}
			return x.Encode()
		}, ErrNotMember},
		{"garbage", func() *Collection { return r }, func() []byte { return []byte{KindDirectAnswer, 1, 5} }, ErrMalformed},
		{"no heads", func() *Collection { return r }, func() []byte {
			x := DirectAnswer{Heartbeat: goodAns.Heartbeat}
			return x.Encode()
		}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := newReplica(t, r.Descriptor(), mustKey(t, 7), cfg)
			fresh.HeadsRequest()
			err := fresh.TakeDirectAnswer(tc.from().Self(), tc.ans())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if n := len(fresh.Missing()); n != 0 {
				t.Errorf("%d blocks wanted after a refused answer", n)
			}
		})
	}
}
