package p2p

import (
	"slices"
	"testing"
	"time"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

func addrs(t *testing.T, ss ...string) []ma.Multiaddr {
	t.Helper()
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatalf("bad test multiaddr %q: %v", s, err)
		}
		out = append(out, a)
	}
	return out
}

func strs(as []ma.Multiaddr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// TestAddrsFactory: Kubo's announce, append_announce and no_announce.
func TestAddrsFactory(t *testing.T) {
	const circuit = "/ip4/5.6.7.8/tcp/4001/p2p/12D3KooWGn6MhR88idbNEGt7UKBTFhSNT4yzjpak1RjXbcLkmkRX/p2p-circuit"
	host := []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.5/tcp/4001", "/ip4/1.2.3.4/tcp/4001", "/ip4/1.2.3.4/udp/4001/quic-v1", circuit}
	tests := []struct {
		name                            string
		announce, appendAnn, noAnnounce []string
		want                            []string
	}{
		{
			name:     "announce replaces direct addresses, keeps relay ones",
			announce: []string{"/dns4/node.example/tcp/4001", "/ip4/9.9.9.9/tcp/4001"},
			want:     []string{"/dns4/node.example/tcp/4001", "/ip4/9.9.9.9/tcp/4001", circuit},
		},
		{
			name:      "append_announce adds, without duplicates",
			appendAnn: []string{"/ip4/9.9.9.9/tcp/4001", "/ip4/1.2.3.4/tcp/4001"},
			want:      append(slices.Clone(host), "/ip4/9.9.9.9/tcp/4001"),
		},
		{
			name:       "no_announce drops ranges and exact addresses",
			noAnnounce: []string{"/ip4/127.0.0.0/ipcidr/8", "/ip4/192.168.0.0/ipcidr/16", "/ip4/1.2.3.4/udp/4001/quic-v1"},
			want:       []string{"/ip4/1.2.3.4/tcp/4001", circuit},
		},
		{
			name:       "no_announce also filters announced and appended addresses",
			announce:   []string{"/ip4/10.1.2.3/tcp/4001", "/ip4/9.9.9.9/tcp/4001"},
			appendAnn:  []string{"/ip4/10.9.9.9/tcp/4001"},
			noAnnounce: []string{"/ip4/10.0.0.0/ipcidr/8"},
			want:       []string{"/ip4/9.9.9.9/tcp/4001", circuit},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := makeAddrsFactory(addrs(t, tt.announce...), addrs(t, tt.appendAnn...), addrs(t, tt.noAnnounce...))
			if err != nil || f == nil {
				t.Fatalf("makeAddrsFactory: %v (factory %v)", err, f != nil)
			}
			in := addrs(t, host...)
			got := strs(f(in))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			if !slices.Equal(strs(in), host) {
				t.Errorf("the factory changed its input: %q", strs(in))
			}
		})
	}
	if f, err := makeAddrsFactory(nil, nil, nil); f != nil || err != nil {
		t.Errorf("no settings: factory %v, err %v; want none", f != nil, err)
	}
}

func TestTransportOf(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/1.2.3.4/tcp/4001":                  "tcp",
		"/ip4/1.2.3.4/udp/4001/quic-v1":          "quic-v1",
		"/ip6/::1/udp/4001/quic-v1/webtransport": "webtransport",
		"/dns4/example.com/tcp/443/tls/ws":       "tcp",
		"/ip4/1.2.3.4/udp/4001/webrtc-direct":    "webrtc-direct",
		"/ip4/1.2.3.4/udp/4001/quic-v1/p2p/12D3KooWGn6MhR88idbNEGt7UKBTFhSNT4yzjpak1RjXbcLkmkRX": "quic-v1",
	} {
		if got := TransportOf(addrs(t, in)[0]); got != want {
			t.Errorf("TransportOf(%s) = %q, want %q", in, got, want)
		}
	}
}

// TestRelayResourcesDefaults: zero fields take go-libp2p's defaults, set
// ones are kept.
func TestRelayResourcesDefaults(t *testing.T) {
	d := relayv2.DefaultResources()
	got := relayResources(relayv2.Resources{MaxCircuits: 3, Limit: &relayv2.RelayLimit{Data: 1 << 20}})
	if got.MaxCircuits != 3 || got.Limit.Data != 1<<20 {
		t.Errorf("set fields lost: %+v limit %+v", got, *got.Limit)
	}
	if got.MaxReservations != d.MaxReservations || got.ReservationTTL != d.ReservationTTL || got.Limit.Duration != 2*time.Minute || got.BufferSize != d.BufferSize {
		t.Errorf("zero fields not defaulted: %+v limit %+v", got, *got.Limit)
	}
	if z := relayResources(relayv2.Resources{}); z.Limit == nil || *z.Limit != *d.Limit {
		t.Errorf("no limit given: got %+v, want %+v", z.Limit, d.Limit)
	}
}
