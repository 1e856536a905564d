package feed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestIPNSTopic: the topic is Kubo's, "/record/" + base64url without
// padding of "/ipns/" + the peer ID's bytes, and parses back.
func TestIPNSTopic(t *testing.T) {
	name := testName(t, testKey(t, 1))
	want := "/record/" + base64.RawURLEncoding.EncodeToString(append([]byte("/ipns/"), []byte(name.Peer())...))
	if got := IPNSTopic(name); got != want {
		t.Fatalf("IPNSTopic = %q, want %q", got, want)
	}
	if got, err := NameFromIPNSTopic(want); err != nil || !got.Equal(name) {
		t.Fatalf("NameFromIPNSTopic = %v, %v", got, err)
	}
	for _, bad := range []string{Topic(name), want + "=", "/record/", "/record/!!", want[:len(want)-2]} {
		if _, err := NameFromIPNSTopic(bad); err == nil {
			t.Errorf("NameFromIPNSTopic(%q) accepted", bad)
		}
	}
}

// TestFetchWire: the messages have the field numbers and framing of
// go-libp2p-pubsub-router's fetch protocol (built here by hand).
func TestFetchWire(t *testing.T) {
	key := RoutingKey(testName(t, testKey(t, 1)))
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, key)
	if got := (FetchRequest{Identifier: key}).Marshal(); !bytes.Equal(got, req) {
		t.Fatalf("request %x, want %x", got, req)
	}
	if got, err := DecodeFetchRequest(req); err != nil || got.Identifier != key {
		t.Fatalf("decode request: %+v, %v", got, err)
	}
	var nf []byte
	nf = protowire.AppendTag(nf, 1, protowire.VarintType)
	nf = protowire.AppendVarint(nf, 1)
	if got, err := DecodeFetchResponse(nf); err != nil || got.Status != FetchNotFound {
		t.Fatalf("decode not found: %+v, %v", got, err)
	}
	if len((FetchResponse{Status: FetchOK}).Marshal()) != 0 {
		t.Fatal("OK with no data is the empty message in proto3")
	}
	var buf bytes.Buffer
	if err := WriteDelimited(&buf, req); err != nil {
		t.Fatal(err)
	}
	if buf.Bytes()[0] != byte(len(req)) {
		t.Fatalf("length prefix %d, want %d", buf.Bytes()[0], len(req))
	}
	got, err := ReadDelimited(bufio.NewReader(&buf), MaxFetchRequestSize)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("ReadDelimited = %x, %v", got, err)
	}
	tests := []struct {
		name string
		in   []byte
		max  int
	}{
		{"empty", nil, 10},
		{"over limit", []byte{11, 0}, 10},
		{"truncated body", []byte{5, 1, 2}, 10},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), 10},
	}
	for _, tt := range tests {
		if _, err := ReadDelimited(bufio.NewReader(bytes.NewReader(tt.in)), tt.max); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: err %v, want ErrBadRequest", tt.name, err)
		}
	}
}

