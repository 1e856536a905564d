package feed

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestRequestRoundTrip(t *testing.T) {
	name := testName(t, testKey(t, 1))
	for _, r := range []Request{
		{Name: name},
		{Name: name, Have: true},
		{Name: name, Have: true, HaveSeq: 1<<64 - 1},
		{Name: name, Have: true, HaveSeq: 1<<64 - 1, Trace: string(bytes.Repeat([]byte("t"), MaxTraceSize))},
	} {
		got, err := DecodeRequest(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if !got.Name.Equal(r.Name) || got.Have != r.Have || got.HaveSeq != r.HaveSeq || got.Trace != r.Trace {
			t.Fatalf("got %+v, want %+v", got, r)
		}
		if len(r.Marshal()) > MaxRequestSize {
			t.Fatal("request over MaxRequestSize")
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	rec := mustRecord(t, testKey(t, 1), 1, 3600e9, t0)
	for _, r := range []Response{
		{Status: StatusFound, Record: rec},
		{Status: StatusNotFound},
		{Status: StatusNotNewer},
	} {
		got, err := DecodeResponse(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != r.Status || !bytes.Equal(got.Record, r.Record) {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
	full := Response{Status: StatusFound, Record: make([]byte, MaxRecordSize)}.Marshal()
	if len(full) > MaxResponseSize {
		t.Fatalf("largest response %d over MaxResponseSize", len(full))
	}
}

func field(num protowire.Number, typ protowire.Type, v []byte) []byte {
	b := protowire.AppendTag(nil, num, typ)
	switch typ {
	case protowire.BytesType:
		return protowire.AppendBytes(b, v)
	case protowire.VarintType:
		return protowire.AppendVarint(b, uint64(len(v)))
	case protowire.Fixed32Type:
		return protowire.AppendFixed32(b, 7)
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestDecodeRequestRefuses(t *testing.T) {
	id := []byte(testName(t, testKey(t, 1)).Peer())
	good := field(1, protowire.BytesType, id)
	unknown := field(9, protowire.Fixed32Type, nil)
	if _, err := DecodeRequest(cat(good, unknown)); err != nil {
		t.Fatalf("unknown field refused: %v", err)
	}
	// Without a trace (an older asker) the request decodes as before.
	if r, err := DecodeRequest(good); err != nil || r.Trace != "" {
		t.Fatalf("request without trace: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"no name", field(2, protowire.VarintType, []byte{1})},
		{"name not a multihash", field(1, protowire.BytesType, []byte("nope"))},
		{"name wrong type", field(1, protowire.VarintType, id)},
		{"have_seq wrong type", cat(good, field(2, protowire.BytesType, []byte{1}))},
		{"name repeated", cat(good, good)},
		{"have_seq repeated", cat(good, field(2, protowire.VarintType, nil), field(2, protowire.VarintType, nil))},
		{"truncated", good[:len(good)-1]},
		{"field number zero", []byte{0x02, 0x00}},
		{"oversize", cat(good, field(9, protowire.BytesType, make([]byte, MaxRequestSize)))},
		{"trace wrong type", cat(good, field(3, protowire.VarintType, []byte{1}))},
		{"trace repeated", cat(good, field(3, protowire.BytesType, []byte("a")), field(3, protowire.BytesType, []byte("b")))},
		{"trace too long", cat(good, field(3, protowire.BytesType, bytes.Repeat([]byte("a"), MaxTraceSize+1)))},
		{"trace not ascii", cat(good, field(3, protowire.BytesType, []byte("a\x00")))},
	} {
		if _, err := DecodeRequest(tc.data); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestDecodeResponseRefuses(t *testing.T) {
	status := func(s uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), s)
	}
	rec := field(2, protowire.BytesType, []byte("record"))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"no status", rec},
		{"unknown status", status(0)},
		{"status overflows int32", status(1<<32 + 1)},
		{"found without record", status(1)},
		{"not found with record", cat(status(2), rec)},
		{"status repeated", cat(status(2), status(2))},
		{"record repeated", cat(status(1), rec, rec)},
		{"record too large", cat(status(1), field(2, protowire.BytesType, make([]byte, MaxRecordSize+1)))},
		{"truncated", cat(status(1), rec)[:5]},
	} {
		if _, err := DecodeResponse(tc.data); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}
