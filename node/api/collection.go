package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// A collection is named in requests by its local name or its ID (the CID
// of its descriptor). Local names are labels this node keeps; the ID is
// what other nodes join with.

// CollectionCreateRequest creates a collection; this node is its creator.
type CollectionCreateRequest struct {
	Name        string `json:"name"`
	Replication int    `json:"replication,omitempty"` // default R of its items; 0: 3
}

// CollectionJoinRequest joins a collection by ID, under a local name
// (default: the name in its descriptor).
type CollectionJoinRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// CollectionLeaveRequest leaves a collection. Without Force the node stays
// until every item it holds is pinned by its new holders; with Force it
// drops everything at once.
type CollectionLeaveRequest struct {
	Collection string `json:"collection"`
	Force      bool   `json:"force,omitempty"`
}

// CollectionAddRequest adds items (or updates their replication and label).
type CollectionAddRequest struct {
	Collection  string   `json:"collection"`
	CIDs        []string `json:"cids"`
	Replication int      `json:"replication,omitempty"` // 0: the collection's default
	Label       string   `json:"label,omitempty"`
}

// CollectionRmRequest removes items.
type CollectionRmRequest struct {
	Collection string   `json:"collection"`
	CIDs       []string `json:"cids"`
}

// CollectionGrantRequest makes peers writers (creator only).
type CollectionGrantRequest struct {
	Collection string   `json:"collection"`
	Peers      []string `json:"peers"`
}

// CollectionRef names a collection in a request body.
type CollectionRef struct {
	Collection string `json:"collection"`
}

// CollectionWriteResult reports a write: the signed deltas (or snapshot
// blocks) it made, and the heads after it.
type CollectionWriteResult struct {
	ID     string           `json:"id"`
	Name   string           `json:"name"`
	Blocks []string         `json:"blocks"`
	Heads  []CollectionHead `json:"heads"`
}

// CollectionSummary is one line of `weft collection list` (and the
// dashboard's collections card).
type CollectionSummary struct {
	ID              string `json:"id"`
	Name            string `json:"name"`            // local name
	DescriptorName  string `json:"descriptor_name"` // name chosen by the creator
	Creator         string `json:"creator"`
	Replication     int    `json:"replication"`
	CanWrite        bool   `json:"can_write"`
	Leaving         bool   `json:"leaving,omitempty"`
	Members         int    `json:"members"`       // members known, this node included
	MembersAlive    int    `json:"members_alive"` // heard within suspect_after, this node included
	Items           int    `json:"items"`
	Pinned          int    `json:"pinned"` // items this node holds for the collection
	OK              int    `json:"ok"`
	Repairing       int    `json:"repairing"`
	UnderReplicated int    `json:"under_replicated"`
	Heads           int    `json:"heads"`
}

// CollectionHead is one head of a collection's delta DAG.
type CollectionHead struct {
	CID    string `json:"cid"`
	Author string `json:"author"`
	Seq    uint64 `json:"seq"`
}

// CollectionDot is one author's entry of a collection's version vector.
type CollectionDot struct {
	Author string `json:"author"`
	Seq    uint64 `json:"seq"`
}

// CollectionItem is one item of a collection. Holders, Pinned, Surplus and
// State are set by status, not by ls.
type CollectionItem struct {
	CID         string   `json:"cid"`
	Label       string   `json:"label,omitempty"`
	Replication int      `json:"replication"` // asked for; 0: the collection's default
	Effective   int      `json:"effective"`   // in force
	State       string   `json:"state,omitempty"`
	Holders     []string `json:"holders,omitempty"` // allocated, highest weight first
	Pinned      []string `json:"pinned,omitempty"`  // holders that report it pinned
	Surplus     []string `json:"surplus,omitempty"` // members still holding it while they hand it over
}

// CollectionMember is a member as this node sees it.
type CollectionMember struct {
	ID       string     `json:"id"`
	Self     bool       `json:"self,omitempty"`
	State    string     `json:"state"` // alive, suspect, gone, leaving
	LastSeen *time.Time `json:"last_seen,omitempty"`
	Pinned   uint64     `json:"pinned"`
}

// CollectionStats are the replica's counters. Rejected counts every block
// refused; Unauthorized those signed by a key that may not write.
type CollectionStats struct {
	Applied         uint64 `json:"applied"`
	Duplicates      uint64 `json:"duplicates"`
	Covered         uint64 `json:"covered"`
	Rejected        uint64 `json:"rejected"`
	Unauthorized    uint64 `json:"unauthorized"`
	Equivocations   uint64 `json:"equivocations"`
	SnapshotsLoaded uint64 `json:"snapshots_loaded"`
	Heartbeats      uint64 `json:"heartbeats"`
	BadHeartbeats   uint64 `json:"bad_heartbeats"`
	BadMessages     uint64 `json:"bad_messages"` // topic messages refused (malformed, wrong collection)
	Syncs           uint64 `json:"syncs"`
	SyncErrors      uint64 `json:"sync_errors"`
	LastSyncError   string `json:"last_sync_error,omitempty"`
	Pins            uint64 `json:"pins"`
	PinFailures     uint64 `json:"pin_failures"`
	LastPinError    string `json:"last_pin_error,omitempty"`
	Unpins          uint64 `json:"unpins"`
	Snapshots       uint64 `json:"snapshots_written"`
	// Refusals of topic messages (see README, Malicious peers).
	NotMember   uint64 `json:"not_member"`         // heads messages and requests from non-members
	OverBudget  uint64 `json:"over_budget"`        // claimed blocks over the sender's budget (collection.max_claims)
	RateLimited uint64 `json:"rate_limited"`       // heads requests within collection.answer_interval of the last answer
	FalseClaims uint64 `json:"false_claims"`       // claimed blocks never fetched
	WantedFull  uint64 `json:"wanted_full"`        // wanted blocks evicted or refused because the wanted set was full
	Answers     uint64 `json:"answers"`            // answers to heads requests published
	Suppressed  uint64 `json:"answers_suppressed"` // answers cancelled: another member answered alike first
	// Messages not sent because another member had just sent the same.
	HeadsSkipped    uint64 `json:"heads_skipped"`    // announcements of heads another member announced
	RequestsSkipped uint64 `json:"requests_skipped"` // heads requests another member with the same heads made
	// Heads requests this member published on the topic (when it meets a
	// member again after a silence, or when no direct ask was answered).
	RequestsPublished uint64 `json:"requests_published"`
	// The direct heads exchange (a join asks a few peers on a stream
	// instead of the whole topic): asks made, asks that failed, answers
	// taken from members, and answers given to others.
	DirectAsks     uint64 `json:"direct_asks"`
	DirectFailures uint64 `json:"direct_failures"`
	DirectTaken    uint64 `json:"direct_taken"`
	DirectAnswers  uint64 `json:"direct_answers"`
}