// TestHandleFetch: a fetch for a held name answers with the record, one
// for another name or garbage with NOT_FOUND, and a bad message errs.
func TestHandleFetch(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	m, err := New(t.Context(), Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rec, err := m.Publish(t.Context(), sk, path.FromCid(contentCID(1)))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(id string) FetchResponse {
		t.Helper()
		b, err := m.HandleFetch("", FetchRequest{Identifier: id}.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeFetchResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask(RoutingKey(name)); r.Status != FetchOK || !bytes.Equal(r.Data, rec.Raw) {
		t.Fatalf("held name: %v, %d bytes", r.Status, len(r.Data))
	}
	if r := ask(RoutingKey(testName(t, testKey(t, 2)))); r.Status != FetchNotFound {
		t.Fatalf("other name: %v", r.Status)
	}
	if r := ask("/ipns/garbage"); r.Status != FetchNotFound {
		t.Fatalf("garbage key: %v", r.Status)
	}
	if _, err := m.HandleFetch("", []byte{0x0a, 0x05}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("truncated request: %v", err)
	}
	clock.Advance(DefaultValidity + time.Minute)
	if r := ask(RoutingKey(name)); r.Status != FetchNotFound {
		t.Fatalf("expired record served: %v", r.Status)
	}
}

// TestRefreshAsksDHT: a peer that holds nothing newer keeps CatchUp from
// the DHT, but Refresh asks the DHT all the same and finds the record an
// owner put only there.
func TestRefreshAsksDHT(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	clock := newClock()
	router := newRouter()
	m, err := New(t.Context(), Config{Router: router, Clock: clock, ResolveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := router.PutValue(t.Context(), RoutingKey(name), mustRecord(t, sk, 1, time.Hour, t0)); err != nil {
		t.Fatal(err)
	}
	if err := m.Follow(t.Context(), name, FollowOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := m.Feed(name); fi.Held.Seq != 1 {
		t.Fatalf("after follow: seq %d", fi.Held.Seq)
	}
	if err := router.PutValue(t.Context(), RoutingKey(name), mustRecord(t, sk, 2, time.Hour, t0)); err != nil {
		t.Fatal(err)
	}
	if err := m.RefreshAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := m.Feed(name); fi.Held.Seq != 2 {
		t.Fatalf("after refresh: seq %d, want 2", fi.Held.Seq)
	}
}

// FuzzFetchWire feeds arbitrary bytes to the fetch protocol's framing and
// both decoders: nothing panics, and what decodes survives re-encoding.
func FuzzFetchWire(f *testing.F) {
	key := RoutingKey(testName(f, testKey(f, 1)))
	rec := mustRecord(f, testKey(f, 1), 1, time.Hour, t0)
	for _, msg := range [][]byte{
		FetchRequest{Identifier: key}.Marshal(),
		FetchResponse{Status: FetchOK, Data: rec}.Marshal(),
		FetchResponse{Status: FetchNotFound}.Marshal(),
		{0x08, 0x07},
		{0x0a, 0xff, 0x01},
	} {
		var buf bytes.Buffer
		_ = WriteDelimited(&buf, msg)
		f.Add(buf.Bytes())
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if msg, err := ReadDelimited(bufio.NewReader(bytes.NewReader(data)), MaxFetchResponseSize); err == nil {
			if len(msg) > MaxFetchResponseSize {
				t.Fatalf("message of %d bytes over the limit", len(msg))
			}
		} else if !errors.Is(err, ErrBadRequest) {
			t.Fatalf("framing error wraps no ErrBadRequest: %v", err)
		}
		if req, err := DecodeFetchRequest(data); err == nil {
			again, err := DecodeFetchRequest(req.Marshal())
			if err != nil || again != req {
				t.Fatalf("request %q does not survive re-encoding: %v", req.Identifier, err)
			}
		}
		if resp, err := DecodeFetchResponse(data); err == nil {
			again, err := DecodeFetchResponse(resp.Marshal())
			if err != nil || again.Status != resp.Status || !bytes.Equal(again.Data, resp.Data) {
				t.Fatalf("response does not survive re-encoding: %v", err)
			}
		}
	})
}

// kuboPeers is an Exchange and Fetcher with one peer, on a name's IPNS
// topic only, that answers fetch requests with a record, as Kubo does.
type kuboPeers struct {
	name    string // IPNS topic the peer is on
	record  []byte
	fetched int
}

func (k *kuboPeers) TopicPeers(topic string) []peer.ID {
	if topic == k.name {
		return []peer.ID{"kubo"}
	}
	return nil
}

func (k *kuboPeers) Request(context.Context, peer.ID, []byte) ([]byte, error) {
	return nil, errors.New("kubo does not speak weft's catch-up protocol")
}

func (k *kuboPeers) Fetch(_ context.Context, p peer.ID, req []byte) ([]byte, error) {
	k.fetched++
	r, err := DecodeFetchRequest(req)
	if err != nil || p != "kubo" {
		return nil, fmt.Errorf("bad fetch %v", err)
	}
	name, err := ipns.NameFromRoutingKey([]byte(r.Identifier))
	if err != nil || IPNSTopic(name) != k.name {
		return FetchResponse{Status: FetchNotFound}.Marshal(), nil
	}
	return FetchResponse{Status: FetchOK, Data: k.record}.Marshal(), nil
}

// TestCatchUpFetchesFromIPNSTopicPeers: following a name whose only peer
// is on its IPNS topic (a Kubo node) gets the record over the fetch
// protocol, validated before use; a forged one is refused.
func TestCatchUpFetchesFromIPNSTopicPeers(t *testing.T) {
	sk := testKey(t, 1)
	name := testName(t, sk)
	k := &kuboPeers{name: IPNSTopic(name), record: mustRecord(t, sk, 7, time.Hour, t0)}
	m, err := New(t.Context(), Config{Exchange: k, Fetcher: k, Clock: newClock(), ResolveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Follow(t.Context(), name, FollowOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := m.Feed(name); fi.Held.Seq != 7 || k.fetched != 1 {
		t.Fatalf("held seq %d after %d fetches, want 7 after 1", fi.Held.Seq, k.fetched)
	}
	// A record signed by another key for this name is refused.
	other := testName(t, testKey(t, 2))
	k2 := &kuboPeers{name: IPNSTopic(other), record: mustRecord(t, sk, 9, time.Hour, t0)}
	m2, err := New(t.Context(), Config{Exchange: k2, Fetcher: k2, Clock: newClock(), ResolveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.Follow(t.Context(), other, FollowOptions{}); err != nil {
		t.Fatal(err)
	}
	// (An Ed25519 name holds its key, so the other key's signature fails.)
	if fi, _ := m2.Feed(other); !fi.Held.IsZero() || m2.Counters().BadSignature+m2.Counters().WrongName != 1 {
		t.Fatalf("forged record: held seq %d, counters %+v", fi.Held.Seq, m2.Counters())
	}
}
