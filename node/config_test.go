package node

import (
	"net"
	"net/netip"

	"bytes"
	"errors"
	ma "github.com/multiformats/go-multiaddr"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/weft-p2p/weft/p2p"
)

// testPeerID is a valid peer ID for bootstrap and allow-list values.
const testPeerID = "12D3KooWLamsvSoknPS157qa9F2KnhERzkzGeHjs5QUwBBsVTPg6"

// defaultConfig returns DefaultConfig(profile) or fails the test.
func defaultConfig(t *testing.T, profile string) Config {
	t.Helper()
	c, err := DefaultConfig(profile)
	if err != nil {
		t.Fatalf("DefaultConfig(%q): %v", profile, err)
	}
	return c
}

// marshal renders c with MarshalConfig or fails the test.
func marshal(t *testing.T, c Config) []byte {
	t.Helper()
	b, err := MarshalConfig(c)
	if err != nil {
		t.Fatalf("MarshalConfig: %v", err)
	}
	return b
}

// wantErrContains fails unless err is non-nil and contains every want.
func wantErrContains(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not contain %q", err, w)
		}
	}
}

// newPSK returns a fresh pre-shared key.
func newPSK(t *testing.T) pnet.PSK {
	t.Helper()
	raw, err := p2p.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	psk, err := p2p.ParseSwarmKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return psk
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		profile   string
		prefix    string
		mode      string
		bootstrap []string
		wildcard  bool // listens on every interface
	}{
		{ProfileLocal, LocalDHTPrefix, "server", []string{}, false},
		{ProfilePublic, PublicDHTPrefix, "auto", PublicBootstrapPeers, true},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			c := defaultConfig(t, tt.profile)
			if err := c.Validate(); err != nil {
				t.Fatalf("default config does not validate: %v", err)
			}
			if c.Profile != tt.profile {
				t.Errorf("Profile = %q, want %q", c.Profile, tt.profile)
			}
			if c.DHT.ProtocolPrefix != tt.prefix {
				t.Errorf("DHT.ProtocolPrefix = %q, want %q", c.DHT.ProtocolPrefix, tt.prefix)
			}
			if c.DHT.Mode != tt.mode {
				t.Errorf("DHT.Mode = %q, want %q", c.DHT.Mode, tt.mode)
			}
			if !slices.Equal(c.Bootstrap, tt.bootstrap) {
				t.Errorf("Bootstrap = %q, want %q", c.Bootstrap, tt.bootstrap)
			}
			if c.Discovery.MDNS {
				t.Error("mDNS is on by default")
			}
			if c.PeerID != "" {
				t.Errorf("PeerID = %q before init, want empty", c.PeerID)
			}
			for _, a := range c.Addresses.Swarm {
				all := listensOnEveryInterface(t, a)
				if all != tt.wildcard {
					t.Errorf("listen address %s: listens on every interface = %v, want %v", a, all, tt.wildcard)
				}
			}
			host, _, err := splitHostPort(c.Addresses.API)
			if err != nil || !isLoopbackHost(host) {
				t.Errorf("API address %q is not loopback (%v)", c.Addresses.API, err)
			}
		})
	}

	t.Run("public bootstrap is a copy", func(t *testing.T) {
		c := defaultConfig(t, ProfilePublic)
		orig := PublicBootstrapPeers[0]
		c.Bootstrap[0] = "changed"
		if PublicBootstrapPeers[0] != orig {
			t.Fatal("changing a config's bootstrap list changed PublicBootstrapPeers")
		}
	})
	t.Run("unknown profile", func(t *testing.T) {
		for _, p := range []string{"", "private", "Local"} {
			_, err := DefaultConfig(p)
			wantErrContains(t, err, "unknown profile", `"`+p+`"`)
		}
	})
}

