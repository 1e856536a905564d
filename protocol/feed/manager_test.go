package feed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/boxo/ipns"
	ipns_pb "github.com/ipfs/boxo/ipns/pb"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

func follow(t *testing.T, m *Manager, name ipns.Name, opts FollowOptions) {
	t.Helper()
	if err := m.Follow(t.Context(), name, opts); err != nil {
		t.Fatal(err)
	}
}

func TestHandleMessageDecisions(t *testing.T) {
	clock := newClock()
	m := newManager(t, Config{Clock: clock})
	skA, skB := testKey(t, 1), testKey(t, 2)
	nameA := testName(t, skA)
	follow(t, m, nameA, FollowOptions{})

	r5 := mustRecord(t, skA, 5, time.Hour, t0)
	embedB, _ := ipns.NewRecord(skB, path.FromCid(contentCID(1)), 9, t0.Add(time.Hour), 0, ipns.WithPublicKey(true))
	embedBData, _ := ipns.MarshalRecord(embedB)
	oversize := protowire.AppendBytes(protowire.AppendTag(mustRecord(t, skA, 9, time.Hour, t0), 99, protowire.BytesType), make([]byte, MaxRecordSize))

	for _, tc := range []struct {
		name string
		feed ipns.Name
		data []byte
		verd Verdict
		err  error
	}{
		{"new", nameA, r5, Accept, nil},
		{"duplicate", nameA, r5, Ignore, ErrDuplicate},
		{"replay of an older record", nameA, mustRecord(t, skA, 4, time.Hour, t0), Ignore, ErrStale},
		{"same seq, other bytes", nameA, mustRecord(t, skA, 5, 2*time.Hour, t0), Ignore, ErrStale},
		{"forged", nameA, mutate(t, mustRecord(t, skA, 6, time.Hour, t0), func(pb *ipns_pb.IpnsRecord) { pb.SignatureV2[0] ^= 0x80 }), Reject, ErrBadSignature},
		{"other key", nameA, mustRecord(t, skB, 6, time.Hour, t0), Reject, ErrBadSignature},
		{"expired", nameA, mustRecord(t, skA, 6, time.Hour, t0.Add(-2*time.Hour)), Ignore, ErrExpired},
		{"oversize", nameA, oversize, Reject, ErrTooLarge},
		{"wrong name", nameA, embedBData, Reject, ErrWrongName},
		{"garbage", nameA, []byte{1, 2, 3}, Reject, ErrMalformed},
		{"untracked feed", testName(t, skB), mustRecord(t, skB, 1, time.Hour, t0), Ignore, ErrUnknownFeed},
		{"newer", nameA, mustRecord(t, skA, 6, time.Hour, t0), Accept, nil},
	} {
		d := m.HandleMessage(tc.feed, "peer", tc.data)
		if d.Verdict != tc.verd || !errors.Is(d.Err, tc.err) || (tc.err == nil) != (d.Err == nil) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, d.Verdict, d.Err, tc.verd, tc.err)
		}
	}
	got := m.Counters()
	// Signatures checked: new, forged, other key, expired, newer; the
	// stale records never reach the check.
	want := Counters{Accepted: 2, Duplicate: 1, Unknown: 1, Stale: 2, BadSignature: 2, Expired: 1, TooLarge: 1, WrongName: 1, Malformed: 1,
		StaleUnverified: 2, SignatureChecks: 5}
	got.CatchUps = 0 // Follow ran one
	if got != want {
		t.Fatalf("counters\n got %+v\nwant %+v", got, want)
	}
	if got.Rejected() != 8 {
		t.Fatalf("Rejected() = %d", got.Rejected())
	}
	if fi, _ := m.Feed(nameA); fi.Held.Seq != 6 {
		t.Fatalf("held seq %d", fi.Held.Seq)
	}
	for v, r := range map[Verdict]pubsub.ValidationResult{Accept: pubsub.ValidationAccept, Ignore: pubsub.ValidationIgnore, Reject: pubsub.ValidationReject} {
		if v.PubsubResult() != r {
			t.Errorf("%v maps to %v", v, v.PubsubResult())
		}
	}
}

