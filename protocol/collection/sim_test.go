package collection

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// sim is an in-memory swarm of members with a fake clock: a topic that
// delivers each published message to every member up and on the same side
// of a partition (in random order), a block exchange that serves any such
// member's blocks, and pins that take FetchDelay and need a reachable
// copy. It drives each Collection the way node/ will: Tick, heartbeats,
// heads announcements and requests, Sync, Plan and the pin reports.
type sim struct {
	t      testing.TB
	rng    *rand.Rand
	now    time.Time
	cfg    Config
	desc   *Descriptor
	nodes  []*simNode
	queue  []simMsg
	fetch  time.Duration // how long a pin takes
	snaps  bool          // let members write snapshots (ShouldSnapshot)
	noPins bool          // skip Plan (for benchmarks of the CRDT alone)
	rounds int           // Sync rounds, over all members
	// minCopies is the smallest number of pinned copies (on any member,
	// up or down) any item had right after an unpin.
	unpinViolations []string
	rogue           mapGetter // blocks served by a non-member
}

type simNode struct {
	i        int
	key      crypto.PrivKey
	id       peer.ID
	c        *Collection
	blocks   map[string]blocks.Block // the node's blockstore (collection blocks)
	kept     map[string]bool         // collection blocks it pins: Result.Keep and writes, less garbage
	pinned   map[string]bool         // items pinned (kept across restarts)
	origin   map[string]bool         // items the node added (unpinned copies)
	jobs     []simJob
	up       bool
	group    int
	nextBeat time.Time
	nextAnn  time.Time
	lastAnn  string
}

type simJob struct {
	item cid.Cid
	at   time.Time
}

type simMsg struct {
	from int
	id   peer.ID // the sender, for from < 0
	data []byte
}

func newSim(t testing.TB, n, r int, cfg Config, seed int64) *sim {
	t.Helper()
	s := &sim{t: t, rng: rand.New(rand.NewSource(seed)), now: t0, cfg: cfg.withDefaults(), fetch: 5 * time.Second, rogue: mapGetter{}}
	for i := range n {
		key, id := testKey(t, seed*1000+int64(i))
		s.nodes = append(s.nodes, &simNode{i: i, key: key, id: id, blocks: map[string]blocks.Block{}, kept: map[string]bool{},
			pinned: map[string]bool{}, origin: map[string]bool{}})
	}
	s.desc = testDescriptor(t, s.nodes[0].key, r)
	for _, nd := range s.nodes {
		s.start(nd)
	}
	return s
}

// start (re)creates a node's replica from its blockstore and pins, the way
// node/ does at start.
func (s *sim) start(nd *simNode) {
	c, err := New(s.desc, nd.key, s.cfg, s.now)
	if err != nil {
		s.t.Fatal(err)
	}
	bs := make([]blocks.Block, 0, len(nd.blocks))
	for _, b := range nd.blocks {
		bs = append(bs, b)
	}
	s.rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
	nd.kept = map[string]bool{}
	for _, b := range bs {
		res, _ := c.AddBlock(b)
		for _, k := range res.Keep {
			nd.kept[k.KeyString()] = true
		}
	}
	for _, g := range c.TakeGarbage() {
		delete(nd.kept, g.KeyString())
	}
	var pins []cid.Cid
	for k := range nd.pinned {
		id, _ := cid.Cast([]byte(k))
		pins = append(pins, id)
	}
	c.RestorePins(pins)
	nd.c, nd.up, nd.jobs = c, true, nil
	nd.nextBeat = s.now.Add(time.Duration(s.rng.Int63n(int64(s.cfg.HeartbeatInterval))))
	nd.nextAnn = s.now.Add(s.cfg.RebroadcastInterval)
	s.publish(nd, c.HeadsRequest())
	s.publish(nd, s.beat(nd))
}

func (s *sim) kill(nd *simNode) { nd.up, nd.jobs = false, nil }

func (s *sim) beat(nd *simNode) []byte {
	b, err := nd.c.Heartbeat()
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *sim) publish(nd *simNode, data []byte) {
	s.queue = append(s.queue, simMsg{from: nd.i, data: data})
}

func (s *sim) reachable(a, b *simNode) bool { return a.up && b.up && a.group == b.group }

