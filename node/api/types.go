// Package api holds the JSON types of weft's HTTP API and a client for it.
// The daemon (package node) serves these types; the CLI and tests use Client.
package api

import "time"

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// ID describes the node's identity.
type ID struct {
	ID        string   `json:"id"`
	PublicKey string   `json:"public_key"`
	Addrs     []string `json:"addrs"`
	Agent     string   `json:"agent"`
	Protocols []string `json:"protocols"`
}

// Status is a summary of the node's state.
type Status struct {
	ID            string    `json:"id"`
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Profile       string    `json:"profile"`
	Private       bool      `json:"private"`
	Transports    []string  `json:"transports"`
	TransportNote string    `json:"transport_note,omitempty"`
	AllowPeers    int       `json:"allow_peers"`
	Addrs         []string  `json:"addrs"`
	Peers         int       `json:"peers"`
	DHT           DHTStatus `json:"dht"`
	Store         StoreStat `json:"store"`
	NAT           NATStatus `json:"nat"`
}

// NATStatus says whether the node can be reached from outside its network.
type NATStatus struct {
	// Reachability is public, private or unknown (AutoNAT).
	Reachability string `json:"reachability"`
	// Transports gives a verdict per transport (tcp, quic-v1) from AutoNAT
	// v2's checks of each public address; empty until one was checked.
	Transports map[string]string `json:"transports,omitempty"`
	// Reachable and Unreachable are public addresses AutoNAT v2 confirmed
	// or refuted.
	Reachable   []string `json:"reachable,omitempty"`
	Unreachable []string `json:"unreachable,omitempty"`
	// Observed are addresses peers see this node at that are not on its
	// interfaces (its outside address behind a NAT, or a port mapping).
	Observed []string `json:"observed,omitempty"`
	// Relays are the relays this node holds a reservation on.
	Relays []string `json:"relays,omitempty"`
	// RelayAddrs are the /p2p-circuit addresses those relays give it.
	RelayAddrs []string `json:"relay_addrs,omitempty"`
	// RelayService is true while this node relays for others.
	RelayService bool `json:"relay_service"`
}

// DHTStatus summarises the DHT.
type DHTStatus struct {
	Mode         string `json:"mode"`
	Protocol     string `json:"protocol"`
	RoutingTable int    `json:"routing_table"`
}

// StoreStat summarises the block store.
type StoreStat struct {
	Blocks    int64 `json:"blocks"`
	Bytes     int64 `json:"bytes"`
	DiskBytes int64 `json:"disk_bytes"`
	MaxBytes  int64 `json:"max_bytes"`
}

// Peer is one connected peer.
type Peer struct {
	ID        string   `json:"id"`
	Addr      string   `json:"addr"`
	Direction string   `json:"direction"`
	LatencyMS float64  `json:"latency_ms"`
	Streams   int      `json:"streams"`
	Protocols []string `json:"protocols,omitempty"`
	Agent     string   `json:"agent,omitempty"`
	// Transport is the connection's transport (tcp, quic-v1; for a relayed
	// connection, the one to the relay).
	Transport string `json:"transport"`
	// Relayed is true for a connection through a circuit relay, Limited
	// when the relay bounds it in time and data.
	Relayed bool `json:"relayed"`
	Limited bool `json:"limited,omitempty"`
	// Conns counts the open connections to the peer; Direct says whether
	// one of them is direct (not relayed).
	Conns  int  `json:"conns"`
	Direct bool `json:"direct"`
}

// ConnectRequest asks the node to dial a multiaddr ending in /p2p/ID.
type ConnectRequest struct {
	Addr string `json:"addr"`
}

// ConnectResult names the peer connected to.
type ConnectResult struct {
	ID string `json:"id"`
}

// DisconnectRequest asks the node to close its connections to a peer.
type DisconnectRequest struct {
	Peer string `json:"peer"`
}

// PeerInfo is a peer and its known addresses.
type PeerInfo struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// RoutingTable lists the DHT routing table.
type RoutingTable struct {
	Size  int                 `json:"size"`
	Peers []RoutingTableEntry `json:"peers"`
}

// DHTLookup is one measured DHT lookup (GET /api/v1/dht/lookup).
type DHTLookup struct {
	// Kind is find-peer or find-providers; Key the peer ID or CID.
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Found: the peer, or at least one provider, was found.
	Found bool `json:"found"`
	// Local: answered from the node's own tables (a connected peer, a
	// provider record it holds), Hops then 0.
	Local bool `json:"local"`
	// Hops is the length of the chain of queries that led to the answer:
	// a routing-table peer is known after 0, a peer named in the answer of
	// a peer known after h is known after h+1, and the answer after the
	// hops of the peer that gave it plus one.
	Hops int `json:"hops"`
	// Queried is how many peers the lookup queried.
	Queried int `json:"queried"`
	// Seconds is the time to the answer (find-providers: to the first
	// provider).
	Seconds float64 `json:"seconds"`
	// Providers is how many providers the whole lookup found.
	Providers int `json:"providers,omitempty"`
}

