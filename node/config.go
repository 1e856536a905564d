package node

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	toml "github.com/pelletier/go-toml/v2"
)

// Profile names accepted by `weft init --profile`.
const (
	ProfileLocal  = "local"
	ProfilePublic = "public"
)

// DefaultGatewayAddr is addresses.gateway's default: Kubo's gateway port,
// on loopback.
const DefaultGatewayAddr = "127.0.0.1:8080"

// LocalDHTPrefix is the DHT protocol prefix of the local profile: a weft swarm
// of its own that never mixes with the public IPFS DHT.
const LocalDHTPrefix = "/weft"

// PublicDHTPrefix is the prefix of the IPFS Amino DHT (/ipfs/kad/1.0.0).
const PublicDHTPrefix = "/ipfs"

// PublicBootstrapPeers is the public IPFS bootstrap list, as shipped by Kubo.
// The public profile dials these; tests never start a node with it.
var PublicBootstrapPeers = []string{
	"/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
	"/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
	"/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
	"/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
	"/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
	"/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
	"/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
}

// Config is the daemon's configuration, stored as REPO/config.toml. Every
// field has a documented default (see DefaultConfig); `weft config set`
// validates a change before it is written.
type Config struct {
	Profile    string           `toml:"profile" comment:"Profile the repo was made with: local (own DHT, no bootstrap) or public (IPFS Amino DHT)."`
	PeerID     string           `toml:"peer_id" comment:"This node's peer ID, derived from identity.key. Informational; not editable."`
	Addresses  AddressesConfig  `toml:"addresses"`
	Bootstrap  []string         `toml:"bootstrap" comment:"Multiaddrs (with /p2p/ID) dialled at start and whenever the node runs low on peers."`
	Discovery  DiscoveryConfig  `toml:"discovery"`
	DHT        DHTConfig        `toml:"dht"`
	Swarm      SwarmConfig      `toml:"swarm"`
	NAT        NATConfig        `toml:"nat"`
	Relay      RelayConfig      `toml:"relay"`
	Pubsub     PubsubConfig     `toml:"pubsub"`
	Store      StoreConfig      `toml:"store"`
	Content    ContentConfig    `toml:"content"`
	Collection CollectionConfig `toml:"collection"`
	Feed       FeedConfig       `toml:"feed"`
	Log        LogConfig        `toml:"log"`
	Tracing    TracingConfig    `toml:"tracing"`
	Debug      DebugConfig      `toml:"debug"`
	Runtime    RuntimeConfig    `toml:"runtime"`
}

// RuntimeConfig tunes the Go runtime of a daemon (one node in its
// process; nodes sharing a process, in tests and simulations, leave it
// alone).
type RuntimeConfig struct {
	MemoryTrimInterval Duration `toml:"memory_trim_interval" comment:"How often the daemon looks whether it has gone quiet with garbage or free heap left over (after start-up, a transfer); if so it collects and gives the memory back to the OS. At its first look, and when the daemon goes quiet after work, it also unmaps the pages of the weft binary that start-up or the work touched (they stay in the page cache, shared; what runs next maps them again). 0: off."`
}

// DebugConfig holds switches for looking inside a running daemon.
type DebugConfig struct {
	Pprof bool `toml:"pprof" comment:"Serve Go's pprof profiles at /debug/pprof/ on the API address (behind the API token rules)."`
}

// AddressesConfig says where the node listens.
type AddressesConfig struct {
	Swarm   []string `toml:"swarm" comment:"libp2p listen multiaddrs. QUIC addresses are skipped in a private swarm (libp2p refuses a PSK on QUIC)."`
	API     string   `toml:"api" comment:"HTTP API host:port. Loopback by default. Every /api/v1 call needs the bearer token in api.token; /metrics needs it only off loopback."`
	Gateway string   `toml:"gateway" comment:"HTTP gateway host:port (/ipfs/ and /ipns/ paths, trustless CAR and raw responses; read-only). \"off\" or \"\" turns it off."`
	// APIHosts are the Host names the API answers to besides its own
	// address; anything else gets 403 (DNS rebinding defence).
	APIHosts []string `toml:"api_hosts" comment:"Extra Host names (name or name:port) the HTTP API answers to, e.g. behind a reverse proxy. Besides these it answers only to its own address, loopback IPs and localhost with its port; any other Host gets 403 (DNS rebinding). Default: none."`
	// Announce, AppendAnnounce and NoAnnounce are Kubo's Addresses.Announce,
	// AppendAnnounce and NoAnnounce.
	Announce       []string `toml:"announce" comment:"If not empty, the node announces exactly these multiaddrs instead of its listen and observed ones (relay addresses are still added while it is private)."`
	AppendAnnounce []string `toml:"append_announce" comment:"Multiaddrs announced in addition to the discovered ones, e.g. a port forwarded by hand on the router."`
	NoAnnounce     []string `toml:"no_announce" comment:"Multiaddrs never announced: an exact address, or a range as /ip4/10.0.0.0/ipcidr/8."`
}

