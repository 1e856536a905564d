package node

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNATConfigDefaults: both profiles ask AutoNAT and hole punch, and
// reserve on relays when private; only the public profile maps ports, answers
// AutoNAT v1 and relays for others, so nodes on loopback in tests are not
// affected. The relay limits are Kubo's.
func TestNATConfigDefaults(t *testing.T) {
	tests := []struct {
		profile                     string
		portMap, service, v1Service bool
	}{
		{ProfileLocal, false, false, false},
		{ProfilePublic, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			c := defaultConfig(t, tt.profile)
			if !c.NAT.AutoNAT || !c.NAT.HolePunching || !c.Relay.Client {
				t.Errorf("autonat %v, hole_punching %v, relay.client %v: want all on", c.NAT.AutoNAT, c.NAT.HolePunching, c.Relay.Client)
			}
			if c.NAT.PortMap != tt.portMap || c.Relay.Service != tt.service || c.NAT.AutoNATService != tt.v1Service {
				t.Errorf("port_map %v, relay.service %v, autonat_service %v: want %v, %v, %v",
					c.NAT.PortMap, c.Relay.Service, c.NAT.AutoNATService, tt.portMap, tt.service, tt.v1Service)
			}
			if c.NAT.Reachability != "" {
				t.Errorf("reachability = %q, want detected (\"\")", c.NAT.Reachability)
			}
			r := c.Relay
			if r.MaxReservations != 128 || r.MaxCircuits != 16 || r.MaxReservationsPerIP != 8 || r.MaxReservationsPerASN != 32 ||
				r.ReservationTTL.D() != time.Hour || r.BufferSize != 2048 || r.ConnectionDuration.D() != 2*time.Minute || r.ConnectionData != 128<<10 {
				t.Errorf("relay limits %+v, want Kubo's", r)
			}
			nc, err := natConfig(c)
			if err != nil {
				t.Fatal(err)
			}
			if nc.RelayResources.Limit.Data != 128<<10 || nc.RelayResources.MaxReservations != 128 || nc.PortMap != tt.portMap || nc.RelayService != tt.service {
				t.Errorf("p2p NAT config %+v does not carry the settings", nc)
			}
			if len(nc.Announce)+len(nc.AppendAnnounce)+len(nc.NoAnnounce) != 0 {
				t.Errorf("announce filters set by default: %+v", nc)
			}
		})
	}
}

// TestNATConfigValidate: each bad NAT, relay or announce value is one
// error naming its key.
func TestNATConfigValidate(t *testing.T) {
	tests := []struct {
		key    string
		mutate func(*Config)
	}{
		{"addresses.announce", func(c *Config) { c.Addresses.Announce = []string{"/ip4/1.2.3.4/tcp/1", "1.2.3.4:1"} }},
		{"addresses.append_announce", func(c *Config) { c.Addresses.AppendAnnounce = []string{"/ip4/nope"} }},
		{"addresses.no_announce", func(c *Config) { c.Addresses.NoAnnounce = []string{"10.0.0.0/8"} }},
		{"nat.reachability", func(c *Config) { c.NAT.Reachability = "Public" }},
		{"nat.service_global_limit", func(c *Config) { c.NAT.ServicePeerLimit = -1 }},
		{"relay.static", func(c *Config) { c.Relay.Static = []string{"/ip4/1.2.3.4/tcp/4001"} }}, // no /p2p/ID
		{"relay", func(c *Config) { c.Relay.ConnectionData = -1 }},
		{"relay", func(c *Config) { c.Relay.MaxReservations = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			c := defaultConfig(t, ProfilePublic)
			tt.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate accepted a bad %s", tt.key)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.key+": ") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want one error starting with %q", msg, tt.key+": ")
			}
		})
	}
	c := defaultConfig(t, ProfileLocal)
	if err := c.Set("relay.static", "/ip4/127.0.0.1/tcp/4001/p2p/"+testPeerID); err != nil {
		t.Fatalf("set relay.static: %v", err)
	}
	if err := c.Set("nat.reachability", "private"); err != nil {
		t.Fatalf("set nat.reachability: %v", err)
	}
	if err := c.Set("addresses.no_announce", `["/ip4/10.0.0.0/ipcidr/8", "/ip4/192.168.1.2/tcp/4001"]`); err != nil {
		t.Fatalf("set addresses.no_announce: %v", err)
	}
	nc, err := natConfig(c)
	if err != nil || len(nc.StaticRelays) != 1 || nc.StaticRelays[0].ID.String() != testPeerID || len(nc.NoAnnounce) != 2 || nc.Reachability != "private" {
		t.Fatalf("natConfig = %+v, %v", nc, err)
	}
}

// TestParseConfigFillsMissingKeys: a config written before a key existed
// gets that key's default for its profile, while what the file says wins,
// lists included (replaced, not merged).
func TestParseConfigFillsMissingKeys(t *testing.T) {
	full := string(marshal(t, defaultConfig(t, ProfilePublic)))
	// Drop the [nat] and [relay] tables, as an older weft wrote the file.
	var kept []string
	skip := false
	for _, l := range strings.Split(full, "\n") {
		if strings.HasPrefix(l, "[") {
			skip = l == "[nat]" || l == "[relay]"
		}
		if !skip {
			kept = append(kept, l)
		}
	}
	old := strings.Join(kept, "\n")
	if strings.Contains(old, "port_map") || strings.Contains(old, "max_circuits") {
		t.Fatal("the [nat] and [relay] tables were not removed")
	}
	boot := "/ip4/127.0.0.1/tcp/4001/p2p/" + testPeerID
	old = replaceKey(t, old, "bootstrap", "bootstrap = ['"+boot+"']")
	c, err := ParseConfig([]byte(old))
	if err != nil {
		t.Fatalf("ParseConfig: %v\n%s", err, old)
	}
	if !c.NAT.PortMap || !c.Relay.Service || c.Relay.MaxCircuits != 16 || !c.NAT.HolePunching {
		t.Errorf("missing keys did not take the public defaults: nat %+v relay %+v", c.NAT, c.Relay)
	}
	if !slices.Equal(c.Bootstrap, []string{boot}) {
		t.Errorf("bootstrap = %q, want only the file's %q", c.Bootstrap, boot)
	}
}

// replaceKey replaces the line that sets key (a top-level key) with line.
func replaceKey(t *testing.T, doc, key, line string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, key+" = ") {
			lines[i] = line
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("no %q line in\n%s", key, doc)
	return ""
}
