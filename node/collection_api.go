package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/boxo/blockservice"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/collection"
	"github.com/weft-p2p/weft/store"
)

// DefaultCollectionReplication is the replication of a collection created
// without one.
const DefaultCollectionReplication = 3

func (n *Node) handleCollectionCreate(r *http.Request, req api.CollectionCreateRequest) (any, error) {
	return n.CollectionCreate(r.Context(), req.Name, req.Replication)
}

func (n *Node) handleCollectionJoin(r *http.Request, req api.CollectionJoinRequest) (any, error) {
	return n.CollectionJoin(r.Context(), req.ID, req.Name)
}

func (n *Node) handleCollectionLeave(r *http.Request, req api.CollectionLeaveRequest) (any, error) {
	return n.CollectionLeave(r.Context(), req.Collection, req.Force)
}

func (n *Node) handleCollectionAdd(r *http.Request, req api.CollectionAddRequest) (any, error) {
	return n.CollectionAdd(r.Context(), req.Collection, req.CIDs, req.Replication, req.Label)
}

func (n *Node) handleCollectionRm(r *http.Request, req api.CollectionRmRequest) (any, error) {
	return n.CollectionRemove(r.Context(), req.Collection, req.CIDs)
}

func (n *Node) handleCollectionGrant(r *http.Request, req api.CollectionGrantRequest) (any, error) {
	return n.CollectionGrant(r.Context(), req.Collection, req.Peers)
}

func (n *Node) handleCollectionSnapshot(r *http.Request, req api.CollectionRef) (any, error) {
	return n.CollectionSnapshot(r.Context(), req.Collection)
}

func (n *Node) handleCollectionItems(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.CollectionItems(r.URL.Query().Get("collection"))
}

func (n *Node) handleCollectionStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.CollectionStatus(r.URL.Query().Get("collection"))
}

func (n *Node) handleCollectionList(w http.ResponseWriter, r *http.Request) (any, error) {
	return n.CollectionList(), nil
}

// collectionErr gives the protocol's refusals their HTTP status.
func collectionErr(err error) error {
	var he *httpError
	switch {
	case err == nil, errors.As(err, &he):
		return err
	case errors.Is(err, collection.ErrNotWriter), errors.Is(err, collection.ErrGrantNotCreator):
		return &httpError{http.StatusForbidden, err}
	case errors.Is(err, collection.ErrNoItem), errors.Is(err, ErrNoCollection):
		return &httpError{http.StatusNotFound, err}
	case errors.Is(err, ErrCollectionName):
		return &httpError{http.StatusConflict, err}
	case errors.Is(err, collection.ErrMalformed), errors.Is(err, collection.ErrTooLarge):
		return &httpError{http.StatusBadRequest, err}
	}
	return err
}

// lookup finds a joined collection by local name or ID.
func (cs *collections) lookup(ref string) (*member, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, badRequest("missing collection (a local name or an ID)")
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range cs.byID {
		if m.name == ref {
			return m, nil
		}
	}
	if id, err := cid.Decode(ref); err == nil {
		if m := cs.byID[id.KeyString()]; m != nil {
			return m, nil
		}
	}
	return nil, &httpError{http.StatusNotFound, fmt.Errorf("%w %q: not a local name or ID of a joined collection (see 'weft collection list')", ErrNoCollection, ref)}
}