func TestConfigValidateErrors(t *testing.T) {
	tests := []struct {
		key    string
		mutate func(*Config)
	}{
		{"profile", func(c *Config) { c.Profile = "private" }},
		{"addresses.swarm", func(c *Config) { c.Addresses.Swarm = nil }},
		{"addresses.swarm", func(c *Config) { c.Addresses.Swarm = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/nope"} }},
		{"addresses.api", func(c *Config) { c.Addresses.API = "127.0.0.1" }},
		{"addresses.api", func(c *Config) { c.Addresses.API = "127.0.0.1:70000" }},
		{"addresses.api", func(c *Config) { c.Addresses.API = "127.0.0.1:http" }},
		{"addresses.api_hosts", func(c *Config) { c.Addresses.APIHosts = []string{"weft.lan", "http://weft.lan"} }},
		{"addresses.api_hosts", func(c *Config) { c.Addresses.APIHosts = []string{"weft.lan:99999"} }},
		{"addresses.api_hosts", func(c *Config) { c.Addresses.APIHosts = []string{""} }},
		{"bootstrap", func(c *Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4101"} }}, // no /p2p/ID
		{"bootstrap", func(c *Config) { c.Bootstrap = []string{"bootstrap.example"} }},
		{"dht.mode", func(c *Config) { c.DHT.Mode = "Server" }},
		{"dht.protocol_prefix", func(c *Config) { c.DHT.ProtocolPrefix = "weft" }},
		{"dht.bootstrap_interval", func(c *Config) { c.DHT.BootstrapInterval = 0 }},
		{"dht.bootstrap_interval", func(c *Config) { c.DHT.BootstrapInterval = Duration(-time.Second) }},
		{"swarm.connmgr_high", func(c *Config) { c.Swarm.ConnMgrLow, c.Swarm.ConnMgrHigh = 10, 9 }},
		{"swarm.allow_peers", func(c *Config) { c.Swarm.AllowPeers = []string{testPeerID, "QmNotAPeer"} }},
		{"swarm.dial_timeout", func(c *Config) { c.Swarm.DialTimeout = 0 }},
		{"swarm.conn_limit_exempt", func(c *Config) { c.Swarm.ConnLimitExempt = []string{"127.0.0.1"} }},
		{"swarm", func(c *Config) { c.Swarm.ConnsPerIP = -1 }},
		{"dht", func(c *Config) { c.DHT.ProviderRecordsPerPeer = -1 }},
		{"content", func(c *Config) { c.Content.NativeStreamsPerPeer = -1 }},
		{"pubsub.max_message_size", func(c *Config) { c.Pubsub.MaxMessageSize = 1023 }},
		{"pubsub.score_decay_interval", func(c *Config) { c.Pubsub.ScoreDecayInterval = Duration(500 * time.Millisecond) }},
		{"pubsub.invalid_message_decay", func(c *Config) { c.Pubsub.InvalidMessageDecay = Duration(-time.Second) }},
		{"pubsub.invalid_message_decay", func(c *Config) { c.Pubsub.InvalidMessageDecay = c.Pubsub.ScoreDecayInterval }},
		{"pubsub.score_check_interval", func(c *Config) { c.Pubsub.ScoreCheckInterval = Duration(-time.Second) }},
		{"pubsub.graylist_ban", func(c *Config) { c.Pubsub.GraylistBan = Duration(-time.Minute) }},
		{"store.max_bytes", func(c *Config) { c.Store.MaxBytes = -1 }},
		{"log.level", func(c *Config) { c.Log.Level = "trace" }},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			for _, profile := range []string{ProfileLocal, ProfilePublic} {
				c := defaultConfig(t, profile)
				tt.mutate(&c)
				err := c.Validate()
				if err == nil {
					t.Fatalf("%s: Validate accepted a bad %s", profile, tt.key)
				}
				// One bad value, one error, and it starts with its key.
				if msg := err.Error(); !strings.HasPrefix(msg, tt.key+": ") || strings.Contains(msg, "\n") {
					t.Fatalf("%s: error %q, want one error starting with %q", profile, msg, tt.key+": ")
				}
			}
		})
	}

	t.Run("all problems at once", func(t *testing.T) {
		c := defaultConfig(t, ProfileLocal)
		c.Log.Level, c.Log.Format, c.DHT.Mode = "loud", "xml", "both"
		err := c.Validate()
		wantErrContains(t, err, "log.level: ", "log.format: ", "dht.mode: ")
		if n := len(strings.Split(err.Error(), "\n")); n != 3 {
			t.Fatalf("got %d errors, want 3: %v", n, err)
		}
	})
}

func TestParseConfigRejects(t *testing.T) {
	valid := string(marshal(t, defaultConfig(t, ProfileLocal)))
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"unknown top-level key", "colour = 'red'\n" + valid, []string{"unknown config key", "colour"}},
		{"unknown key in a table", strings.Replace(valid, "[dht]\n", "[dht]\nmodus = 'server'\n", 1), []string{"unknown config key", "dht.modus"}},
		{"unknown table", valid + "\n[metrics]\nenabled = true\n", []string{"unknown config key", "metrics"}},
		{"misspelt key", strings.Replace(valid, "[log]\n", "[log]\nlevels = 'debug'\n", 1), []string{"unknown config key", "log.levels"}},
		{"bad value", strings.Replace(valid, "mode = 'server'", "mode = 'sever'", 1), []string{"invalid config", "dht.mode"}},
		{"wrong type", strings.Replace(valid, "low_peers = 4", "low_peers = 'four'", 1), []string{"config line"}},
		{"bad duration", strings.Replace(valid, "dial_timeout = '15s'", "dial_timeout = 'soon'", 1), []string{"bad duration"}},
		{"bad size", strings.Replace(valid, "max_message_size = '1MiB'", "max_message_size = 'huge'", 1), []string{"bad size"}},
		{"not TOML", "profile = \n", []string{"config line 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.doc == valid {
				t.Fatal("test document is unchanged: the replacement did not match the marshalled config")
			}
			_, err := ParseConfig([]byte(tt.doc))
			wantErrContains(t, err, tt.want...)
		})
	}
}