// NATConfig configures how the node finds out whether it can be reached from
// outside its network, and how it gets through a NAT.
type NATConfig struct {
	AutoNAT            bool     `toml:"autonat" comment:"Ask peers to dial each address back (AutoNAT v2) and answer their requests (its server is rate-limited by go-libp2p: 60 a minute, 12 per peer). The verdict (public, private, unknown) shows in 'weft status' and /metrics."`
	AutoNATService     bool     `toml:"autonat_service" comment:"Also answer AutoNAT v1 requests (older peers), within service_global_limit and service_peer_limit requests a minute."`
	ServiceGlobalLimit int      `toml:"service_global_limit" comment:"AutoNAT v1 requests answered a minute, all peers together."`
	ServicePeerLimit   int      `toml:"service_peer_limit" comment:"AutoNAT v1 requests answered a minute for one peer."`
	Reachability       string   `toml:"reachability" comment:"Force the verdict instead of detecting it: \"\" (detect), \"public\" or \"private\". For nodes whose situation is known, and testnets."`
	PortMap            bool     `toml:"port_map" comment:"Ask the router for a port mapping with UPnP IGD or NAT-PMP. On in the public profile."`
	HolePunching       bool     `toml:"hole_punching" comment:"Upgrade a relayed connection to a direct one by hole punching (DCUtR); the relayed one is closed once the direct one works."`
	PortSweep          bool     `toml:"port_sweep" comment:"When DCUtR cannot punch (this node or the peer behind a NAT that gives each destination a new port, the other behind one that keeps its port), find that port by sending a small UDP datagram to each port of the peer's router, then connect over QUIC. At most one sweep at a time, a peer once in 10 minutes, 10 sprays an hour, only to public IPv4 addresses."`
	PortSweepAfter     Duration `toml:"port_sweep_after" comment:"How long a relayed connection this node dialed waits for DCUtR before a sweep."`
	PortSweepRate      int      `toml:"port_sweep_rate" comment:"Datagrams a second while sweeping (64,512 ports at most: 3.2 s at 20,000)."`
}

// RelayConfig configures circuit relay v2: the client that reserves slots on
// relays while this node is private, and the service that relays for others
// while it is public (Kubo's Swarm.RelayClient and Swarm.RelayService).
type RelayConfig struct {
	Client                bool     `toml:"client" comment:"While the node is not publicly reachable, reserve slots on relays (static ones first, then relays among its peers and in the DHT) and announce /p2p-circuit addresses through them."`
	Static                []string `toml:"static" comment:"Relays to reserve on first, as multiaddrs with /p2p/ID."`
	Service               bool     `toml:"service" comment:"Relay for others while this node is publicly reachable (never while private). On in the public profile."`
	MaxReservations       int      `toml:"max_reservations" comment:"Relay service: reservations held at once."`
	MaxCircuits           int      `toml:"max_circuits" comment:"Relay service: relayed connections open at once per peer."`
	MaxReservationsPerIP  int      `toml:"max_reservations_per_ip" comment:"Relay service: reservations from one IP address."`
	MaxReservationsPerASN int      `toml:"max_reservations_per_asn" comment:"Relay service: reservations from one autonomous system."`
	ReservationTTL        Duration `toml:"reservation_ttl" comment:"Relay service: how long a reservation lasts before it must be refreshed."`
	BufferSize            ByteSize `toml:"buffer_size" comment:"Relay service: buffer per direction of a relayed connection."`
	ConnectionDuration    Duration `toml:"connection_duration" comment:"Relay service: a relayed connection is reset after this long (hole punching should have replaced it by then)."`
	ConnectionData        ByteSize `toml:"connection_data" comment:"Relay service: a relayed connection is reset after this much data in either direction."`
}

// DefaultRelayConfig is the relay section of both profiles, with Kubo's
// Swarm.RelayService limits; the public profile turns the service on.
func DefaultRelayConfig() RelayConfig {
	return RelayConfig{
		Client:                true,
		Static:                []string{},
		MaxReservations:       128,
		MaxCircuits:           16,
		MaxReservationsPerIP:  8,
		MaxReservationsPerASN: 32,
		ReservationTTL:        Duration(time.Hour),
		BufferSize:            2048,
		ConnectionDuration:    Duration(2 * time.Minute),
		ConnectionData:        128 << 10,
	}
}