// TestOrderingUnderShuffledDelivery delivers records shuffled and
// duplicated, from several goroutines at once, to a pinning follower whose
// fetches take random time: held and pinned positions never go back, pins
// complete in increasing order, and the follower ends with only the newest
// version pinned.
func TestOrderingUnderShuffledDelivery(t *testing.T) {
	const n = 40
	sk := testKey(t, 1)
	name := testName(t, sk)
	records := make([][]byte, n+1)
	seqOf := map[cid.Cid]uint64{}
	for i := uint64(1); i <= n; i++ {
		records[i] = mustRecord(t, sk, i, time.Hour, t0)
		seqOf[contentCID(i)] = i
	}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			var delivery [][]byte
			for i := 1; i <= n; i++ {
				for range 1 + r.IntN(3) {
					delivery = append(delivery, records[i])
				}
			}
			shuffle(r, delivery)

			pinner := newPinner()
			var dmu sync.Mutex
			pinner.delay = func() time.Duration {
				dmu.Lock()
				defer dmu.Unlock()
				return time.Duration(r.IntN(300)) * time.Microsecond
			}
			m := newManager(t, Config{Clock: newClock(), Pinner: pinner, Logger: quiet})
			follow(t, m, name, FollowOptions{Pin: true})

			stop := make(chan struct{})
			var regress atomic.Value
			var wg sync.WaitGroup
			wg.Go(func() { // sampler: positions never go back
				var held, pinned uint64
				for {
					select {
					case <-stop:
						return
					default:
					}
					fi, _ := m.Feed(name)
					if fi.Held.Seq < held || fi.Pinned.Seq < pinned {
						regress.Store(fmt.Sprintf("held %d->%d pinned %d->%d", held, fi.Held.Seq, pinned, fi.Pinned.Seq))
					}
					held, pinned = fi.Held.Seq, fi.Pinned.Seq
					time.Sleep(50 * time.Microsecond)
				}
			})
			var accepted sync.Map
			const workers = 4
			var dw sync.WaitGroup
			for w := range workers {
				dw.Go(func() {
					for i := w; i < len(delivery); i += workers {
						d := m.HandleMessage(name, "peer", delivery[i])
						if d.Verdict == Accept {
							if _, dup := accepted.LoadOrStore(d.Record.Seq, true); dup {
								t.Errorf("seq %d applied twice", d.Record.Seq)
							}
						}
					}
				})
			}
			dw.Wait()
			eventually(t, 10*time.Second, "newest version pinned", func() bool {
				fi, _ := m.Feed(name)
				return fi.Pinned.Seq == n && !fi.Fetching
			})
			close(stop)
			wg.Wait()
			if s := regress.Load(); s != nil {
				t.Fatalf("a position went back: %v", s)
			}
			pinner.waitPinnedOnly(t, name, contentCID(n))
			var last uint64
			for _, e := range pinner.events() {
				if e.op == "pin" {
					if seqOf[e.cid] <= last {
						t.Fatalf("pinned seq %d after %d", seqOf[e.cid], last)
					}
					last = seqOf[e.cid]
				}
			}
			c := m.Counters()
			if c.Accepted == 0 || c.Accepted+c.Stale+c.Duplicate != uint64(len(delivery)) {
				t.Fatalf("counters %+v for %d deliveries", c, len(delivery))
			}
		})
	}
}

func TestKeepHistoryAndUnfollow(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			pinner := newPinner()
			m := newManager(t, Config{Clock: newClock(), Pinner: pinner})
			follow(t, m, name, FollowOptions{Pin: true, KeepHistory: keep})
			for i := uint64(1); i <= 5; i++ {
				if d := m.HandleMessage(name, "p", mustRecord(t, sk, i, time.Hour, t0)); d.Verdict != Accept {
					t.Fatal(d.Err)
				}
				eventually(t, 5*time.Second, "pinned", func() bool {
					fi, _ := m.Feed(name)
					return fi.Pinned.Seq == i && len(pinner.pinned(name)) == map[bool]int{false: 1, true: int(i)}[keep]
				})
			}
			if err := m.Unfollow(t.Context(), name); err != nil {
				t.Fatal(err)
			}
			want := map[bool]int{false: 0, true: 5}[keep]
			if got := len(pinner.pinned(name)); got != want {
				t.Fatalf("%d pinned after unfollow, want %d", got, want)
			}
			if _, ok := m.Feed(name); ok {
				t.Fatal("still tracked after unfollow")
			}
			if d := m.HandleMessage(name, "p", mustRecord(t, sk, 6, time.Hour, t0)); !errors.Is(d.Err, ErrUnknownFeed) {
				t.Fatalf("after unfollow: %v", d.Err)
			}
		})
	}
}

