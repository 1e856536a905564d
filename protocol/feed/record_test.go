package feed

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	ipns_pb "github.com/ipfs/boxo/ipns/pb"
	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestNewRecordRoundTrip(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	data := mustRecord(t, sk, 7, time.Hour, t0)
	rec, err := Validate(name, data, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 7 || !rec.CID().Equals(contentCID(7)) || !rec.EOL.Equal(t0.Add(time.Hour)) ||
		rec.TTL != RecordTTL || !rec.Name.Equal(name) || string(rec.Raw) != string(data) {
		t.Fatalf("record fields: %+v", rec)
	}
	// Any IPNS implementation can verify it: boxo's DHT validator does.
	if err := (ipns.Validator{}).Validate(RoutingKey(name), mustRecord(t, sk, 1, time.Hour, time.Now())); err != nil {
		t.Fatalf("boxo validator: %v", err)
	}
	// V1 and V2 signatures both present.
	var pb ipns_pb.IpnsRecord
	if err := proto.Unmarshal(data, &pb); err != nil {
		t.Fatal(err)
	}
	if len(pb.GetSignatureV1()) == 0 || len(pb.GetSignatureV2()) == 0 {
		t.Fatal("want V1 and V2 signatures")
	}
}

func TestNewRecordRefuses(t *testing.T) {
	sk := testKey(t, 1)
	ipnsPath, _ := path.NewPath("/ipns/" + testName(t, sk).String())
	for _, tc := range []struct {
		name     string
		value    path.Path
		seq      uint64
		validity time.Duration
	}{
		{"mutable value", ipnsPath, 1, time.Hour},
		{"zero validity", path.FromCid(contentCID(1)), 1, 0},
		{"seq out of range", path.FromCid(contentCID(1)), 1 << 63, time.Hour},
	} {
		if _, err := NewRecord(sk, tc.value, tc.seq, tc.validity, t0); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// mutate unmarshals data, applies fn and marshals the result.
func mutate(t *testing.T, data []byte, fn func(*ipns_pb.IpnsRecord)) []byte {
	t.Helper()
	var pb ipns_pb.IpnsRecord
	if err := proto.Unmarshal(data, &pb); err != nil {
		t.Fatal(err)
	}
	fn(&pb)
	out, err := proto.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValidate(t *testing.T) {
	skA, skB := testKey(t, 1), testKey(t, 2)
	nameA := testName(t, skA)
	good := mustRecord(t, skA, 5, time.Hour, t0)
	other := mustRecord(t, skA, 6, time.Hour, t0)

	rsa, _, err := crypto.GenerateKeyPair(crypto.RSA, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaName := testName(t, rsa)

	embedB, err := ipns.NewRecord(skB, path.FromCid(contentCID(1)), 1, t0.Add(time.Hour), time.Minute, ipns.WithPublicKey(true))
	if err != nil {
		t.Fatal(err)
	}
	embedBData, _ := ipns.MarshalRecord(embedB)

	ipnsValue, _ := path.NewPath("/ipns/" + nameA.String())
	mutable, err := ipns.NewRecord(skA, ipnsValue, 1, t0.Add(time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mutableData, _ := ipns.MarshalRecord(mutable)

	var oversize []byte
	oversize = protowire.AppendTag(append(oversize, good...), 99, protowire.BytesType)
	oversize = protowire.AppendBytes(oversize, make([]byte, MaxRecordSize))

	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

	for _, tc := range []struct {
		name string
		for_ ipns.Name
		data []byte
		now  time.Time
		want error
	}{
		{"valid", nameA, good, t0, nil},
		{"valid at its last instant", nameA, good, t0.Add(time.Hour), nil},
		{"valid by the clock given though the wall clock says expired", nameA,
			mustRecord(t, skA, 1, time.Hour, old), old.Add(time.Minute), nil},
		{"valid RSA with embedded key", rsaName, mustRecord(t, rsa, 1, time.Hour, t0), t0, nil},
		{"forged signature", nameA, mutate(t, good, func(pb *ipns_pb.IpnsRecord) { pb.SignatureV2[3] ^= 1 }), t0, ErrBadSignature},
		{"no V2 signature", nameA, mutate(t, good, func(pb *ipns_pb.IpnsRecord) { pb.SignatureV2 = nil }), t0, ErrBadSignature},
		{"signed by another key", nameA, mustRecord(t, skB, 5, time.Hour, t0), t0, ErrBadSignature},
		{"data swapped under signature", nameA, mutate(t, good, func(pb *ipns_pb.IpnsRecord) {
			var o ipns_pb.IpnsRecord
			_ = proto.Unmarshal(other, &o)
			pb.Data = o.Data
		}), t0, ErrBadSignature},
		{"V1 fields disagree with signed data", nameA, mutate(t, good, func(pb *ipns_pb.IpnsRecord) {
			pb.Value = []byte(path.FromCid(contentCID(99)).String())
		}), t0, ErrMalformed},
		{"embedded key of another name", nameA, embedBData, t0, ErrWrongName},
		{"expired", nameA, good, t0.Add(time.Hour + time.Nanosecond), ErrExpired},
		{"oversize", nameA, oversize, t0, ErrTooLarge},
		{"mutable value", nameA, mutableData, t0, ErrMalformed},
		{"garbage", nameA, []byte("this is not a record"), t0, ErrMalformed},
		{"empty", nameA, nil, t0, ErrMalformed},
		{"truncated", nameA, good[:len(good)/2], t0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Validate(tc.for_, tc.data, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && rec.IsZero() {
				t.Fatal("valid but zero record")
			}
		})
	}
}

func TestValidateSizeLimit(t *testing.T) {
	sk := testKey(t, 1)
	data := mustRecord(t, sk, 1, time.Hour, t0)
	if _, err := validate(testName(t, sk), data, t0, len(data)-1, true); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if _, err := validate(testName(t, sk), data, t0, len(data), true); err != nil {
		t.Fatal(err)
	}
}

func TestTopicAndNames(t *testing.T) {
	name := testName(t, testKey(t, 1))
	topic := Topic(name)
	if got, err := NameFromTopic(topic); err != nil || !got.Equal(name) {
		t.Fatalf("NameFromTopic(%q) = %v, %v", topic, got, err)
	}
	for _, bad := range []string{
		"/weft/feed/1/" + name.Peer().String(), // not the canonical form
		"/weft/feed/2/" + name.String(),
		"/weft/feed/1/",
		"/weft/feed/1/kgarbage",
	} {
		if _, err := NameFromTopic(bad); err == nil {
			t.Errorf("NameFromTopic(%q) accepted", bad)
		}
	}
	for _, s := range []string{name.String(), "/ipns/" + name.String(), name.Peer().String()} {
		if got, err := ParseName(s); err != nil || !got.Equal(name) {
			t.Errorf("ParseName(%q) = %v, %v", s, got, err)
		}
	}
	if RoutingKey(name) != "/ipns/"+string(name.Peer()) {
		t.Fatal("routing key")
	}
	// A random key's name round-trips too.
	sk, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	n := testName(t, sk)
	if got, _ := NameFromTopic(Topic(n)); !got.Equal(n) {
		t.Fatal("random name")
	}
}