// getter is node nd's block exchange: its own store, then every reachable
// member's. Fetched blocks are stored, as Bitswap does.
func (s *sim) getter(nd *simNode) BlockGetter {
	return BlockGetterFunc(func(ctx context.Context, cids []cid.Cid) <-chan blocks.Block {
		ch := make(chan blocks.Block, len(cids))
		for _, c := range cids {
			k := c.KeyString()
			b, ok := nd.blocks[k]
			for _, o := range s.nodes {
				if ok {
					break
				}
				if s.reachable(nd, o) {
					b, ok = o.blocks[k]
				}
			}
			if !ok {
				b, ok = s.rogue[k]
			}
			if ok {
				nd.blocks[k] = b
				ch <- b
			}
		}
		close(ch)
		return ch
	})
}

func (s *sim) store(nd *simNode, bs []blocks.Block) {
	for _, b := range bs {
		nd.blocks[b.Cid().KeyString()] = b
		nd.kept[b.Cid().KeyString()] = true
	}
}

// gc drops the blocks a node does not pin, as the store's GC does.
func (s *sim) gc(nd *simNode) {
	for k := range nd.blocks {
		if !nd.kept[k] {
			delete(nd.blocks, k)
		}
	}
}

// checkKept checks that the pins node/ keeps by following Result.Keep,
// writes and TakeGarbage are exactly the replica's Blocks.
func (s *sim) checkKept(nd *simNode) error {
	live := map[string]bool{}
	for _, c := range nd.c.Blocks() {
		live[c.KeyString()] = true
	}
	for k := range nd.kept {
		if !live[k] {
			id, _ := cid.Cast([]byte(k))
			return fmt.Errorf("node %d pins %s, not live", nd.i, id)
		}
	}
	for k := range live {
		if !nd.kept[k] {
			id, _ := cid.Cast([]byte(k))
			return fmt.Errorf("node %d does not pin live block %s", nd.i, id)
		}
	}
	return nil
}

// write runs a write on nd and stores and announces its blocks.
func (s *sim) write(nd *simNode, bs []blocks.Block, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
	s.store(nd, bs)
}

func (s *sim) addItems(nd *simNode, from, to int) {
	for i := from; i < to; i++ {
		bs, err := nd.c.Add(AddItem{Cid: itemCID(i), Label: fmt.Sprint("item ", i)})
		s.write(nd, bs, err)
		nd.origin[itemCID(i).KeyString()] = true
	}
}

func (s *sim) hasCopy(nd *simNode, k string) bool { return nd.pinned[k] || nd.origin[k] }

// step advances the clock by d and runs every member once.
func (s *sim) step(d time.Duration) {
	s.now = s.now.Add(d)
	up := s.upNodes()
	for _, nd := range up {
		nd.c.Tick(s.now)
		if !s.now.Before(nd.nextBeat) {
			s.publish(nd, s.beat(nd))
			nd.nextBeat = nd.nextBeat.Add(s.cfg.HeartbeatInterval)
		}
		if !s.now.Before(nd.nextAnn) {
			s.publish(nd, nd.c.Heads())
			nd.nextAnn = nd.nextAnn.Add(s.cfg.RebroadcastInterval)
		}
	}
	s.deliver()
	for _, nd := range up {
		if len(nd.c.Missing()) > 0 {
			res, err := nd.c.Sync(context.Background(), s.getter(nd))
			if err != nil && !errors.Is(err, ErrIncomplete) {
				s.t.Fatal(err)
			}
			s.rounds += res.Rounds
			for _, c := range res.Keep {
				nd.kept[c.KeyString()] = true
			}
		}
		if s.snaps && nd.c.ShouldSnapshot() {
			bs, err := nd.c.Snapshot()
			s.write(nd, bs, err)
		}
		if h := string(nd.c.Heads()); h != nd.lastAnn {
			nd.lastAnn = h
			s.publish(nd, []byte(h))
		}
		for _, g := range nd.c.TakeGarbage() {
			delete(nd.kept, g.KeyString())
		}
		if s.now.Sub(t0)%time.Minute == 0 {
			s.gc(nd)
		}
	}
	for _, nd := range up {
		if s.noPins {
			break
		}
		s.runJobs(nd)
		for _, a := range nd.c.Plan() {
			switch a.Kind {
			case ActionPin:
				nd.jobs = append(nd.jobs, simJob{item: a.Item, at: s.now.Add(s.fetch)})
			case ActionUnpin:
				k := a.Item.KeyString()
				delete(nd.pinned, k)
				nd.c.UnpinDone(a.Item, nil)
				if nd.c.Has(a.Item) {
					r := s.desc.Replication
					if n := s.copies(k); n < r {
						s.unpinViolations = append(s.unpinViolations,
							fmt.Sprintf("%v: node %d released %s leaving %d copies", s.now.Sub(t0), nd.i, a.Item, n))
					}
				}
			}
		}
	}
}