func TestConfigSetGet(t *testing.T) {
	boot := "/ip4/127.0.0.1/tcp/4101/p2p/" + testPeerID
	tests := []struct {
		key, value string
		get        string            // what Get returns after the Set
		check      func(Config) bool // the typed field holds the value
	}{
		// string
		{"log.level", "debug", "'debug'", func(c Config) bool { return c.Log.Level == "debug" }},
		{"log.format", `"json"`, "'json'", func(c Config) bool { return c.Log.Format == "json" }},
		{"addresses.api", "127.0.0.1:0", "'127.0.0.1:0'", func(c Config) bool { return c.Addresses.API == "127.0.0.1:0" }},
		{"addresses.api_hosts", `["weft.lan", "proxy.example:8443"]`, "['weft.lan', 'proxy.example:8443']", func(c Config) bool {
			return len(c.Addresses.APIHosts) == 2 && c.Addresses.APIHosts[1] == "proxy.example:8443"
		}},
		{"dht.protocol_prefix", "/weft-test", "'/weft-test'", func(c Config) bool { return c.DHT.ProtocolPrefix == "/weft-test" }},
		// bool
		{"discovery.mdns", "true", "true", func(c Config) bool { return c.Discovery.MDNS }},
		{"swarm.enable_quic", "false", "false", func(c Config) bool { return !c.Swarm.EnableQUIC }},
		// int
		{"dht.low_peers", "7", "7", func(c Config) bool { return c.DHT.LowPeers == 7 }},
		{"swarm.connmgr_high", "500", "500", func(c Config) bool { return c.Swarm.ConnMgrHigh == 500 }},
		{"swarm.max_fds", "0", "0", func(c Config) bool { return c.Swarm.MaxFDs == 0 }},
		// list: a bare string is a one-element list
		{"bootstrap", boot, "['" + boot + "']", func(c Config) bool { return slices.Equal(c.Bootstrap, []string{boot}) }},
		{"bootstrap", "['" + boot + "', '" + boot + "']", "['" + boot + "', '" + boot + "']", func(c Config) bool { return len(c.Bootstrap) == 2 }},
		{"bootstrap", "[]", "[]", func(c Config) bool { return len(c.Bootstrap) == 0 }},
		{"swarm.allow_peers", `["` + testPeerID + `"]`, "['" + testPeerID + "']", func(c Config) bool { return slices.Equal(c.Swarm.AllowPeers, []string{testPeerID}) }},
		{"addresses.swarm", "/ip4/127.0.0.1/tcp/0", "['/ip4/127.0.0.1/tcp/0']", func(c Config) bool { return slices.Equal(c.Addresses.Swarm, []string{"/ip4/127.0.0.1/tcp/0"}) }},
		// Duration
		{"dht.bootstrap_interval", "90s", "'1m30s'", func(c Config) bool { return c.DHT.BootstrapInterval.D() == 90*time.Second }},
		{"swarm.connmgr_grace", `"2m"`, "'2m0s'", func(c Config) bool { return c.Swarm.ConnMgrGrace.D() == 2*time.Minute }},
		{"swarm.dial_timeout", "1500ms", "'1.5s'", func(c Config) bool { return c.Swarm.DialTimeout.D() == 1500*time.Millisecond }},
		{"pubsub.graylist_ban", "30m", "'30m0s'", func(c Config) bool { return c.Pubsub.GraylistBan.D() == 30*time.Minute }},
		// ByteSize
		{"swarm.max_memory", "64MiB", "'64MiB'", func(c Config) bool { return c.Swarm.MaxMemory == 64<<20 }},
		{"pubsub.max_message_size", "4096", "'4KiB'", func(c Config) bool { return c.Pubsub.MaxMessageSize == 4096 }},
		{"store.max_bytes", "1GB", "'1000000000'", func(c Config) bool { return c.Store.MaxBytes == 1e9 }},
		{"store.max_bytes", "1.5GiB", "'1536MiB'", func(c Config) bool { return c.Store.MaxBytes == 3<<29 }},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			c := defaultConfig(t, ProfileLocal)
			if err := c.Set(tt.key, tt.value); err != nil {
				t.Fatalf("Set(%q, %q): %v", tt.key, tt.value, err)
			}
			if !tt.check(c) {
				t.Fatalf("after Set(%q, %q) the field does not hold the value: %+v", tt.key, tt.value, c)
			}
			got, err := c.Get(tt.key)
			if err != nil {
				t.Fatalf("Get(%q): %v", tt.key, err)
			}
			if got != tt.get {
				t.Fatalf("Get(%q) = %s, want %s", tt.key, got, tt.get)
			}
			// What Get prints, Set takes back unchanged.
			again := defaultConfig(t, ProfileLocal)
			if err := again.Set(tt.key, got); err != nil {
				t.Fatalf("Set(%q, Get's %s): %v", tt.key, got, err)
			}
			if !reflect.DeepEqual(again, c) {
				t.Fatalf("Set(Get()) differs:\n got %+v\nwant %+v", again, c)
			}
			// And the file round trip keeps it.
			parsed, err := ParseConfig(marshal(t, c))
			if err != nil {
				t.Fatalf("ParseConfig after Set: %v", err)
			}
			if !tt.check(parsed) {
				t.Fatalf("value lost in MarshalConfig/ParseConfig: %+v", parsed)
			}
		})
	}

	t.Run("every key can be read", func(t *testing.T) {
		c := defaultConfig(t, ProfilePublic)
		keys := ConfigKeys()
		if len(keys) < 20 {
			t.Fatalf("ConfigKeys() lists only %d keys: %v", len(keys), keys)
		}
		for _, k := range keys {
			if _, err := c.Get(k); err != nil {
				t.Errorf("Get(%q): %v", k, err)
			}
		}
	})
}