// RoutingTableEntry is one routing table peer.
type RoutingTableEntry struct {
	ID        string `json:"id"`
	Bucket    int    `json:"bucket"`
	Connected bool   `json:"connected"`
}

// AddEvent is one line of the add endpoint's NDJSON answer: "added" for
// each entry, then "done" with the root, or "error".
type AddEvent struct {
	Event string `json:"event"`
	Path  string `json:"path,omitempty"`
	CID   string `json:"cid,omitempty"`
	Size  uint64 `json:"size,omitempty"`
	Type  string `json:"type,omitempty"`
	Error string `json:"error,omitempty"`
}

// LsEntry is one directory entry.
type LsEntry struct {
	Name string `json:"name"`
	CID  string `json:"cid"`
	Type string `json:"type"`
	Size uint64 `json:"size"`
}

// ObjectStat describes a UnixFS object.
type ObjectStat struct {
	CID            string `json:"cid"`
	Type           string `json:"type"`
	Size           uint64 `json:"size"`
	CumulativeSize uint64 `json:"cumulative_size"`
	BlockSize      int    `json:"block_size"`
	Links          int    `json:"links"`
	Sharded        bool   `json:"sharded,omitempty"`
	Local          bool   `json:"local"`
	Pinned         bool   `json:"pinned"`
}

// PinEntry is one pin.
type PinEntry struct {
	CID  string `json:"cid"`
	Mode string `json:"mode"`
	Name string `json:"name,omitempty"`
}

// GCResult reports a garbage collection.
type GCResult struct {
	BlocksFreed int64   `json:"blocks_freed"`
	BytesFreed  int64   `json:"bytes_freed"`
	LiveBlocks  int64   `json:"live_blocks"`
	DiskBefore  int64   `json:"disk_before"`
	DiskAfter   int64   `json:"disk_after"`
	Seconds     float64 `json:"seconds"`
}

// CarImportResult reports a CAR import.
type CarImportResult struct {
	Blocks int64    `json:"blocks"`
	Roots  []string `json:"roots"`
}

// PubsubMessage is one message received on a topic. Data is base64 in JSON.
type PubsubMessage struct {
	From  string `json:"from"`
	Seqno string `json:"seqno"`
	Topic string `json:"topic"`
	Data  []byte `json:"data"`
	// Received is when this node's subscription got the message (after
	// validation), by the node's clock: what the testnet measures delivery
	// latency with, free of the time the stream takes to reach the reader.
	Received time.Time `json:"received,omitzero"`
}

// Key is a feed key: its local name and the feed name (IPNS name) it signs.
type Key struct {
	Name string `json:"name"`
	Feed string `json:"feed"`
}

// FeedRecord is one version of a feed.
type FeedRecord struct {
	Name string    `json:"name,omitempty"`
	Seq  uint64    `json:"seq"`
	CID  string    `json:"cid,omitempty"`
	EOL  time.Time `json:"eol,omitempty"`
	// Published is when this node began signing and publishing the record
	// (in a publish's answer only), by the node's clock.
	Published time.Time `json:"published,omitzero"`
}

// Feed is a feed this node follows or owns. Held is the newest valid record
// seen; Pinned the newest version whose content is pinned.
type Feed struct {
	Name        string     `json:"name"`
	Owned       bool       `json:"owned"`
	Following   bool       `json:"following"`
	Pin         bool       `json:"pin"`
	KeepHistory bool       `json:"keep_history"`
	Held        FeedRecord `json:"held"`
	Pinned      FeedRecord `json:"pinned"`
	Fetching    bool       `json:"fetching,omitempty"`
	Error       string     `json:"error,omitempty"`
	// DHT is the background DHT put of an owned feed's records (nil for
	// feeds this node does not publish, or before its first publish).
	DHT *FeedDHT `json:"dht,omitempty"`
}

// FeedDHT says how an owned feed's records reach the DHT: Seq is the newest
// sequence number the DHT took (0: none yet) and At when; LastSeq, LastAt
// and LastError are the last attempt's (LastError empty: it succeeded);
// Pending says a put is queued, running or waiting to be retried.
type FeedDHT struct {
	Seq       uint64    `json:"seq"`
	At        time.Time `json:"at,omitzero"`
	LastSeq   uint64    `json:"last_seq"`
	LastAt    time.Time `json:"last_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	Pending   bool      `json:"pending,omitempty"`
}
