package feed

import (
	"errors"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	ipns_pb "github.com/ipfs/boxo/ipns/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestStaleReplaysSkipSignatureCheck: records whose sequence number is not
// above the one held are ignored on that number alone, so a flood of
// replayed old records (or of forgeries claiming an old number) costs no
// signature verification, while a newer record is still verified.
func TestStaleReplaysSkipSignatureCheck(t *testing.T) {
	m := newManager(t, Config{Clock: newClock()})
	sk := testKey(t, 1)
	name := testName(t, sk)
	follow(t, m, name, FollowOptions{})
	if d := m.HandleMessage(name, "peer", mustRecord(t, sk, 10, time.Hour, t0)); d.Verdict != Accept {
		t.Fatalf("seq 10: %v %v", d.Verdict, d.Err)
	}
	replays := map[string][]byte{
		"older record":             mustRecord(t, sk, 5, time.Hour, t0),
		"same seq, other validity": mustRecord(t, sk, 10, 2*time.Hour, t0),
		"forgery with an old seq": mutate(t, mustRecord(t, sk, 3, time.Hour, t0), func(pb *ipns_pb.IpnsRecord) {
			pb.SignatureV2[0] ^= 0x80
		}),
	}
	const copies = 1000
	before := m.Counters()
	for what, data := range replays {
		for range copies {
			d := m.HandleMessage(name, "attacker", data)
			if d.Verdict != Ignore || !errors.Is(d.Err, ErrStale) {
				t.Fatalf("%s: got %v, %v; want ignore, stale", what, d.Verdict, d.Err)
			}
		}
	}
	after := m.Counters()
	if n := after.SignatureChecks - before.SignatureChecks; n != 0 {
		t.Fatalf("%d signature checks for %d stale replays; want 0", n, copies*len(replays))
	}
	if n := after.StaleUnverified - before.StaleUnverified; n != copies*uint64(len(replays)) {
		t.Fatalf("StaleUnverified rose by %d; want %d", n, copies*len(replays))
	}
	if n := after.Stale - before.Stale; n != copies*uint64(len(replays)) {
		t.Fatalf("Stale rose by %d; want %d", n, copies*len(replays))
	}
	// A newer record still costs exactly one check and is applied.
	if d := m.HandleMessage(name, "peer", mustRecord(t, sk, 11, time.Hour, t0)); d.Verdict != Accept {
		t.Fatalf("seq 11: %v %v", d.Verdict, d.Err)
	}
	if n := m.Counters().SignatureChecks - after.SignatureChecks; n != 1 {
		t.Fatalf("%d signature checks for one new record", n)
	}
}

// TestSizeVerdicts: a record over this node's max_record_size but within
// the IPNS limit is ignored (a peer with a larger limit forwards it in good
// faith and must not lose score for it); one over the IPNS limit is
// rejected.
func TestSizeVerdicts(t *testing.T) {
	m := newManager(t, Config{Clock: newClock(), MaxRecordSize: 512})
	sk := testKey(t, 1)
	name := testName(t, sk)
	follow(t, m, name, FollowOptions{})
	pad := func(n int) []byte {
		return protowire.AppendBytes(protowire.AppendTag(mustRecord(t, sk, 1, time.Hour, t0), 99, protowire.BytesType), make([]byte, n))
	}
	for _, tc := range []struct {
		name string
		data []byte
		want Verdict
	}{
		{"over the local limit", pad(1024), Ignore},
		{"over the IPNS limit", pad(MaxRecordSize), Reject},
	} {
		d := m.HandleMessage(name, "peer", tc.data)
		if d.Verdict != tc.want || !errors.Is(d.Err, ErrTooLarge) {
			t.Errorf("%s: got %v, %v; want %v, too large", tc.name, d.Verdict, d.Err, tc.want)
		}
	}
	if c := m.Counters(); c.TooLarge != 2 || c.SignatureChecks != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// BenchmarkHandleStaleReplay measures what one replayed old record costs a
// node (decoded, never verified), beside BenchmarkHandleForged, a record
// that must be verified to be refused.
func BenchmarkHandleStaleReplay(b *testing.B) {
	m, name, sk := benchManager(b)
	old := mustRecord(b, sk, 5, time.Hour, t0)
	b.ReportAllocs()
	for b.Loop() {
		if d := m.HandleMessage(name, "attacker", old); d.Verdict != Ignore {
			b.Fatal(d.Err)
		}
	}
}

func BenchmarkHandleForged(b *testing.B) {
	m, name, _ := benchManager(b)
	forged := mustRecord(b, testKey(b, 2), 20, time.Hour, t0)
	b.ReportAllocs()
	for b.Loop() {
		if d := m.HandleMessage(name, "attacker", forged); d.Verdict != Reject {
			b.Fatal(d.Err)
		}
	}
}

func benchManager(b *testing.B) (*Manager, ipns.Name, crypto.PrivKey) {
	b.Helper()
	m := newManager(b, Config{Clock: newClock()})
	sk := testKey(b, 1)
	name := testName(b, sk)
	if err := m.Follow(b.Context(), name, FollowOptions{}); err != nil {
		b.Fatal(err)
	}
	if d := m.HandleMessage(name, "peer", mustRecord(b, sk, 10, time.Hour, t0)); d.Verdict != Accept {
		b.Fatal(d.Err)
	}
	return m, name, sk
}