// DiscoveryConfig holds local discovery switches.
type DiscoveryConfig struct {
	MDNS bool `toml:"mdns" comment:"Find peers on the local network with mDNS. Off by default."`
}

// DHTConfig configures the Kademlia DHT.
type DHTConfig struct {
	Mode              string   `toml:"mode" comment:"auto, client or server. local profile: server (no AutoNAT on loopback); public: auto."`
	ProtocolPrefix    string   `toml:"protocol_prefix" comment:"DHT protocol prefix; /ipfs is the public Amino DHT. A private swarm gets its own prefix derived from its key."`
	BootstrapInterval Duration `toml:"bootstrap_interval" comment:"How often the bootstrap round runs (dial bootstrap and known peers, refresh the routing table)."`
	LowPeers          int      `toml:"low_peers" comment:"Run a bootstrap round at once when connected peers drop below this. 0: never (only the bootstrap_interval rounds)."`
	// Per-peer limits on what the DHT answers.
	StreamsPerPeer         int `toml:"streams_per_peer" comment:"Incoming DHT streams one peer may have open at once. 0: 16."`
	RequestsPerPeer        int `toml:"requests_per_peer" comment:"DHT requests per second answered for one peer (a burst of 10 s worth); past it they wait, and are dropped past 5 s of waiting. 0: 200."`
	ProviderRecordsPerPeer int `toml:"provider_records_per_peer" comment:"Provider records one peer may add: a budget of this many, refilled over the records' 48 h lifetime, so one peer's live records stay under twice it. Raise it for peers providing more roots than this (provide_all on large stores). 0: 20000."`
}

// SwarmConfig configures connections and their limits.
type SwarmConfig struct {
	ConnMgrLow      int      `toml:"connmgr_low" comment:"Connection manager low water mark: trimming stops here."`
	ConnMgrHigh     int      `toml:"connmgr_high" comment:"Connection manager high water mark: trimming starts above this."`
	ConnMgrGrace    Duration `toml:"connmgr_grace" comment:"New connections are not trimmed during this period."`
	MaxMemory       ByteSize `toml:"max_memory" comment:"Resource manager memory limit for libp2p (e.g. \"256MiB\"); 0 = scale to the machine."`
	MaxFDs          int      `toml:"max_fds" comment:"Resource manager file descriptor limit; 0 = scale to the process limit."`
	AllowPeers      []string `toml:"allow_peers" comment:"If not empty, only these peer IDs may connect (both directions)."`
	EnableQUIC      bool     `toml:"enable_quic" comment:"Listen and dial over QUIC-v1 as well as TCP (ignored in a private swarm)."`
	DialTimeout     Duration `toml:"dial_timeout" comment:"Timeout for one outgoing connection attempt."`
	KnownPeersLimit int      `toml:"known_peers_limit" comment:"Peers remembered across restarts (persisted in the store) and redialled at start."`
	// Limits against connection floods (go-libp2p's resource manager).
	ConnsPerIP               int      `toml:"conns_per_ip" comment:"Connections one IP address (IPv6: one /56; 8 times it for a /48) may hold at once; connection attempts from one address past twice this are limited to one per 5s. 0: 8."`
	ConnLimitExempt          []string `toml:"conn_limit_exempt" comment:"Address prefixes conns_per_ip and the attempt rate do not apply to (the totals still do). Default: this machine's 127.0.0.1/32 and ::1/128, which every node of a local swarm shares; an empty list exempts nothing."`
	MaxInboundConns          int      `toml:"max_inbound_conns" comment:"Incoming connections at once, over all addresses. 0: libp2p's default, 64 plus 64 per GiB of max_memory (1/8 of RAM when max_memory is 0)."`
	MaxInboundStreams        int      `toml:"max_inbound_streams" comment:"Incoming streams at once, over all peers. 0: libp2p's default, 1024 plus 1024 per GiB of max_memory."`
	MaxInboundStreamsPerPeer int      `toml:"max_inbound_streams_per_peer" comment:"Incoming streams one peer may have open at once. 0: libp2p's default, 256 plus 128 per GiB of max_memory."`
}