func TestConfigSetErrorLeavesConfigUnchanged(t *testing.T) {
	tests := []struct {
		key, value string
		want       string
	}{
		{"no.such.key", "1", "unknown config key"},
		{"dht", "1", "unknown config key"}, // a table, not a value
		{"dht.mode.deeper", "1", "unknown config key"},
		{"peer_id", testPeerID, "cannot be set"},
		{"log.level", "loud", "log.level"},                                  // fails validation
		{"dht.low_peers", "many", "dht.low_peers"},                          // wrong type
		{"discovery.mdns", "yes", "discovery.mdns"},                         // wrong type
		{"dht.bootstrap_interval", "5 minutes", "bad duration"},             // bad Duration
		{"dht.bootstrap_interval", "0s", "dht.bootstrap_interval"},          // fails validation
		{"swarm.max_memory", "lots", "bad size"},                            // bad ByteSize
		{"bootstrap", "/ip4/127.0.0.1/tcp/1", "bootstrap"},                  // list element fails validation
		{"addresses.swarm", "[]", "addresses.swarm"},                        // empty list fails validation
		{"swarm.allow_peers", `["` + testPeerID + `", "x"]`, "allow_peers"}, // one bad element
		{"swarm.connmgr_low", "1000", "swarm.connmgr_high"},                 // above the high mark
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			c := defaultConfig(t, ProfilePublic)
			c.Swarm.AllowPeers = []string{testPeerID}
			before := marshal(t, c)
			err := c.Set(tt.key, tt.value)
			wantErrContains(t, err, tt.want)
			if after := marshal(t, c); !bytes.Equal(before, after) {
				t.Fatalf("failed Set changed the config:\n%s", after)
			}
		})
	}
}