func (s *sim) runJobs(nd *simNode) {
	n := 0
	for _, j := range nd.jobs {
		if j.at.After(s.now) {
			nd.jobs[n] = j
			n++
			continue
		}
		k := j.item.KeyString()
		ok := s.hasCopy(nd, k)
		for _, o := range s.nodes {
			if !ok && s.reachable(nd, o) && s.hasCopy(o, k) {
				ok = true
			}
		}
		if ok {
			nd.pinned[k] = true
			nd.c.PinDone(j.item, nil)
		} else {
			nd.c.PinDone(j.item, errors.New("no provider"))
		}
	}
	nd.jobs = nd.jobs[:n]
}

func (s *sim) deliver() {
	for len(s.queue) > 0 {
		msgs := s.queue
		s.queue = nil
		s.rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		for _, m := range msgs {
			for _, to := range s.nodes {
				if m.from >= 0 {
					if from := s.nodes[m.from]; to == from || !s.reachable(from, to) {
						continue
					}
				} else if !to.up {
					continue
				}
				sender := m.id
				if m.from >= 0 {
					sender = s.nodes[m.from].c.Self()
				}
				if r, _ := to.c.HandleMessage(sender, m.data); r.Answer {
					if a := to.c.TakeAnswer(); a != nil {
						s.publish(to, a)
					}
				}
			}
		}
	}
}

func (s *sim) upNodes() []*simNode {
	var out []*simNode
	for _, nd := range s.nodes {
		if nd.up {
			out = append(out, nd)
		}
	}
	return out
}

// copies counts the members, up or down, that hold item k pinned.
func (s *sim) copies(k string) int {
	n := 0
	for _, nd := range s.nodes {
		if nd.pinned[k] {
			n++
		}
	}
	return n
}

func (s *sim) liveCopies(k string) int {
	n := 0
	for _, nd := range s.nodes {
		if nd.up && nd.pinned[k] {
			n++
		}
	}
	return n
}

// runUntil steps one second at a time until cond holds, for at most max.
func (s *sim) runUntil(max time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	start := s.now
	for !cond() {
		if s.now.Sub(start) > max {
			s.t.Fatalf("%s: not reached after %v", what, max)
		}
		s.step(time.Second)
	}
	return s.now.Sub(start)
}

// placed reports whether every item is pinned by exactly r up members,
// which are its holders in every up member's view, and shows as ok.
func (s *sim) placed(items []cid.Cid, r int, exact bool) bool {
	for _, it := range items {
		k := it.KeyString()
		if n := s.liveCopies(k); n < r || (exact && n != r) {
			return false
		}
	}
	return true
}

func (s *sim) allOK() bool {
	for _, nd := range s.upNodes() {
		for _, st := range nd.c.Status().Items {
			if st.State != StateOK {
				return false
			}
		}
	}
	return true
}

func (s *sim) converged() bool {
	up := s.upNodes()
	want := fingerprint(up[0].c)
	for _, nd := range up[1:] {
		if fingerprint(nd.c) != want {
			return false
		}
	}
	return true
}

func (s *sim) quiet() bool {
	for _, nd := range s.upNodes() {
		if len(nd.jobs) > 0 {
			return false
		}
	}
	return true
}

func itemRange(from, to int) []cid.Cid {
	var out []cid.Cid
	for i := from; i < to; i++ {
		out = append(out, itemCID(i))
	}
	return out
}

// holdersAgree checks that every up member computes the same holders.
func (s *sim) holdersAgree(items []cid.Cid) error {
	up := s.upNodes()
	for _, it := range items {
		want := fmt.Sprint(up[0].c.HoldersOf(it))
		for _, nd := range up[1:] {
			if got := fmt.Sprint(nd.c.HoldersOf(it)); got != want {
				return fmt.Errorf("item %s: node %d says %s, node 0 says %s", it, nd.i, got, want)
			}
		}
	}
	return nil
}

func (s *sim) pinnedBy(k string) []int {
	var out []int
	for _, nd := range s.nodes {
		if nd.pinned[k] {
			out = append(out, nd.i)
		}
	}
	sort.Ints(out)
	return out
}