// PubsubConfig configures gossipsub.
type PubsubConfig struct {
	MaxMessageSize      ByteSize `toml:"max_message_size" comment:"Largest pubsub message accepted or sent."`
	ScoreDecayInterval  Duration `toml:"score_decay_interval" comment:"How often gossipsub peer score counters decay (at least 1s; 0 = 5s). The decay factors follow it, so it sets granularity, not speed."`
	InvalidMessageDecay Duration `toml:"invalid_message_decay" comment:"How long a peer's count of invalid messages on a topic takes to decay to nothing while it stays connected (0 = 1h). About 16 invalid messages graylist a peer."`
	ScoreCheckInterval  Duration `toml:"score_check_interval" comment:"How often peer scores are read to disconnect peers below the graylist threshold (0 = 5s)."`
	GraylistBan         Duration `toml:"graylist_ban" comment:"How long a peer disconnected for a score below the graylist threshold is refused (0 = 10m)."`
}

// StoreConfig configures the Badger store.
type StoreConfig struct {
	MaxBytes      ByteSize `toml:"max_bytes" comment:"Storage limit for blocks; past it adds and fetches fail with \"store full\". 0 = unlimited."`
	BufferedFiles bool     `toml:"buffered_files" comment:"Write and read blocks of 64 KiB and more through the page cache. By default they use direct I/O where the filesystem allows it: no copy into fresh page-cache pages, which is what limits adds and fetches on small machines. Set it where the same large blocks are read again and again and should come from memory."`
	SyncFileIO    bool     `toml:"sync_file_io" comment:"Make the direct reads and writes of large blocks (in pack files) plain blocking system calls. By default, on Linux, they go through the kernel's asynchronous I/O, so goroutines waiting on the disk leave the CPU to the others; weft falls back by itself where the kernel refuses it."`
}

// ContentConfig configures fetching and providing content.
type ContentConfig struct {
	FetchTimeout      Duration `toml:"fetch_timeout" comment:"A fetch fails when no provider sends a needed block for this long."`
	ReprovideInterval Duration `toml:"reprovide_interval" comment:"How often every pinned root is announced to the DHT again."`
	ProvideAll        bool     `toml:"provide_all" comment:"Announce every block, not only roots (slower, lets others fetch sub-DAGs by CID)."`
	Native            bool     `toml:"native" comment:"Fetch from weft peers with weft's streaming exchange (Bitswap stays on for everyone else and for what it cannot get)."`
	MaxGetEntries     int64    `toml:"max_get_entries" comment:"Most entries a get (tar) may write. A directory linked from several places is written once per place, so a few KB of DAG can describe billions of entries; a get past this fails before writing anything. 0 = the default, 1048576."`
	// What this node serves through the native exchange: a peer over its
	// share gets "busy" and asks elsewhere (or over Bitswap).
	NativeMaxStreams     int      `toml:"native_max_streams" comment:"Native exchange streams served at once, over all peers; more are answered busy. 0: 64."`
	NativeStreamsPerPeer int      `toml:"native_streams_per_peer" comment:"Native exchange streams served at once to one peer, so one peer cannot take every slot. 0: 8."`
	NativeWriteTimeout   Duration `toml:"native_write_timeout" comment:"Minimum rate for native exchange requesters: sending an answer may take this long per 64 KiB (plus this long of grace) before the stream is cut off, so a peer reading a trickle cannot hold a slot. 0: 10s."`
	BitswapServerIdle    Duration `toml:"bitswap_server_idle" comment:"The Bitswap server (answering other peers' wants) starts at a peer's first want and stops after this long with no Bitswap message, as its engine wakes ten times a second while it runs; peers repeat their wants every minute. 0: 5m."`
}

// DefaultMaxGetEntries is content.max_get_entries when it is 0.
const DefaultMaxGetEntries = 1 << 20

// maxGetEntries is the limit content.max_get_entries sets.
func (c ContentConfig) maxGetEntries() int64 {
	if c.MaxGetEntries == 0 {
		return DefaultMaxGetEntries
	}
	return c.MaxGetEntries
}

// FeedConfig configures signed feeds (IPNS records over gossipsub and the DHT).
type FeedConfig struct {
	MaxRecordSize   ByteSize `toml:"max_record_size" comment:"Largest feed record accepted (at most 10KiB, the IPNS limit)."`
	TickInterval    Duration `toml:"tick_interval" comment:"How often failed version fetches are retried when due."`
	RetryMin        Duration `toml:"retry_min" comment:"First back-off before a failed version fetch or feed DHT put is retried (doubles up to 10m)."`
	CatchUpTimeout  Duration `toml:"catch_up_timeout" comment:"How long a catch-up asks topic peers, and then the DHT, for the latest record."`
	ResolveInterval Duration `toml:"resolve_interval" comment:"How often every followed feed (IPNS name) is resolved again from its topic peers and the DHT, besides on new connections and pubsub: a name published by Kubo may reach only the DHT. 0: never (pubsub and new connections only)."`
}