func TestConfigMarshalParseRoundTrip(t *testing.T) {
	custom := defaultConfig(t, ProfileLocal)
	for _, kv := range [][2]string{
		{"addresses.swarm", "['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1']"},
		{"addresses.api", "127.0.0.1:0"},
		{"bootstrap", "/ip4/127.0.0.1/tcp/4101/p2p/" + testPeerID},
		{"discovery.mdns", "true"},
		{"dht.mode", "client"},
		{"dht.protocol_prefix", "/weft-lab"},
		{"dht.bootstrap_interval", "20ms"},
		{"dht.low_peers", "1"},
		{"swarm.connmgr_low", "2"},
		{"swarm.connmgr_high", "3"},
		{"swarm.connmgr_grace", "1s"},
		{"swarm.max_memory", "123456789"},
		{"swarm.max_fds", "256"},
		{"swarm.allow_peers", testPeerID},
		{"swarm.enable_quic", "false"},
		{"swarm.dial_timeout", "250ms"},
		{"swarm.known_peers_limit", "8"},
		{"pubsub.max_message_size", "64KiB"},
		{"store.max_bytes", "10GiB"},
		{"log.level", "warn"},
		{"log.format", "json"},
	} {
		if err := custom.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set(%q, %q): %v", kv[0], kv[1], err)
		}
	}
	custom.PeerID = testPeerID

	tests := []struct {
		name string
		cfg  Config
	}{
		{"local", defaultConfig(t, ProfileLocal)},
		{"public", defaultConfig(t, ProfilePublic)},
		{"every field changed", custom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := marshal(t, tt.cfg)
			if !bytes.HasPrefix(data, []byte("# weft node configuration")) {
				t.Errorf("marshalled config lacks its header:\n%s", data)
			}
			got, err := ParseConfig(data)
			if err != nil {
				t.Fatalf("ParseConfig(MarshalConfig(c)): %v\n%s", err, data)
			}
			if !reflect.DeepEqual(got, tt.cfg) {
				t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", got, tt.cfg)
			}
			if again := marshal(t, got); !bytes.Equal(again, data) {
				t.Fatalf("second MarshalConfig differs:\n%s\n---\n%s", data, again)
			}
		})
	}

	t.Run("every key is documented", func(t *testing.T) {
		data := string(marshal(t, defaultConfig(t, ProfileLocal)))
		for _, k := range ConfigKeys() {
			name := k[strings.LastIndex(k, ".")+1:]
			i := strings.Index(data, "\n"+name+" = ")
			if i < 0 {
				t.Errorf("key %s not in the marshalled config", k)
				continue
			}
			prev := data[:i]
			prev = prev[strings.LastIndex(prev, "\n")+1:]
			if !strings.HasPrefix(prev, "# ") {
				t.Errorf("key %s has no comment line above it", k)
			}
		}
	})
}

func TestConfigPrivateDHTPrefix(t *testing.T) {
	a, b := newPSK(t), newPSK(t)
	pa, pb := p2p.PrivateDHTPrefix(LocalDHTPrefix, a), p2p.PrivateDHTPrefix(LocalDHTPrefix, b)
	if pa == pb {
		t.Fatalf("two swarm keys share the DHT prefix %s", pa)
	}
	if again := p2p.PrivateDHTPrefix(LocalDHTPrefix, a); again != pa {
		t.Fatalf("prefix not deterministic: %s then %s", pa, again)
	}
	for _, p := range []string{string(pa), string(pb)} {
		if !strings.HasPrefix(p, LocalDHTPrefix+"/private-") {
			t.Errorf("prefix %s does not extend %s/private-", p, LocalDHTPrefix)
		}
		if p == LocalDHTPrefix || p == PublicDHTPrefix {
			t.Errorf("private prefix %s equals a public one", p)
		}
	}
	if p2p.PrivateDHTPrefix(LocalDHTPrefix+"/", a) != pa {
		t.Error("a trailing slash on the base changes the prefix")
	}
	if p2p.PrivateDHTPrefix(PublicDHTPrefix, a) == pa {
		t.Error("different bases give the same private prefix")
	}
	// A one-bit change of the key changes the prefix.
	c := append(pnet.PSK(nil), a...)
	c[0] ^= 1
	if p2p.PrivateDHTPrefix(LocalDHTPrefix, c) == pa {
		t.Error("keys differing in one bit share a prefix")
	}
}