func TestSameContentStaysPinned(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	pinner := newPinner()
	m := newManager(t, Config{Clock: newClock(), Pinner: pinner})
	follow(t, m, name, FollowOptions{Pin: true})
	for seq := uint64(1); seq <= 2; seq++ {
		data, err := NewRecord(sk, path.FromCid(contentCID(1)), seq, time.Hour, t0)
		if err != nil {
			t.Fatal(err)
		}
		m.HandleMessage(name, "p", data)
		eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == seq })
	}
	if got := pinner.pinned(name); len(got) != 1 {
		t.Fatalf("pinned %v: a new version with the same CID must not unpin it", got)
	}
}

func TestNewerRecordCancelsFetch(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	pinner := newPinner()
	pinner.gate = make(chan struct{})
	pinner.started = make(chan cid.Cid, 10)
	m := newManager(t, Config{Clock: newClock(), Pinner: pinner})
	follow(t, m, name, FollowOptions{Pin: true})

	m.HandleMessage(name, "p", mustRecord(t, sk, 1, time.Hour, t0))
	if c := <-pinner.started; !c.Equals(contentCID(1)) {
		t.Fatalf("fetching %v", c)
	}
	m.HandleMessage(name, "p", mustRecord(t, sk, 2, time.Hour, t0))
	if c := <-pinner.started; !c.Equals(contentCID(2)) {
		t.Fatalf("fetching %v", c)
	}
	pinner.gate <- struct{}{}
	eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == 2 })
	if got := pinner.events(); len(got) != 1 || !got[0].cid.Equals(contentCID(2)) {
		t.Fatalf("pinner events %v: version 1 must not be pinned", got)
	}
	if c := m.Counters(); c.Superseded != 1 || c.Pinned != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// TestFailedFetchRetriedByTick runs in a synctest bubble: after a Tick,
// synctest.Wait returns once every goroutine of the manager is blocked, so
// "not retried yet" is checked after anything that Tick started has run (a
// retry started too early fails the test, where a 10 ms sleep could miss it).
func TestFailedFetchRetriedByTick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sk := testKey(t, 1)
		name := testName(t, sk)
		clock := newClock()
		pinner := newPinner()
		pinner.fail[contentCID(1)] = errors.New("no providers")
		m := newManager(t, Config{Clock: clock, Pinner: pinner, RetryMin: time.Minute, RetryMax: time.Hour, Logger: quiet})
		follow(t, m, name, FollowOptions{Pin: true})
		m.HandleMessage(name, "p", mustRecord(t, sk, 1, 2*time.Hour, t0))
		synctest.Wait()
		if c := m.Counters().PinFailed; c != 1 {
			t.Fatalf("%d failures after the first fetch", c)
		}
		fi, _ := m.Feed(name)
		if fi.PinErr == nil || fi.Pinned.Seq != 0 || fi.Held.Seq != 1 {
			t.Fatalf("after failure: %+v", fi)
		}
		m.Tick() // backoff not over: no retry
		clock.Advance(59 * time.Second)
		m.Tick()
		synctest.Wait()
		if m.Counters().PinFailed != 1 {
			t.Fatal("retried before the backoff")
		}
		clock.Advance(time.Second)
		m.Tick()
		synctest.Wait()
		if c := m.Counters().PinFailed; c != 2 {
			t.Fatalf("%d failures once the backoff is over, want 2", c)
		}
		// Backoff doubles: two minutes now.
		pinner.mu.Lock()
		delete(pinner.fail, contentCID(1))
		pinner.mu.Unlock()
		clock.Advance(time.Minute)
		m.Tick()
		synctest.Wait()
		if fi, _ := m.Feed(name); fi.Pinned.Seq != 0 || m.Counters().PinFailed != 2 {
			t.Fatal("retried before the doubled backoff")
		}
		clock.Advance(time.Minute)
		m.Tick()
		synctest.Wait()
		if fi, _ := m.Feed(name); fi.Pinned.Seq != 1 || fi.PinErr != nil {
			t.Fatalf("after the doubled backoff: %+v", fi)
		}
	})
}