// resolveInterval is feed.resolve_interval as protocol/feed takes it.
func (c FeedConfig) resolveInterval() time.Duration {
	if c.ResolveInterval == 0 {
		return -1
	}
	return c.ResolveInterval.D()
}

// LogConfig configures structured logging.
type LogConfig struct {
	Level      string   `toml:"level" comment:"debug, info, warn or error."`
	Format     string   `toml:"format" comment:"text or json."`
	Subsystems []string `toml:"subsystems" comment:"Per-subsystem levels, e.g. [\"p2p=debug\", \"store=warn\"] (p2p, store, feed, collection, api)."`
}

// TracingConfig configures OpenTelemetry tracing (node/tracing.go). Off by
// default; the standard OTEL_* environment variables override these keys
// (see README, Tracing).
type TracingConfig struct {
	Exporter    string  `toml:"exporter" comment:"Where spans go: \"\" (tracing off), \"otlp-http\", \"otlp-grpc\" or \"file\" (JSON lines in REPO/traces.jsonl, or tracing.file). OTEL_TRACES_EXPORTER overrides it."`
	Endpoint    string  `toml:"endpoint" comment:"OTLP collector endpoint (host:port, or a URL for otlp-http). Empty: the exporter's default (localhost:4318 or :4317). OTEL_EXPORTER_OTLP_ENDPOINT overrides it."`
	File        string  `toml:"file" comment:"File of the file exporter; relative paths are inside the repo. Default: traces.jsonl."`
	SampleRatio float64 `toml:"sample_ratio" comment:"Share of new traces recorded, 0 to 1; a span whose parent came from a request keeps the parent's decision. OTEL_TRACES_SAMPLER(_ARG) override it."`
}

// DefaultConfig returns the configuration `weft init` writes for a profile.
// Errors only for an unknown profile.
func DefaultConfig(profile string) (Config, error) {
	c := Config{
		Profile: profile,
		Addresses: AddressesConfig{
			Swarm:          []string{"/ip4/127.0.0.1/tcp/4101", "/ip4/127.0.0.1/udp/4101/quic-v1"},
			API:            "127.0.0.1:5101",
			Gateway:        DefaultGatewayAddr,
			APIHosts:       []string{},
			Announce:       []string{},
			AppendAnnounce: []string{},
			NoAnnounce:     []string{},
		},
		Bootstrap: []string{},
		DHT: DHTConfig{
			Mode:                   "server",
			ProtocolPrefix:         LocalDHTPrefix,
			BootstrapInterval:      Duration(5 * time.Minute),
			LowPeers:               4,
			StreamsPerPeer:         16,
			RequestsPerPeer:        200,
			ProviderRecordsPerPeer: 20000,
		},
		Swarm: SwarmConfig{
			ConnMgrLow:      64,
			ConnMgrHigh:     192,
			ConnMgrGrace:    Duration(30 * time.Second),
			EnableQUIC:      true,
			DialTimeout:     Duration(15 * time.Second),
			KnownPeersLimit: 64,
			AllowPeers:      []string{},
			ConnsPerIP:      8,
			ConnLimitExempt: []string{"127.0.0.1/32", "::1/128"},
		},
		NAT: NATConfig{
			AutoNAT:            true,
			AutoNATService:     false,
			ServiceGlobalLimit: 30,
			ServicePeerLimit:   3,
			HolePunching:       true,
			PortSweep:          true,
			PortSweepAfter:     Duration(3 * time.Second),
			PortSweepRate:      20000,
		},
		Relay: DefaultRelayConfig(),
		Pubsub: PubsubConfig{
			MaxMessageSize:      1 << 20,
			ScoreDecayInterval:  Duration(5 * time.Second),
			InvalidMessageDecay: Duration(time.Hour),
			ScoreCheckInterval:  Duration(5 * time.Second),
			GraylistBan:         Duration(10 * time.Minute),
		},
		Store: StoreConfig{},
		Feed: FeedConfig{
			MaxRecordSize:   10 << 10,
			TickInterval:    Duration(2 * time.Second),
			RetryMin:        Duration(30 * time.Second),
			CatchUpTimeout:  Duration(10 * time.Second),
			ResolveInterval: Duration(time.Minute),
		},
		Content: ContentConfig{
			FetchTimeout:         Duration(60 * time.Second),
			ReprovideInterval:    Duration(12 * time.Hour),
			Native:               true,
			MaxGetEntries:        DefaultMaxGetEntries,
			NativeMaxStreams:     64,
			NativeStreamsPerPeer: 8,
			NativeWriteTimeout:   Duration(10 * time.Second),
			BitswapServerIdle:    Duration(5 * time.Minute),
		},
		Collection: DefaultCollectionConfig(),
		Log:        LogConfig{Level: "info", Format: "text", Subsystems: []string{}},
		Tracing:    TracingConfig{SampleRatio: 1},
		Runtime:    RuntimeConfig{MemoryTrimInterval: Duration(30 * time.Second)},
	}
	switch profile {
	case ProfileLocal:
	case ProfilePublic:
		c.Addresses.Swarm = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1"}
		c.Bootstrap = append([]string(nil), PublicBootstrapPeers...)
		c.DHT.Mode = "auto"
		c.DHT.ProtocolPrefix = PublicDHTPrefix
		c.Swarm.ConnMgrLow = 32
		c.Swarm.ConnMgrHigh = 96
		c.Swarm.MaxMemory = 512 << 20
		c.NAT.AutoNATService = true
		c.NAT.PortMap = true
		c.Relay.Service = true
	default:
		return Config{}, fmt.Errorf("unknown profile %q: use local or public", profile)
	}
	return c, nil
}