// TestInitRepoConfig checks the config InitRepo writes, for each profile,
// without starting a node (the public profile would dial the public
// bootstrap peers).
func TestInitRepoConfig(t *testing.T) {
	tests := []struct {
		profile   string
		prefix    string
		bootstrap []string
	}{
		{ProfileLocal, LocalDHTPrefix, []string{}},
		{ProfilePublic, PublicDHTPrefix, PublicBootstrapPeers},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			cfg, err := InitRepo(dir, InitOptions{Profile: tt.profile})
			if err != nil {
				t.Fatalf("InitRepo: %v", err)
			}
			onDisk, err := LoadConfigFile(filepath.Join(dir, ConfigFile))
			if err != nil {
				t.Fatalf("config InitRepo wrote does not load: %v", err)
			}
			if err := onDisk.Validate(); err != nil {
				t.Fatalf("config InitRepo wrote does not validate: %v", err)
			}
			if !reflect.DeepEqual(onDisk, cfg) {
				t.Fatalf("config on disk differs from the one returned:\n got %+v\nwant %+v", onDisk, cfg)
			}
			if onDisk.Profile != tt.profile || onDisk.DHT.ProtocolPrefix != tt.prefix || !slices.Equal(onDisk.Bootstrap, tt.bootstrap) {
				t.Fatalf("profile %s, prefix %s, bootstrap %q; want %s, %s, %q",
					onDisk.Profile, onDisk.DHT.ProtocolPrefix, onDisk.Bootstrap, tt.profile, tt.prefix, tt.bootstrap)
			}
			// peer_id is the identity's.
			skBytes, err := os.ReadFile(filepath.Join(dir, IdentityFile))
			if err != nil {
				t.Fatal(err)
			}
			sk, err := crypto.UnmarshalPrivateKey(skBytes)
			if err != nil {
				t.Fatal(err)
			}
			id, err := peer.IDFromPrivateKey(sk)
			if err != nil {
				t.Fatal(err)
			}
			if onDisk.PeerID != id.String() {
				t.Fatalf("peer_id %s, identity.key is %s", onDisk.PeerID, id)
			}
			for _, f := range []string{IdentityFile, TokenFile} {
				fi, err := os.Stat(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
				}
			}
			// A second init refuses, and leaves the repo as it was.
			before, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
			if _, err := InitRepo(dir, InitOptions{Profile: tt.profile}); !errors.Is(err, ErrRepoExists) {
				t.Fatalf("second InitRepo: %v, want ErrRepoExists", err)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, ConfigFile)); !bytes.Equal(before, after) {
				t.Fatal("second InitRepo changed the config")
			}
		})
	}

	t.Run("public with a swarm key", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "repo")
		_, err := InitRepo(dir, InitOptions{Profile: ProfilePublic, NewSwarmKey: true})
		wantErrContains(t, err, "public profile")
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("failed InitRepo left %s behind (%v)", dir, err)
		}
	})
	t.Run("bad option named", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "repo")
		_, err := InitRepo(dir, InitOptions{Profile: ProfilePublic, API: "localhost"})
		wantErrContains(t, err, "addresses.api")
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("failed InitRepo left %s behind (%v)", dir, err)
		}
	})
}

// listensOnEveryInterface reports whether a listen multiaddr names the
// unspecified address (every interface). The config is only read here;
// nothing listens.
func listensOnEveryInterface(t *testing.T, s string) bool {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		t.Fatalf("bad listen multiaddr %q: %v", s, err)
	}
	for _, code := range []int{ma.P_IP4, ma.P_IP6} {
		if v, err := a.ValueForProtocol(code); err == nil {
			return net.ParseIP(v).IsUnspecified()
		}
	}
	return false
}

// TestConnLimitExemptKey: swarm.conn_limit_exempt absent from a config file
// (one written before the key existed) means the default exemptions (the
// profile's defaults fill it in), while an empty list means none; the
// default config writes the default list.
func TestConnLimitExemptKey(t *testing.T) {
	c := defaultConfig(t, ProfileLocal)
	data, err := MarshalConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `conn_limit_exempt = ['127.0.0.1/32', '::1/128']`) &&
		!strings.Contains(string(data), `conn_limit_exempt = ["127.0.0.1/32", "::1/128"]`) {
		t.Fatalf("config template lacks the default exemptions:\n%s", data)
	}
	var without, empty []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "conn_limit_exempt") {
			empty = append(empty, "conn_limit_exempt = []")
			continue
		}
		without, empty = append(without, line), append(empty, line)
	}
	for _, tc := range []struct {
		name string
		doc  []string
		want []netip.Prefix
	}{
		{"absent", without, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}},
		{"empty", empty, []netip.Prefix{}},
		{"default", strings.Split(string(data), "\n"), []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}},
	} {
		parsed, err := ParseConfig([]byte(strings.Join(tc.doc, "\n")))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := connLimitExempt(parsed.Swarm.ConnLimitExempt)
		if err != nil || (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: exemptions %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
}
