package p2p

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestObservedMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		seen map[string]string // observer -> observed ip:port
		want sweepMsg
	}{
		{"none", nil, sweepMsg{Kind: "hello", Mapping: MappingUnknown}},
		{"one observer", map[string]string{"1.1.1.1": "9.9.9.9:4001"}, sweepMsg{Kind: "hello", Mapping: MappingUnknown}},
		{"same port for all", map[string]string{"1.1.1.1": "9.9.9.9:4001", "2.2.2.2": "9.9.9.9:4001", "3.3.3.3": "9.9.9.9:4001"},
			sweepMsg{Kind: "hello", Mapping: MappingIndependent, IP: "9.9.9.9", Port: 4001}},
		{"a port per observer", map[string]string{"1.1.1.1": "9.9.9.9:31000", "2.2.2.2": "9.9.9.9:52000"},
			sweepMsg{Kind: "hello", Mapping: MappingDependent, IP: "9.9.9.9", Ports: []int{31000, 52000}}},
		{"one odd port among them", map[string]string{"1.1.1.1": "9.9.9.9:4001", "2.2.2.2": "9.9.9.9:4001", "3.3.3.3": "9.9.9.9:50123"},
			sweepMsg{Kind: "hello", Mapping: MappingIndependent, IP: "9.9.9.9", Port: 4001}},
		{"no clear picture", map[string]string{"1.1.1.1": "9.9.9.9:4001", "2.2.2.2": "9.9.9.9:4001", "3.3.3.3": "9.9.9.9:50123", "4.4.4.4": "9.9.9.9:50124"},
			sweepMsg{Kind: "hello", Mapping: MappingUnknown}},
		{"two outside addresses", map[string]string{"1.1.1.1": "9.9.9.9:4001", "2.2.2.2": "8.8.8.8:4001"}, sweepMsg{Kind: "hello", Mapping: MappingUnknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m observedMapping
			observers := make([]string, 0, len(tc.seen))
			for o := range tc.seen {
				observers = append(observers, o)
			}
			slices.Sort(observers)
			for _, o := range observers {
				m.add(o, netip.MustParseAddrPort(tc.seen[o]))
			}
			got := m.hello()
			slices.Sort(got.Ports)
			if got.Mapping != tc.want.Mapping || got.IP != tc.want.IP || got.Port != tc.want.Port || !slices.Equal(got.Ports, tc.want.Ports) {
				t.Errorf("hello %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestObservedMappingBounded(t *testing.T) {
	var m observedMapping
	for i := range 3 * maxObservers {
		m.add(netip.AddrFrom4([4]byte{1, 1, 1, byte(i)}).String(), netip.MustParseAddrPort("9.9.9.9:4001"))
	}
	if len(m.seen) != maxObservers || len(m.order) != maxObservers {
		t.Errorf("%d observers kept (%d in order), want %d", len(m.seen), len(m.order), maxObservers)
	}
	// A changed mapping is seen from the newest observations on.
	for i := range maxObservers {
		m.add(netip.AddrFrom4([4]byte{2, 2, 2, byte(i)}).String(), netip.MustParseAddrPort("9.9.9.9:5000"))
	}
	if h := m.hello(); h.Mapping != MappingIndependent || h.Port != 5000 {
		t.Errorf("after the mapping moved: %+v, want independent at 5000", h)
	}
}

func TestSweepOrder(t *testing.T) {
	all := sweepOrder(nil)
	if len(all) != 65536-sweepFirstPort || all[0] != sweepFirstPort || all[len(all)-1] != 65535 {
		t.Fatalf("no hints: %d ports from %d to %d", len(all), all[0], all[len(all)-1])
	}
	got := sweepOrder([]int{40000, 1030, 65535})
	if len(got) != len(all) {
		t.Fatalf("%d ports, want each of the %d once", len(got), len(all))
	}
	seen := map[uint16]bool{}
	for _, p := range got {
		if seen[p] {
			t.Fatalf("port %d twice", p)
		}
		seen[p] = true
	}
	if want := []uint16{40000, 1030, 65535, 40001, 39999, 1031, 1029}; !slices.Equal(got[:len(want)], want) {
		t.Errorf("first ports %v, want %v (the hints, then their neighbours nearest first)", got[:len(want)], want)
	}
}

func TestSweepRole(t *testing.T) {
	ind := sweepMsg{Mapping: MappingIndependent}
	dep := sweepMsg{Mapping: MappingDependent}
	unk := sweepMsg{Mapping: MappingUnknown}
	for _, tc := range []struct {
		mine, theirs sweepMsg
		want         string
	}{
		{ind, dep, "spray"}, {dep, ind, "probe"}, {ind, ind, ""}, {dep, dep, ""}, {unk, dep, ""}, {ind, unk, ""},
	} {
		if got := sweepRole(tc.mine, tc.theirs); got != tc.want {
			t.Errorf("%s with %s: role %q, want %q", tc.mine.Mapping, tc.theirs.Mapping, got, tc.want)
		}
	}
}

func TestDecodeSweepMsg(t *testing.T) {
	nonce := strings.Repeat("ab", 16)
	for _, tc := range []struct {
		line string
		bad  string // "" when valid
	}{
		{`{"kind":"hello","mapping":"independent","ip":"11.0.0.1","port":4001,"nonce":"` + nonce + `"}`, ""},
		{`{"kind":"hello","mapping":"dependent","ip":"11.0.0.1","ports":[31000],"nonce":"` + nonce + `"}`, ""},
		{`{"kind":"hello","mapping":"unknown","nonce":"` + nonce + `"}`, ""},
		{`{"kind":"found","port":31000}`, ""},
		{`{"kind":"stop","reason":"busy"}`, ""},
		{`{"kind":"hello","mapping":"independent","ip":"11.0.0.1","nonce":"` + nonce + `"}`, "port 0"},
		{`{"kind":"hello","mapping":"dependent","ip":"::1","nonce":"` + nonce + `"}`, "not an IPv4"},
		{`{"kind":"hello","mapping":"sideways","nonce":"` + nonce + `"}`, "unknown mapping"},
		{`{"kind":"hello","mapping":"unknown","nonce":"abc"}`, "nonce"},
		{`{"kind":"hello","mapping":"dependent","ip":"11.0.0.1","ports":[1,2,3,4,5,6,7,8,9],"nonce":"` + nonce + `"}`, "hints"},
		{`{"kind":"hello","mapping":"dependent","ip":"11.0.0.1","ports":[70000],"nonce":"` + nonce + `"}`, "hint 70000"},
		{`{"kind":"found","port":-1}`, "found: port"},
		{`{"kind":"dial"}`, "kind"},
		{`{"kind":`, "sweep message"},
		{`{"kind":"stop","reason":"` + strings.Repeat("x", maxSweepLine) + `"}`, "over"},
	} {
		_, err := decodeSweepMsg([]byte(tc.line))
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%.60s: %v", tc.line, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%.60s: error %v, want one saying %q", tc.line, err, tc.bad)
		}
	}
}

// FuzzDecodeSweepMsg: whatever a peer sends on the sweep stream decodes to
// a message that passes the checks again, or to an error; never a panic.
func FuzzDecodeSweepMsg(f *testing.F) {
	f.Add([]byte(`{"kind":"hello","mapping":"dependent","ip":"11.0.0.1","ports":[31000],"nonce":"` + strings.Repeat("ab", 16) + `"}`))
	f.Add([]byte(`{"kind":"found","port":31000}`))
	f.Add([]byte(`{"kind":"stop","reason":"busy"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decodeSweepMsg(line)
		if err != nil {
			return
		}
		if m.Kind == "found" && (m.Port < 1 || m.Port > 65535) {
			t.Fatalf("found port %d accepted", m.Port)
		}
		if m.Kind == "hello" && m.Mapping != MappingUnknown {
			if ip, err := netip.ParseAddr(m.IP); err != nil || !ip.Is4() {
				t.Fatalf("hello with ip %q accepted", m.IP)
			}
		}
		if len(m.Ports) > maxSweepHints {
			t.Fatalf("%d hints accepted", len(m.Ports))
		}
	})
}

func TestDecodeWitnessMsg(t *testing.T) {
	const pid = "12D3KooWGn6MhR88idbNEGt7UKBTFhSNT4yzjpak1RjXbcLkmkRX"
	for _, tc := range []struct {
		line string
		bad  string // "" when valid
	}{
		{`{"kind":"ask","addr":"/ip4/11.0.0.1/tcp/4001","avoid":["11.0.0.2","::1"]}`, ""},
		{`{"kind":"ask","addr":"/ip4/11.0.0.1/udp/4001/quic-v1"}`, ""},
		{`{"kind":"dial","peer":"` + pid + `","addr":"/ip4/11.0.0.1/tcp/4001"}`, ""},
		{`{"kind":"result","reached":true,"witness":"11.0.0.9"}`, ""},
		{`{"kind":"none","reason":"busy"}`, ""},
		{`{"kind":"ask","addr":"/ip4/11.0.0.1/tcp/4001/p2p/` + pid + `/p2p-circuit"}`, "not a direct IP address"},
		{`{"kind":"ask","addr":"/dns4/example.com/tcp/4001"}`, "not a direct IP address"},
		{`{"kind":"ask","addr":"nonsense"}`, "address"},
		{`{"kind":"ask","addr":"/ip4/11.0.0.1/tcp/4001","avoid":["eleven"]}`, "avoid"},
		{`{"kind":"ask","addr":"/ip4/11.0.0.1/tcp/4001","avoid":[` + strings.Repeat(`"1.1.1.1",`, maxWitnessAvoid) + `"1.1.1.1"]}`, "over"},
		{`{"kind":"dial","peer":"nobody","addr":"/ip4/11.0.0.1/tcp/4001"}`, "peer"},
		{`{"kind":"result","witness":"x"}`, "witness"},
		{`{"kind":"shout"}`, "kind"},
		{`{"kind":"none","reason":"` + strings.Repeat("x", maxWitnessLine) + `"}`, "over"},
	} {
		_, err := decodeWitnessMsg([]byte(tc.line))
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%.70s: %v", tc.line, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%.70s: error %v, want one saying %q", tc.line, err, tc.bad)
		}
	}
}

// FuzzDecodeWitnessMsg: whatever a peer sends on a witness stream decodes
// to a message whose address and peer pass the checks, or to an error.
func FuzzDecodeWitnessMsg(f *testing.F) {
	f.Add([]byte(`{"kind":"ask","addr":"/ip4/11.0.0.1/tcp/4001","avoid":["11.0.0.2"]}`))
	f.Add([]byte(`{"kind":"dial","peer":"12D3KooWGn6MhR88idbNEGt7UKBTFhSNT4yzjpak1RjXbcLkmkRX","addr":"/ip4/11.0.0.1/tcp/4001"}`))
	f.Add([]byte(`{"kind":"result","reached":true,"witness":"11.0.0.9"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decodeWitnessMsg(line)
		if err != nil {
			return
		}
		if m.Kind == "ask" || m.Kind == "dial" {
			a, err := ma.NewMultiaddr(m.Addr)
			if err != nil || isCircuit(a) {
				t.Fatalf("%s with address %q accepted", m.Kind, m.Addr)
			}
			if _, err := addrPort(a); err != nil {
				t.Fatalf("%s with address %q accepted: %v", m.Kind, m.Addr, err)
			}
		}
		if len(m.Avoid) > maxWitnessAvoid {
			t.Fatalf("%d addresses to avoid accepted", len(m.Avoid))
		}
	})
}

func TestMinuteLimit(t *testing.T) {
	l := minuteLimit{max: 3}
	for i := range 5 {
		if got, want := l.allow(), i < 3; got != want {
			t.Errorf("request %d allowed %v, want %v", i+1, got, want)
		}
	}
}

// TestSweepBudget: a peer is sprayed at most once per sweepPeerBackoff,
// and at most sweepsPerHour sprays are made an hour.
func TestSweepBudget(t *testing.T) {
	s := &sweeper{lastPeer: map[peer.ID]time.Time{}, slot: make(chan struct{}, 1)}
	if err := s.spendSpray("a"); err != nil {
		t.Fatalf("first spray to a: %v", err)
	}
	if err := s.spendSpray("a"); err == nil {
		t.Errorf("second spray to a within %v allowed", sweepPeerBackoff)
	}
	s.lastPeer["a"] = time.Now().Add(-sweepPeerBackoff - time.Second)
	if err := s.spendSpray("a"); err != nil {
		t.Errorf("spray to a after the backoff: %v", err)
	}
	for i := len(s.sprays); i < sweepsPerHour; i++ {
		if err := s.spendSpray(peer.ID(fmt.Sprint("p", i))); err != nil {
			t.Fatalf("spray %d of %d: %v", i+1, sweepsPerHour, err)
		}
	}
	if err := s.spendSpray("late"); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Errorf("spray over the hourly budget: %v, want refused", err)
	}
	// The slot: one sweep at a time; a wait ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	if !s.claim(ctx, 0) {
		t.Fatal("a free slot was not taken")
	}
	cancel()
	if s.claim(ctx, time.Hour) {
		t.Error("a busy slot was taken")
	}
	s.release()
	if !s.claim(context.Background(), 0) {
		t.Error("a released slot was not taken")
	}
}