// Validate checks every field and returns all problems at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.Profile {
	case ProfileLocal, ProfilePublic:
	default:
		bad("profile", "%q is not local or public", c.Profile)
	}
	if len(c.Addresses.Swarm) == 0 {
		bad("addresses.swarm", "at least one listen address is required")
	}
	for _, s := range c.Addresses.Swarm {
		if _, err := ma.NewMultiaddr(s); err != nil {
			bad("addresses.swarm", "bad multiaddr %q: %v", s, err)
		}
	}
	if _, _, err := splitHostPort(c.Addresses.API); err != nil {
		bad("addresses.api", "%v", err)
	}
	if !gatewayOff(c.Addresses.Gateway) {
		if _, _, err := splitHostPort(c.Addresses.Gateway); err != nil {
			bad("addresses.gateway", "%v (or \"off\")", err)
		}
	}
	for _, h := range c.Addresses.APIHosts {
		name := h
		if strings.Contains(h, ":") && !strings.HasSuffix(h, "]") {
			_, _, err := splitHostPort(h)
			if err != nil {
				bad("addresses.api_hosts", "%q is not a host name or name:port: %v", h, err)
				continue
			}
			name = h[:strings.LastIndex(h, ":")]
		}
		if name == "" || strings.ContainsAny(name, "/ \t@?#") {
			bad("addresses.api_hosts", "%q is not a host name or name:port", h)
		}
	}
	for _, l := range []struct {
		key  string
		list []string
	}{
		{"addresses.announce", c.Addresses.Announce},
		{"addresses.append_announce", c.Addresses.AppendAnnounce},
		{"addresses.no_announce", c.Addresses.NoAnnounce},
	} {
		for _, s := range l.list {
			if _, err := ma.NewMultiaddr(s); err != nil {
				bad(l.key, "bad multiaddr %q: %v", s, err)
			}
		}
	}
	switch c.NAT.Reachability {
	case "", "public", "private":
	default:
		bad("nat.reachability", "%q is not \"\", public or private", c.NAT.Reachability)
	}
	if c.NAT.ServiceGlobalLimit < 0 || c.NAT.ServicePeerLimit < 0 {
		bad("nat.service_global_limit", "limits must not be negative")
	}
	for _, s := range c.Relay.Static {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			bad("relay.static", "bad multiaddr %q (want /ip4/…/tcp/…/p2p/PEERID): %v", s, err)
		}
	}
	if c.Relay.MaxReservations < 0 || c.Relay.MaxCircuits < 0 || c.Relay.MaxReservationsPerIP < 0 || c.Relay.MaxReservationsPerASN < 0 ||
		c.Relay.ReservationTTL < 0 || c.Relay.BufferSize < 0 || c.Relay.ConnectionDuration < 0 || c.Relay.ConnectionData < 0 {
		bad("relay", "limits must not be negative (0 takes go-libp2p's default)")
	}
	for _, s := range c.Bootstrap {
		if _, err := peer.AddrInfoFromString(s); err != nil {
			bad("bootstrap", "bad multiaddr %q (want /ip4/…/tcp/…/p2p/PEERID): %v", s, err)
		}
	}
	switch c.DHT.Mode {
	case "auto", "client", "server":
	default:
		bad("dht.mode", "%q is not auto, client or server", c.DHT.Mode)
	}
	if !strings.HasPrefix(c.DHT.ProtocolPrefix, "/") {
		bad("dht.protocol_prefix", "%q must start with /", c.DHT.ProtocolPrefix)
	}
	if c.DHT.LowPeers < 0 {
		bad("dht.low_peers", "must not be negative (0 turns the redial off)")
	}
	if c.DHT.BootstrapInterval <= 0 {
		bad("dht.bootstrap_interval", "must be positive")
	}
	if c.Swarm.ConnMgrLow < 0 || c.Swarm.ConnMgrHigh < c.Swarm.ConnMgrLow {
		bad("swarm.connmgr_high", "must be >= connmgr_low (%d)", c.Swarm.ConnMgrLow)
	}
	for _, s := range c.Swarm.AllowPeers {
		if _, err := peer.Decode(s); err != nil {
			bad("swarm.allow_peers", "bad peer ID %q: %v", s, err)
		}
	}
	for _, s := range c.Swarm.ConnLimitExempt {
		if _, err := netip.ParsePrefix(s); err != nil {
			bad("swarm.conn_limit_exempt", "bad prefix %q (want e.g. 10.0.0.0/8): %v", s, err)
		}
	}
	if c.Swarm.ConnsPerIP < 0 || c.Swarm.MaxInboundConns < 0 || c.Swarm.MaxInboundStreams < 0 || c.Swarm.MaxInboundStreamsPerPeer < 0 {
		bad("swarm", "conns_per_ip, max_inbound_conns, max_inbound_streams and max_inbound_streams_per_peer must not be negative")
	}
	if c.DHT.StreamsPerPeer < 0 || c.DHT.RequestsPerPeer < 0 || c.DHT.ProviderRecordsPerPeer < 0 {
		bad("dht", "streams_per_peer, requests_per_peer and provider_records_per_peer must not be negative")
	}
	if c.Swarm.DialTimeout <= 0 {
		bad("swarm.dial_timeout", "must be positive")
	}
	if c.Pubsub.MaxMessageSize < 1024 {
		bad("pubsub.max_message_size", "must be at least 1KiB")
	}
	if c.Pubsub.ScoreDecayInterval != 0 && c.Pubsub.ScoreDecayInterval < Duration(time.Second) {
		bad("pubsub.score_decay_interval", "must be at least 1s (or 0 for the default)")
	}
	if d := c.Pubsub.InvalidMessageDecay; d < 0 || d > 0 && d <= max(c.Pubsub.ScoreDecayInterval, Duration(time.Second)) {
		bad("pubsub.invalid_message_decay", "must be longer than score_decay_interval (or 0 for the default)")
	}
	if c.Pubsub.ScoreCheckInterval < 0 {
		bad("pubsub.score_check_interval", "must not be negative")
	}
	if c.Pubsub.GraylistBan < 0 {
		bad("pubsub.graylist_ban", "must not be negative")
	}
	if c.Content.FetchTimeout <= 0 {
		bad("content.fetch_timeout", "must be positive")
	}
	if c.Content.NativeMaxStreams < 0 || c.Content.NativeStreamsPerPeer < 0 || c.Content.NativeWriteTimeout < 0 {
		bad("content", "native_max_streams, native_streams_per_peer and native_write_timeout must not be negative")
	}
	if c.Content.ReprovideInterval < Duration(time.Minute) {
		bad("content.reprovide_interval", "must be at least 1m")
	}
	if c.Content.MaxGetEntries < 0 {
		bad("content.max_get_entries", "must not be negative")
	}
	if c.Feed.MaxRecordSize < 512 || c.Feed.MaxRecordSize > 10<<10 {
		bad("feed.max_record_size", "must be between 512B and 10KiB")
	}
	if c.Feed.TickInterval <= 0 || c.Feed.RetryMin <= 0 || c.Feed.CatchUpTimeout <= 0 {
		bad("feed", "tick_interval, retry_min and catch_up_timeout must be positive")
	}
	if c.Feed.ResolveInterval < 0 {
		bad("feed.resolve_interval", "must not be negative (0: off)")
	}
	if c.Store.MaxBytes < 0 {
		bad("store.max_bytes", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if _, err := parseSubsystemLevels(c.Log.Subsystems); err != nil {
		bad("log.subsystems", "%v", err)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	switch c.Tracing.Exporter {
	case "", TraceOTLPHTTP, TraceOTLPGRPC, TraceFile:
	default:
		bad("tracing.exporter", "%q is not \"\", %s, %s or %s", c.Tracing.Exporter, TraceOTLPHTTP, TraceOTLPGRPC, TraceFile)
	}
	if !(c.Tracing.SampleRatio >= 0 && c.Tracing.SampleRatio <= 1) {
		bad("tracing.sample_ratio", "must be between 0 and 1")
	}
	errs = append(errs, c.Collection.validate()...)
	return errors.Join(errs...)
}

const configHeader = `# weft node configuration. Edit with 'weft config set KEY VALUE' (validated),
# or by hand while the daemon is stopped. Durations: "30s", "5m". Sizes: "64MiB".
`

// MarshalConfig renders c as commented TOML.
func MarshalConfig(c Config) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(configHeader)
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseConfig decodes TOML strictly (unknown keys are errors) and validates.
// Keys the file leaves out take the default of its profile, so a config
// written by an older weft gets the documented defaults of newer keys.
func ParseConfig(data []byte) (Config, error) {
	c, err := decodeConfig(data, Config{})
	if err != nil {
		return Config{}, err
	}
	if def, err := DefaultConfig(c.Profile); err == nil {
		if c, err = decodeConfig(data, def); err != nil {
			return Config{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}

// decodeConfig decodes data strictly over base.
func decodeConfig(data []byte, base Config) (Config, error) {
	c := base
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			var keys []string
			for _, e := range sm.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Config{}, fmt.Errorf("unknown config key %s", strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return Config{}, fmt.Errorf("config line %d column %d: %s", row, col, de.Error())
		}
		return Config{}, err
	}
	return c, nil
}

// ConfigKeys lists every settable key in dotted form.
func ConfigKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("toml"), ",")[0]
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".")
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(keys)
	return keys
}

// field finds the struct field for a dotted key.
func (c *Config) field(key string) (reflect.Value, error) {
	v := reflect.ValueOf(c).Elem()
	parts := strings.Split(key, ".")
	for i, p := range parts {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, unknownKey(key)
		}
		found := false
		for j := 0; j < v.NumField(); j++ {
			if strings.Split(v.Type().Field(j).Tag.Get("toml"), ",")[0] == p {
				v = v.Field(j)
				found = true
				break
			}
		}
		if !found || (i == len(parts)-1 && v.Kind() == reflect.Struct) {
			return reflect.Value{}, unknownKey(key)
		}
	}
	return v, nil
}