func TestHandleRequest(t *testing.T) {
	clock := newClock()
	sk := testKey(t, 1)
	name := testName(t, sk)
	m := newManager(t, Config{Clock: clock})
	ask := func(r Request) Response {
		t.Helper()
		out, err := m.HandleRequest("p", r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := DecodeResponse(out)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := ask(Request{Name: name}); r.Status != StatusNotFound {
		t.Fatalf("untracked: %v", r.Status)
	}
	follow(t, m, name, FollowOptions{})
	rec := mustRecord(t, sk, 4, time.Hour, t0)
	m.HandleMessage(name, "p", rec)
	if r := ask(Request{Name: name}); r.Status != StatusFound || string(r.Record) != string(rec) {
		t.Fatalf("held: %v", r.Status)
	}
	if r := ask(Request{Name: name, Have: true, HaveSeq: 3}); r.Status != StatusFound {
		t.Fatalf("asker behind: %v", r.Status)
	}
	if r := ask(Request{Name: name, Have: true, HaveSeq: 4}); r.Status != StatusNotNewer {
		t.Fatalf("asker level: %v", r.Status)
	}
	clock.Advance(2 * time.Hour)
	if r := ask(Request{Name: name}); r.Status != StatusNotFound {
		t.Fatalf("expired: %v", r.Status)
	}
	if _, err := m.HandleRequest("p", []byte{0xff}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("garbage: %v", err)
	}
	if c := m.Counters(); c.RequestsServed != 5 || c.BadRequests != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// localExchange sends catch-up requests straight to other Managers.
type localExchange struct {
	mu    sync.Mutex
	peers map[peer.ID]*Manager
	asked []peer.ID
	lie   map[peer.ID][]byte // canned responses
}

func (x *localExchange) TopicPeers(string) []peer.ID {
	x.mu.Lock()
	defer x.mu.Unlock()
	var ps []peer.ID
	for p := range x.peers {
		ps = append(ps, p)
	}
	for p := range x.lie {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (x *localExchange) Request(_ context.Context, p peer.ID, req []byte) ([]byte, error) {
	x.mu.Lock()
	x.asked = append(x.asked, p)
	m, canned := x.peers[p], x.lie[p]
	x.mu.Unlock()
	if canned != nil {
		return canned, nil
	}
	if m == nil {
		return nil, errors.New("no such peer")
	}
	return m.HandleRequest("asker", req)
}

func TestCatchUp(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()

	// The publisher holds seq 1..3.
	router := newRouter()
	pub := newManager(t, Config{Clock: clock})
	for i := uint64(1); i <= 3; i++ {
		if _, err := pub.Publish(t.Context(), sk, path.FromCid(contentCID(i))); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("from peers", func(t *testing.T) {
		pinner := newPinner()
		forged := mutate(t, mustRecord(t, sk, 9, time.Hour, t0), func(pb *ipns_pb.IpnsRecord) { pb.SignatureV2[0] ^= 1 })
		x := &localExchange{
			peers: map[peer.ID]*Manager{"a-publisher": pub},
			lie:   map[peer.ID][]byte{"b-liar": Response{Status: StatusFound, Record: forged}.Marshal()},
		}
		m := newManager(t, Config{Clock: clock, Pinner: pinner, Exchange: x, Router: router})
		follow(t, m, name, FollowOptions{Pin: true}) // catches up
		eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == 3 })
		c := m.Counters()
		if c.Accepted != 1 || c.BadSignature != 1 || c.CatchUps != 1 || c.CatchUpsDHT != 0 {
			t.Fatalf("counters %+v", c)
		}
		// Level with the publisher: it says so, and the DHT is not asked.
		if rec, err := m.CatchUp(t.Context(), name); err != nil || rec.Seq != 3 {
			t.Fatalf("CatchUp = %d, %v", rec.Seq, err)
		}
		if c := m.Counters(); c.CatchUpsDHT != 0 || router.gets != 0 {
			t.Fatalf("DHT asked: %+v", c)
		}
	})

	t.Run("DHT fallback", func(t *testing.T) {
		router := newRouter()
		router.m[RoutingKey(name)] = mustRecord(t, sk, 2, time.Hour, t0)
		m := newManager(t, Config{Clock: clock, Exchange: &localExchange{}, Router: router})
		follow(t, m, name, FollowOptions{})
		if fi, _ := m.Feed(name); fi.Held.Seq != 2 || m.Counters().CatchUpsDHT != 1 {
			t.Fatalf("held %d, counters %+v", fi.Held.Seq, m.Counters())
		}
	})

	t.Run("nothing anywhere", func(t *testing.T) {
		m := newManager(t, Config{Clock: clock, Router: newRouter()})
		if _, err := m.CatchUp(t.Context(), name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		if _, err := m.Resolve(t.Context(), name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("DHT at most every CatchUpDHTEvery", func(t *testing.T) {
		// Nothing published yet: every catch-up would end in the DHT.
		clock := newClock()
		router := newRouter()
		m := newManager(t, Config{Clock: clock, Exchange: &localExchange{}, Router: router})
		follow(t, m, name, FollowOptions{}) // asks the DHT
		gets := func() int {
			t.Helper()
			router.mu.Lock()
			defer router.mu.Unlock()
			return router.gets
		}
		for i, step := range []struct {
			advance time.Duration
			refresh bool
			want    int
		}{
			{0, false, 1},                // again at once: not asked
			{29 * time.Second, false, 1}, // still within 30s
			{time.Second, false, 2},      // 30s on: asked
			{0, true, 3},                 // a refresh always asks
			{10 * time.Second, false, 3}, // and counts as asking
			{20 * time.Second, false, 4},
		} {
			clock.Advance(step.advance)
			var err error
			if step.refresh {
				_, err = m.Refresh(t.Context(), name)
			} else {
				_, err = m.CatchUp(t.Context(), name)
			}
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("step %d: err = %v", i, err)
			}
			if got := gets(); got != step.want {
				t.Fatalf("step %d: DHT asked %d times, want %d", i, got, step.want)
			}
		}
		// A name not tracked here is looked up every time.
		other := testName(t, testKey(t, 2))
		for range 2 {
			m.CatchUp(t.Context(), other)
		}
		if got := gets(); got != 6 {
			t.Fatalf("untracked name: DHT asked %d times in all, want 6", got)
		}
	})

	t.Run("resolve untracked", func(t *testing.T) {
		x := &localExchange{peers: map[peer.ID]*Manager{"a": pub}}
		m := newManager(t, Config{Clock: clock, Exchange: x})
		rec, err := m.Resolve(t.Context(), name)
		if err != nil || rec.Seq != 3 || !rec.CID().Equals(contentCID(3)) {
			t.Fatalf("Resolve = %+v, %v", rec, err)
		}
		if _, ok := m.Feed(name); ok {
			t.Fatal("resolving must not track the feed")
		}
	})
}

// recTopics records joins and publishes, and runs the validator on a
// publish the way gossipsub does for local messages.
type recTopics struct {
	mu        sync.Mutex
	m         *Manager
	self      peer.ID
	joined    map[string]bool
	published map[string][][]byte // by topic
	verdicts  []Verdict
}

func (r *recTopics) Join(topic string, _ pubsub.ValidatorEx) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joined[topic] = true
	return nil
}

func (r *recTopics) Leave(topic string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.joined, topic)
	return nil
}

func (r *recTopics) Publish(_ context.Context, topic string, data []byte) error {
	name, err := NameFromTopic(topic)
	if err != nil {
		if name, err = NameFromIPNSTopic(topic); err != nil {
			return err
		}
	}
	v := r.m.HandleMessage(name, r.self, data).Verdict
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verdicts = append(r.verdicts, v)
	if v != Accept {
		return fmt.Errorf("validation: %v", v)
	}
	if r.published == nil {
		r.published = map[string][][]byte{}
	}
	r.published[topic] = append(r.published[topic], data)
	return nil
}

func TestPublish(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	kv := newKV()
	router := newRouter()
	topics := &recTopics{self: "me", joined: map[string]bool{}}
	m, err := New(t.Context(), Config{Self: "me", Topics: topics, Router: router, Store: kv, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	topics.m = m
	for i := uint64(1); i <= 3; i++ {
		rec, err := m.Publish(t.Context(), sk, path.FromCid(contentCID(i)))
		if err != nil || rec.Seq != i {
			t.Fatalf("publish %d: seq %d, %v", i, rec.Seq, err)
		}
	}
	// On weft's topic and on Kubo's IPNS one alike.
	if !topics.joined[Topic(name)] || !topics.joined[IPNSTopic(name)] ||
		len(topics.published[Topic(name)]) != 3 || len(topics.published[IPNSTopic(name)]) != 3 {
		t.Fatalf("joined %v, published %d and %d", topics.joined, len(topics.published[Topic(name)]), len(topics.published[IPNSTopic(name)]))
	}
	// The DHT put runs in the background; it ends with the newest record.
	eventually(t, 5*time.Second, "the DHT to take seq 3", func() bool {
		fi, _ := m.Feed(name)
		return fi.DHTSeq == 3 && !fi.DHTPending
	})
	router.mu.Lock()
	held := router.m[RoutingKey(name)]
	router.mu.Unlock()
	if rec, err := Validate(name, held, clock.Now()); err != nil || rec.Seq != 3 {
		t.Fatalf("DHT holds seq %d, %v", rec.Seq, err)
	}
	if c := m.Counters(); c.Accepted != 0 || c.Duplicate != 0 {
		t.Fatalf("own publishes counted as received: %+v", c)
	}
	// Someone else holding the key publishes seq 10; we pick it up.
	if d := m.HandleMessage(name, "other", mustRecord(t, sk, 10, time.Hour, t0)); d.Verdict != Accept {
		t.Fatal(d.Err)
	}
	if rec, _ := m.Publish(t.Context(), sk, path.FromCid(contentCID(11))); rec.Seq != 11 {
		t.Fatalf("after a newer record from elsewhere: seq %d", rec.Seq)
	}
	m.Close()

	// Restarted: the feed is owned, held, its topic joined, and the
	// sequence continues; even with the held record lost, the persisted
	// sequence number keeps it from repeating.
	kv.Delete(t.Context(), recordKey(name))
	topics2 := &recTopics{self: "me", joined: map[string]bool{}}
	m2, err := New(t.Context(), Config{Self: "me", Topics: topics2, Store: kv, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	topics2.m = m2
	fi, ok := m2.Feed(name)
	if !ok || !fi.Owned || !topics2.joined[Topic(name)] {
		t.Fatalf("after restart: %+v, joined %v", fi, topics2.joined)
	}
	if rec, err := m2.Publish(t.Context(), sk, path.FromCid(contentCID(12))); err != nil || rec.Seq != 12 {
		t.Fatalf("after restart: seq %d, %v", rec.Seq, err)
	}
}

func TestRestartRestoresFollow(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	kv := newKV()
	pinner := newPinner()
	m, err := New(t.Context(), Config{Store: kv, Clock: clock, Pinner: pinner})
	if err != nil {
		t.Fatal(err)
	}
	follow(t, m, name, FollowOptions{Pin: true})
	for i := uint64(1); i <= 3; i++ {
		m.HandleMessage(name, "p", mustRecord(t, sk, i, time.Hour, t0))
	}
	eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == 3 && !fi.Fetching })
	// Seq 4 arrives while its fetch cannot finish; then the node stops.
	pinner.gate = make(chan struct{})
	m.HandleMessage(name, "p", mustRecord(t, sk, 4, time.Hour, t0))
	eventually(t, 5*time.Second, "fetching", func() bool { fi, _ := m.Feed(name); return fi.Fetching })
	m.Close()
	pinner.gate = nil

	m2 := newManager(t, Config{Store: kv, Clock: clock, Pinner: pinner})
	fi, ok := m2.Feed(name)
	if !ok || !fi.Following || !fi.Options.Pin || fi.Held.Seq != 4 {
		t.Fatalf("after restart: %+v", fi)
	}
	eventually(t, 5*time.Second, "resumed fetch", func() bool { fi, _ := m2.Feed(name); return fi.Pinned.Seq == 4 })
	pinner.waitPinnedOnly(t, name, contentCID(4))
	if d := m2.HandleMessage(name, "p", mustRecord(t, sk, 2, time.Hour, t0)); !errors.Is(d.Err, ErrStale) {
		t.Fatalf("replay after restart: %v", d.Err)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, cfg := range []Config{
		{Topics: &recTopics{}},
		{MaxRecordSize: MaxRecordSize + 1},
		{RetryMin: time.Hour, RetryMax: time.Minute},
		{FetchTimeout: -1},
		{MaxConcurrentFetches: -1},
	} {
		if _, err := New(t.Context(), cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: err = %v", cfg, err)
		}
	}
	m := newManager(t, Config{})
	if err := m.Follow(t.Context(), testName(t, testKey(t, 1)), FollowOptions{Pin: true}); err == nil {
		t.Fatal("follow with pin but no Pinner accepted")
	}
}

func TestFollowOptionChangesAndUnfollowMidFetch(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	pinner := newPinner()
	m := newManager(t, Config{Clock: newClock(), Pinner: pinner})

	follow(t, m, name, FollowOptions{})
	m.HandleMessage(name, "p", mustRecord(t, sk, 1, time.Hour, t0))
	if fi, _ := m.Feed(name); fi.Held.Seq != 1 || fi.Pinned.Seq != 0 || len(pinner.events()) != 0 {
		t.Fatalf("follow without pin fetched: %+v", fi)
	}
	follow(t, m, name, FollowOptions{Pin: true}) // now pin what is held
	eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == 1 })
	follow(t, m, name, FollowOptions{}) // stop pinning: unpinned
	eventually(t, 5*time.Second, "unpinned", func() bool { return len(pinner.pinned(name)) == 0 })
	if fi, _ := m.Feed(name); !fi.Pinned.IsZero() || !fi.Following {
		t.Fatalf("after dropping pin: %+v", fi)
	}

	// Unfollow while a fetch hangs: it is cancelled and nothing stays pinned.
	follow(t, m, name, FollowOptions{Pin: true})
	eventually(t, 5*time.Second, "pinned", func() bool { fi, _ := m.Feed(name); return fi.Pinned.Seq == 1 })
	pinner.mu.Lock()
	pinner.gate = make(chan struct{})
	pinner.mu.Unlock()
	m.HandleMessage(name, "p", mustRecord(t, sk, 2, time.Hour, t0))
	eventually(t, 5*time.Second, "fetching", func() bool { fi, _ := m.Feed(name); return fi.Fetching })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m.Unfollow(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got := pinner.pinned(name); len(got) != 0 {
		t.Fatalf("pinned after unfollow: %v", got)
	}
	if err := m.Unfollow(ctx, name); !errors.Is(err, ErrUnknownFeed) {
		t.Fatalf("second unfollow: %v", err)
	}
}

// gatedRouter is a DHT whose puts hang until released, or fail, as when
// the publisher is cut off from its DHT peers.
type gatedRouter struct {
	*fakeRouter
	mu   sync.Mutex
	open chan struct{} // closed: puts go through
	fail error         // set: puts that go through fail with it
	seqs []uint64      // sequence numbers of the records put, in order
	name ipns.Name
}

func (r *gatedRouter) PutValue(ctx context.Context, key string, value []byte) error {
	r.mu.Lock()
	open := r.open
	r.mu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	fail := r.fail
	if rec, err := Validate(r.name, value, t0); err == nil {
		r.seqs = append(r.seqs, rec.Seq)
	}
	r.mu.Unlock()
	if fail != nil {
		return fail
	}
	return r.fakeRouter.PutValue(ctx, key, value)
}

func (r *gatedRouter) set(open bool, fail error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if open {
		select {
		case <-r.open:
		default:
			close(r.open)
		}
	} else {
		select {
		case <-r.open:
			r.open = make(chan struct{})
		default:
		}
	}
	r.fail = fail
}

// TestPublishDoesNotWaitForDHT: while the DHT put hangs, Publish returns
// at once; the newest record wins over the ones queued behind the put in
// flight; a failed put shows in FeedInfo and the counters and is retried
// by Tick after the backoff; Close ends a hanging put. Time is synctest's.
func TestPublishDoesNotWaitForDHT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sk := testKey(t, 1)
		name := testName(t, sk)
		clock := newClock()
		router := &gatedRouter{fakeRouter: newRouter(), open: make(chan struct{}), name: name}
		m := newManager(t, Config{Router: router, Clock: clock, RetryMin: time.Minute, RetryMax: time.Hour, Logger: quiet})
		for i := uint64(1); i <= 5; i++ {
			done := make(chan error, 1)
			go func() {
				_, err := m.Publish(t.Context(), sk, path.FromCid(contentCID(i)))
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("publish %d waits on the hanging DHT put", i)
			}
			synctest.Wait() // the putter took seq 1 and hangs on it
		}
		fi, _ := m.Feed(name)
		if fi.Held.Seq != 5 || !fi.DHTPending || fi.DHTSeq != 0 {
			t.Fatalf("while the DHT hangs: %+v", fi)
		}

		// The DHT fails: seq 1, in flight, then only the newest, 5, is put.
		router.set(true, errors.New("no peers reachable"))
		synctest.Wait()
		router.mu.Lock()
		seqs := slices.Clone(router.seqs)
		router.mu.Unlock()
		if !slices.Equal(seqs, []uint64{1, 5}) {
			t.Fatalf("records put: %v, want [1 5]", seqs)
		}
		if c := m.Counters(); c.DHTPutsFailed != 2 || c.DHTPuts != 0 {
			t.Fatalf("counters: %+v", c)
		}
		fi, _ = m.Feed(name)
		if fi.DHT.Seq != 5 || fi.DHT.Err == nil || !fi.DHTPending || fi.DHTSeq != 0 || !fi.DHT.At.Equal(clock.Now()) {
			t.Fatalf("after the failure: %+v", fi)
		}

		// Healed: Tick retries once the backoff is over, not before.
		router.set(true, nil)
		clock.Advance(59 * time.Second)
		m.Tick()
		synctest.Wait()
		if c := m.Counters(); c.DHTPuts != 0 || c.DHTPutsFailed != 2 {
			t.Fatalf("retried before the backoff: %+v", c)
		}
		clock.Advance(time.Second)
		m.Tick()
		synctest.Wait()
		fi, _ = m.Feed(name)
		if fi.DHTSeq != 5 || fi.DHT.Err != nil || fi.DHTPending {
			t.Fatalf("after the retry: %+v", fi)
		}
		if c := m.Counters(); c.DHTPuts != 1 || c.DHTPutsFailed != 2 {
			t.Fatalf("counters: %+v", c)
		}

		// A put hanging at Close ends with it.
		router.set(false, nil)
		if _, err := m.Publish(t.Context(), sk, path.FromCid(contentCID(6))); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		m.Close() // returns: synctest would report the putter blocked forever
		if fi, _ := m.Feed(name); fi.DHTSeq != 5 {
			t.Fatalf("after Close: %+v", fi)
		}
	})
}

// heldRouter is a DHT whose gets wait until released (or their context
// ends), as a DHT walk does on a slow network.
type heldRouter struct {
	*fakeRouter
	release chan struct{}
}

func (r *heldRouter) GetValue(ctx context.Context, key string) ([]byte, error) {
	select {
	case <-r.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return r.fakeRouter.GetValue(ctx, key)
}

// TestFollowWithoutWaiting: StartFollow returns before the catch-up ends
// (the follow is recorded at once), Follow returns when its context ends
// while the catch-up goes on, and the record the catch-up finds later is
// taken. Close ends a catch-up still waiting.
func TestFollowWithoutWaiting(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	router := &heldRouter{fakeRouter: newRouter(), release: make(chan struct{})}
	router.m[RoutingKey(name)] = mustRecord(t, sk, 2, time.Hour, t0)
	m := newManager(t, Config{Clock: clock, Exchange: &localExchange{}, Router: router, CatchUpTimeout: time.Minute})

	caught, err := m.StartFollow(t.Context(), name, FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fi, ok := m.Feed(name); !ok || !fi.Following || fi.Held.Seq != 0 {
		t.Fatalf("after StartFollow: %+v, %v", fi, ok)
	}
	select {
	case <-caught:
		t.Fatal("catch-up ended while the DHT still held its answer")
	default:
	}

	// A second follow (another caller) gives up waiting with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := m.Follow(ctx, name, FollowOptions{}); err != nil {
		t.Fatalf("Follow with an ending context: %v", err)
	}

	close(router.release)
	select {
	case <-caught:
	case <-time.After(10 * time.Second):
		t.Fatal("catch-up did not end after the DHT answered")
	}
	if fi, _ := m.Feed(name); fi.Held.Seq != 2 {
		t.Fatalf("held seq %d after the background catch-up, want 2", fi.Held.Seq)
	}

	// Close ends a catch-up that is still waiting on the DHT.
	other := testName(t, testKey(t, 2))
	slow := &heldRouter{fakeRouter: newRouter(), release: make(chan struct{})}
	m2, err := New(t.Context(), Config{Clock: clock, Exchange: &localExchange{}, Router: slow, CatchUpTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	caught2, err := m2.StartFollow(t.Context(), other, FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m2.Close()
	select {
	case <-caught2:
	default:
		t.Fatal("Close returned with the catch-up still running")
	}
	if _, err := m2.StartFollow(t.Context(), other, FollowOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("StartFollow after Close: %v", err)
	}
}