// CollectionStore is what the collection's own blocks take in this node's
// store: deltas kept after the snapshots, the bytes of the live deltas and
// snapshots, and the blocks pinned for it (descriptor included).
type CollectionStore struct {
	Deltas int `json:"deltas"`
	Bytes  int `json:"bytes"`
	Blocks int `json:"blocks"`
}

// CollectionStatus is `weft collection status`.
type CollectionStatus struct {
	CollectionSummary
	Self       string             `json:"self"`
	Writers    []string           `json:"writers"`
	HeadList   []CollectionHead   `json:"head_list"`
	Snapshots  []string           `json:"snapshots"`
	Clock      []CollectionDot    `json:"clock"`
	MemberList []CollectionMember `json:"member_list"`
	ItemList   []CollectionItem   `json:"item_list"`
	PendingDAG int                `json:"pending"` // deltas waiting for parents
	Missing    int                `json:"missing"` // blocks wanted
	Store      CollectionStore    `json:"store"`
	Stats      CollectionStats    `json:"stats"`
	Topic      string             `json:"topic"`
	TopicPeers int                `json:"topic_peers"`
	// GracePeriod is collection.grace_period, lengthened as the heartbeat
	// interval is (HeartbeatEvery): how long a member heartbeating as
	// this one does may stay unheard before its items move.
	GracePeriod float64 `json:"grace_period_seconds"`
	// HeartbeatEvery is this member's heartbeat interval now:
	// collection.heartbeat_interval, or longer in a collection of more
	// than heartbeat_rate x heartbeat_interval members.
	HeartbeatEvery float64 `json:"heartbeat_interval_seconds"`
}

// CollectionCreate creates a collection and returns its summary (ID
// included).
func (c *Client) CollectionCreate(ctx context.Context, name string, replication int) (CollectionSummary, error) {
	var out CollectionSummary
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/create", nil, CollectionCreateRequest{Name: name, Replication: replication}, &out)
}

// CollectionJoin joins a collection by ID, under a local name ("" for the
// descriptor's).
func (c *Client) CollectionJoin(ctx context.Context, id, name string) (CollectionSummary, error) {
	var out CollectionSummary
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/join", nil, CollectionJoinRequest{ID: id, Name: name}, &out)
}

// CollectionLeave leaves a collection.
func (c *Client) CollectionLeave(ctx context.Context, coll string, force bool) (CollectionSummary, error) {
	var out CollectionSummary
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/leave", nil, CollectionLeaveRequest{Collection: coll, Force: force}, &out)
}

// CollectionAdd adds items to a collection.
func (c *Client) CollectionAdd(ctx context.Context, coll string, cids []string, replication int, label string) (CollectionWriteResult, error) {
	var out CollectionWriteResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/add", nil,
		CollectionAddRequest{Collection: coll, CIDs: cids, Replication: replication, Label: label}, &out)
}

// CollectionRm removes items from a collection.
func (c *Client) CollectionRm(ctx context.Context, coll string, cids []string) (CollectionWriteResult, error) {
	var out CollectionWriteResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/rm", nil, CollectionRmRequest{Collection: coll, CIDs: cids}, &out)
}

// CollectionGrant makes peers writers of a collection.
func (c *Client) CollectionGrant(ctx context.Context, coll string, peers []string) (CollectionWriteResult, error) {
	var out CollectionWriteResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/grant", nil, CollectionGrantRequest{Collection: coll, Peers: peers}, &out)
}

// CollectionSnapshot folds a collection's history into a snapshot now.
func (c *Client) CollectionSnapshot(ctx context.Context, coll string) (CollectionWriteResult, error) {
	var out CollectionWriteResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/collection/snapshot", nil, CollectionRef{Collection: coll}, &out)
}

// CollectionLs lists a collection's items.
func (c *Client) CollectionLs(ctx context.Context, coll string) ([]CollectionItem, error) {
	var out []CollectionItem
	return out, c.Do(ctx, http.MethodGet, "/api/v1/collection/ls", url.Values{"collection": {coll}}, nil, &out)
}

// CollectionStatus returns a collection's status: members, heads, and each
// item's holders and state.
func (c *Client) CollectionStatus(ctx context.Context, coll string) (CollectionStatus, error) {
	var out CollectionStatus
	return out, c.Do(ctx, http.MethodGet, "/api/v1/collection/status", url.Values{"collection": {coll}}, nil, &out)
}

// CollectionList lists the collections this node is a member of.
func (c *Client) CollectionList(ctx context.Context) ([]CollectionSummary, error) {
	var out []CollectionSummary
	return out, c.Do(ctx, http.MethodGet, "/api/v1/collection/list", nil, nil, &out)
}