// checkName checks that name can be a new local name.
func (cs *collections) checkName(name string) error {
	switch {
	case name == "":
		return badRequest("a collection needs a name")
	case len(name) > collection.MaxNameLen:
		return badRequest("collection name of %d bytes, limit %d", len(name), collection.MaxNameLen)
	case strings.ContainsAny(name, " \t\r\n/"):
		return badRequest("collection name %q: no spaces or slashes", name)
	}
	if _, err := cid.Decode(name); err == nil {
		return badRequest("collection name %q looks like a collection ID; pick another", name)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range cs.byID {
		if m.name == name {
			return &httpError{http.StatusConflict, fmt.Errorf("%w: this node already has a collection named %q (%s); pick another local name", ErrCollectionName, name, m.id)}
		}
	}
	return nil
}

// CollectionCreate creates a collection with this node as its creator, and
// joins it. Its ID (the descriptor's CID) is what other nodes join with.
func (n *Node) CollectionCreate(ctx context.Context, name string, replication int) (api.CollectionSummary, error) {
	cs := n.colls
	cs.opMu.Lock()
	defer cs.opMu.Unlock()
	if replication == 0 {
		replication = DefaultCollectionReplication
	}
	if replication < 1 || replication > collection.MaxReplication {
		return api.CollectionSummary{}, badRequest("replication %d outside 1..%d", replication, collection.MaxReplication)
	}
	if err := cs.checkName(name); err != nil {
		return api.CollectionSummary{}, err
	}
	desc, err := collection.NewDescriptor(name, n.repo.Identity.GetPublic(), replication)
	if err != nil {
		return api.CollectionSummary{}, collectionErr(err)
	}
	b := desc.Block()
	if err := n.store.Blockstore().Put(ctx, b); err != nil {
		return api.CollectionSummary{}, n.explainStoreErr(fmt.Errorf("store descriptor: %w", err))
	}
	return cs.join(ctx, desc, name)
}

// CollectionJoin joins the collection with the given ID, fetching its
// descriptor from the swarm. name is the local name ("": the descriptor's
// name). Joining a collection already joined returns it.
func (n *Node) CollectionJoin(ctx context.Context, idStr, name string) (api.CollectionSummary, error) {
	cs := n.colls
	cs.opMu.Lock()
	defer cs.opMu.Unlock()
	id, err := parseCID(idStr)
	if err != nil {
		return api.CollectionSummary{}, err
	}
	if id.Prefix() != collection.BlockPrefix {
		return api.CollectionSummary{}, badRequest("%s is not a collection ID (a CIDv1 raw sha2-256 CID, as 'weft collection create' prints)", id)
	}
	cs.mu.Lock()
	m := cs.byID[id.KeyString()]
	cs.mu.Unlock()
	if m != nil {
		return m.summary(), nil
	}
	sess := n.store.NewSession()
	defer sess.Close()
	fctx, cancel := context.WithTimeout(ctx, cs.cfg.FetchTimeout.D())
	defer cancel()
	b, err := blockservice.New(sess.Blockstore(), n.content.x).GetBlock(fctx, id)
	if err != nil {
		return api.CollectionSummary{}, &httpError{http.StatusGatewayTimeout,
			fmt.Errorf("fetch descriptor of collection %s: %w (is a member of it connected?)", id, err)}
	}
	desc, err := decodeDescriptor(id, b.RawData())
	if err != nil {
		return api.CollectionSummary{}, badRequest("%v", err)
	}
	if name == "" {
		name = desc.Name
	}
	if err := cs.checkName(name); err != nil {
		return api.CollectionSummary{}, err
	}
	sess.Hold(id)
	return cs.join(ctx, desc, name)
}

// join pins the descriptor (stored already), records the membership and
// opens it.
func (cs *collections) join(ctx context.Context, desc *collection.Descriptor, name string) (api.CollectionSummary, error) {
	n := cs.n
	id := desc.ID()
	if err := n.store.Pins().Add(ctx, id, store.Direct, CollectionBlockPinName(id)); err != nil {
		return api.CollectionSummary{}, fmt.Errorf("pin descriptor: %w", err)
	}
	rec := joinedRecord{ID: id.String(), Name: name, Joined: time.Now().UTC()}
	if err := cs.saveRecord(ctx, id, rec); err != nil {
		return api.CollectionSummary{}, err
	}
	m, err := cs.open(ctx, desc, rec, nil)
	if err != nil {
		_ = n.store.Datastore().Delete(ctx, collectionDSKey(id))
		return api.CollectionSummary{}, err
	}
	n.content.provideAsync(ctx, id) // joiners find a member through the descriptor's providers
	cs.log.Info("collection joined", "collection", id, "name", name, "creator", desc.Creator)
	return m.summary(), nil
}

// CollectionLeave leaves a collection. Without force the node tells the
// members it is leaving and stays until the new holders of its items
// report them pinned, then drops the collection's pins (see status: the
// member shows as leaving). With force it drops them at once.
func (n *Node) CollectionLeave(ctx context.Context, ref string, force bool) (api.CollectionSummary, error) {
	cs := n.colls
	cs.opMu.Lock()
	defer cs.opMu.Unlock()
	m, err := cs.lookup(ref)
	if err != nil {
		return api.CollectionSummary{}, err
	}
	cs.mu.Lock()
	name, finishing := m.name, m.finishing
	m.leaving = true
	m.finishing = m.finishing || force
	cs.mu.Unlock()
	if finishing {
		return m.summary(), nil
	}
	rec := joinedRecord{ID: m.id.String(), Name: name, Leaving: true, Joined: time.Now().UTC()}
	if err := cs.saveRecord(ctx, m.id, rec); err != nil {
		return api.CollectionSummary{}, err
	}
	m.c.Leave()
	sum := m.summary()
	if force {
		// One last heartbeat says so, so others move its items at once.
		if hb, err := m.c.Heartbeat(); err == nil {
			m.publish(hb)
		}
		cs.finishLeave(m)
	} else {
		cs.poke()
	}
	return sum, nil
}

func parseCIDs(ss []string) ([]cid.Cid, error) {
	if len(ss) == 0 {
		return nil, badRequest("no CIDs given")
	}
	out := make([]cid.Cid, 0, len(ss))
	for _, s := range ss {
		c, err := parseCID(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// CollectionAdd adds items to a collection (or updates their replication
// and label). The local key must be the creator's or a granted writer's.
func (n *Node) CollectionAdd(ctx context.Context, ref string, cids []string, replication int, label string) (api.CollectionWriteResult, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	items, err := parseCIDs(cids)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	if replication < 0 || replication > collection.MaxReplication {
		return api.CollectionWriteResult{}, badRequest("replication %d outside 0..%d", replication, collection.MaxReplication)
	}
	add := make([]collection.AddItem, len(items))
	for i, it := range items {
		add[i] = collection.AddItem{Cid: it, Replication: replication, Label: label}
	}
	bs, err := m.c.Add(add...)
	return m.written(ctx, bs, err)
}

// CollectionRemove removes items from a collection.
func (n *Node) CollectionRemove(ctx context.Context, ref string, cids []string) (api.CollectionWriteResult, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	items, err := parseCIDs(cids)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	bs, err := m.c.Remove(items...)
	return m.written(ctx, bs, err)
}

// CollectionGrant makes peers writers of a collection. Only its creator
// may.
func (n *Node) CollectionGrant(ctx context.Context, ref string, peers []string) (api.CollectionWriteResult, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	if len(peers) == 0 {
		return api.CollectionWriteResult{}, badRequest("no peers given")
	}
	ids := make([]peer.ID, 0, len(peers))
	for _, s := range peers {
		id, err := parsePeer(s)
		if err != nil {
			return api.CollectionWriteResult{}, err
		}
		ids = append(ids, id)
	}
	bs, err := m.c.Grant(ids...)
	return m.written(ctx, bs, err)
}

// CollectionSnapshot folds a collection's history into a snapshot now
// (writers do it on their own past collection.snapshot_threshold deltas).
func (n *Node) CollectionSnapshot(ctx context.Context, ref string) (api.CollectionWriteResult, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return api.CollectionWriteResult{}, err
	}
	bs, err := m.c.Snapshot()
	if err == nil && len(bs) > 0 {
		m.stats.snapshots.Add(1)
	}
	return m.written(ctx, bs, err)
}

// written stores and pins the blocks of a local write and reports it.
func (m *member) written(ctx context.Context, bs []blocks.Block, err error) (api.CollectionWriteResult, error) {
	if err != nil {
		if errors.Is(err, collection.ErrNotWriter) {
			err = fmt.Errorf("%w: this node (%s) may not write to collection %s; its creator can allow it with 'weft collection grant %s %s'",
				err, m.cs.n.ID(), m.id, m.id, m.cs.n.ID())
		}
		if len(bs) == 0 {
			return api.CollectionWriteResult{}, collectionErr(err)
		}
	}
	if serr := m.storeBlocks(ctx, bs); serr != nil {
		return api.CollectionWriteResult{}, serr
	}
	if err != nil { // part of a large write went through
		return api.CollectionWriteResult{}, collectionErr(fmt.Errorf("%d deltas written, then: %w", len(bs), err))
	}
	m.cs.mu.Lock()
	out := api.CollectionWriteResult{ID: m.id.String(), Name: m.name, Blocks: []string{}}
	m.cs.mu.Unlock()
	for _, b := range bs {
		out.Blocks = append(out.Blocks, b.Cid().String())
	}
	if h, err := collection.DecodeHeads(m.c.Heads()); err == nil {
		out.Heads = headsOf(h.Heads)
	}
	return out, nil
}

func headsOf(ls []collection.Link) []api.CollectionHead {
	out := make([]api.CollectionHead, 0, len(ls))
	for _, l := range ls {
		out = append(out, api.CollectionHead{CID: l.Cid.String(), Author: l.Author.String(), Seq: l.Seq})
	}
	return out
}

// CollectionItems lists a collection's items.
func (n *Node) CollectionItems(ref string) ([]api.CollectionItem, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return nil, err
	}
	out := []api.CollectionItem{}
	for _, it := range m.c.Items() {
		out = append(out, api.CollectionItem{CID: it.Cid.String(), Label: it.Label, Replication: it.Replication, Effective: it.Effective})
	}
	return out, nil
}

// CollectionList summarises every joined collection, by local name.
func (n *Node) CollectionList() []api.CollectionSummary {
	out := []api.CollectionSummary{}
	for _, m := range n.colls.list() {
		out = append(out, m.summary())
	}
	return out
}

// CollectionStatus returns a collection's status: members, heads, clock,
// and every item's holders and state.
func (n *Node) CollectionStatus(ref string) (api.CollectionStatus, error) {
	m, err := n.colls.lookup(ref)
	if err != nil {
		return api.CollectionStatus{}, err
	}
	return m.status(), nil
}

func peerStrings(ps []peer.ID) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func (m *member) summaryOf(st collection.Status) api.CollectionSummary {
	m.cs.mu.Lock()
	name, leaving := m.name, m.leaving
	m.cs.mu.Unlock()
	s := api.CollectionSummary{
		ID:             m.id.String(),
		Name:           name,
		DescriptorName: st.Name,
		Creator:        st.Creator.String(),
		Replication:    st.Replication,
		CanWrite:       m.c.CanWrite(),
		Leaving:        leaving,
		Members:        len(st.Members),
		Items:          len(st.Items),
		Heads:          len(st.Heads),
	}
	for _, ms := range st.Members {
		if ms.State == collection.MemberAlive {
			s.MembersAlive++
		}
		if ms.Self {
			s.Pinned = int(ms.Pinned)
		}
	}
	for _, it := range st.Items {
		switch it.State {
		case collection.StateOK:
			s.OK++
		case collection.StateRepairing:
			s.Repairing++
		case collection.StateUnderReplicated:
			s.UnderReplicated++
		}
	}
	return s
}

func (m *member) summary() api.CollectionSummary { return m.summaryOf(m.c.Status()) }

func (m *member) status() api.CollectionStatus {
	st := m.c.Status()
	out := api.CollectionStatus{
		CollectionSummary: m.summaryOf(st),
		Self:              m.cs.n.ID().String(),
		Writers:           peerStrings(st.Writers),
		HeadList:          headsOf(st.Heads),
		Snapshots:         []string{},
		Clock:             []api.CollectionDot{},
		MemberList:        []api.CollectionMember{},
		ItemList:          []api.CollectionItem{},
		PendingDAG:        st.Pending,
		Missing:           st.Missing,
		Topic:             m.topicName,
		TopicPeers:        len(m.cs.n.net.PubSub.ListPeers(m.topicName)),
		GracePeriod:       st.Grace.Seconds(),
		HeartbeatEvery:    st.HeartbeatEvery.Seconds(),
	}
	for _, s := range st.Snapshots {
		out.Snapshots = append(out.Snapshots, s.String())
	}
	for _, d := range st.Clock {
		out.Clock = append(out.Clock, api.CollectionDot{Author: d.Author.String(), Seq: d.Seq})
	}
	for _, ms := range st.Members {
		am := api.CollectionMember{ID: ms.ID.String(), Self: ms.Self, State: string(ms.State), Pinned: ms.Pinned}
		if !ms.LastSeen.IsZero() {
			t := ms.LastSeen.UTC()
			am.LastSeen = &t
		}
		out.MemberList = append(out.MemberList, am)
	}
	for _, it := range st.Items {
		out.ItemList = append(out.ItemList, api.CollectionItem{
			CID: it.Cid.String(), Label: it.Label, Replication: it.Replication, Effective: it.Effective,
			State: string(it.State), Holders: peerStrings(it.Holders), Pinned: peerStrings(it.Pinned), Surplus: peerStrings(it.Surplus),
		})
	}
	out.Store.Deltas, out.Store.Bytes = m.c.StoreSize()
	out.Store.Blocks = len(m.c.Blocks()) + 1 // and the descriptor
	s := st.Stats
	out.Stats = api.CollectionStats{
		Applied: s.Applied, Duplicates: s.Duplicates, Covered: s.Covered, Rejected: s.Rejected,
		Unauthorized: s.Unauthorized, Equivocations: s.Equivocations, SnapshotsLoaded: s.SnapshotsLoaded,
		Heartbeats: s.Heartbeats, BadHeartbeats: s.BadHeartbeats,
		BadMessages: m.stats.badMessages.Load(), Syncs: m.stats.syncs.Load(), SyncErrors: m.stats.syncErrors.Load(),
		Pins: m.stats.pins.Load(), PinFailures: m.stats.pinFailures.Load(), Unpins: m.stats.unpins.Load(),
		Snapshots: m.stats.snapshots.Load(),
		NotMember: s.NotMember, OverBudget: s.OverBudget, RateLimited: s.RateLimited, FalseClaims: s.FalseClaims,
		WantedFull: s.WantedFull, Answers: s.Answers, Suppressed: s.Suppressed,
		HeadsSkipped: s.HeadsSkipped, RequestsSkipped: s.RequestsSkipped,
		RequestsPublished: m.stats.requests.Load(),
		DirectAsks:        m.stats.directAsks.Load(), DirectFailures: m.stats.directFailures.Load(),
		DirectTaken: s.DirectTaken, DirectAnswers: s.DirectAnswers,
	}
	m.stats.mu.Lock()
	out.Stats.LastSyncError, out.Stats.LastPinError = m.stats.lastSyncErr, m.stats.lastPinErr
	m.stats.mu.Unlock()
	return out
}