func unknownKey(key string) error {
	return fmt.Errorf("unknown config key %q (see 'weft config show' for the keys)", key)
}

// Get returns the value at a dotted key, rendered as TOML.
func (c *Config) Get(key string) (string, error) {
	v, err := c.field(key)
	if err != nil {
		return "", err
	}
	b, err := toml.Marshal(map[string]any{"v": v.Interface()})
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.TrimPrefix(string(b), "v = ")), nil
}

// Set parses value for the key's type and assigns it, then validates the
// whole config. Lists take TOML arrays (["a", "b"]) or a single bare string.
// On error c is unchanged.
func (c *Config) Set(key, value string) error {
	if key == "peer_id" {
		return fmt.Errorf("peer_id is derived from identity.key and cannot be set")
	}
	next := *c
	next.Bootstrap = append([]string(nil), c.Bootstrap...)
	v, err := next.field(key)
	if err != nil {
		return err
	}
	ptr := reflect.New(v.Type())
	doc := "v = " + value
	if err := toml.Unmarshal([]byte(doc), &struct {
		V any `toml:"v"`
	}{}); err != nil || v.Kind() == reflect.String && !strings.HasPrefix(value, "\"") && !strings.HasPrefix(value, "'") {
		// Not valid TOML: treat as a bare string.
		doc = "v = " + quoteTOML(value)
	}
	if v.Kind() == reflect.Slice && !strings.HasPrefix(strings.TrimSpace(value), "[") {
		doc = "v = [" + quoteTOML(value) + "]"
	}
	if err := decodeInto(doc, ptr.Interface()); err != nil {
		return fmt.Errorf("%s: cannot use %q: %w", key, value, err)
	}
	v.Set(ptr.Elem())
	if err := next.Validate(); err != nil {
		return err
	}
	*c = next
	return nil
}

func quoteTOML(s string) string {
	b, _ := toml.Marshal(map[string]string{"v": s})
	return strings.TrimSpace(strings.TrimPrefix(string(b), "v = "))
}

func decodeInto(doc string, dst any) error {
	wrapper := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "V", Type: reflect.TypeOf(dst).Elem(), Tag: `toml:"v"`,
	}}))
	if err := toml.Unmarshal([]byte(doc), wrapper.Interface()); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			return errors.New(de.Error())
		}
		return err
	}
	reflect.ValueOf(dst).Elem().Set(wrapper.Elem().Field(0))
	return nil
}

// LoadConfigFile reads and validates a config file.
func LoadConfigFile(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
