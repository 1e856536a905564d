package feed

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// The fuzz targets cover every decoder that reads bytes from the network:
// records (gossip, catch-up responses, the DHT) and both catch-up messages.
// `go test` runs their seeds; `go test -fuzz=FuzzX` explores.

// FuzzValidateRecord feeds arbitrary bytes to Validate: it must not panic,
// and what it accepts must be consistent.
func FuzzValidateRecord(f *testing.F) {
	sk := testKey(f, 1)
	name := testName(f, sk)
	good := mustRecord(f, sk, 3, time.Hour, t0)
	f.Add(good)
	f.Add(mustRecord(f, sk, 1<<40, time.Hour, t0))
	f.Add(mustRecord(f, testKey(f, 2), 3, time.Hour, t0))
	f.Add(mustRecord(f, sk, 1, time.Minute, t0.Add(-time.Hour)))
	f.Add(good[:len(good)-10])
	f.Add([]byte{})
	f.Add([]byte("\x0a\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := Validate(name, data, t0)
		if err != nil {
			for _, want := range []error{ErrBadSignature, ErrExpired, ErrTooLarge, ErrWrongName, ErrMalformed} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if !bytes.Equal(rec.Raw, data) || !rec.Name.Equal(name) || !rec.CID().Defined() || rec.EOL.Before(t0) {
			t.Fatalf("inconsistent record %+v", rec)
		}
		again, err := Validate(name, data, t0)
		if err != nil || again.Seq != rec.Seq || !again.CID().Equals(rec.CID()) {
			t.Fatalf("not deterministic: %v", err)
		}
	})
}

// FuzzDecodeRequest feeds arbitrary bytes to DecodeRequest: it must not
// panic, and a decoded request must survive re-encoding.
func FuzzDecodeRequest(f *testing.F) {
	name := testName(f, testKey(f, 1))
	f.Add(Request{Name: name}.Marshal())
	f.Add(Request{Name: name, Have: true, HaveSeq: 42}.Marshal())
	f.Add(Request{Name: name, Trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}.Marshal())
	f.Add(append(Request{Name: name, Trace: "x"}.Marshal(), 0x1a, 0x01, 0x07))
	f.Add(append(Request{Name: name}.Marshal(), 0x4d, 1, 2, 3, 4))
	f.Add([]byte{0x0a, 0x02, 0x00, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error does not wrap ErrBadRequest: %v", err)
			}
			return
		}
		again, err := DecodeRequest(r.Marshal())
		if err != nil || !again.Name.Equal(r.Name) || again.Have != r.Have || again.HaveSeq != r.HaveSeq || again.Trace != r.Trace || len(r.Trace) > MaxTraceSize {
			t.Fatalf("re-encoding changed %+v to %+v (%v)", r, again, err)
		}
		// Answering it must not panic either.
		m := fuzzManager(t)
		if _, err := m.HandleRequest("", data); err != nil {
			t.Fatalf("HandleRequest refused a request DecodeRequest accepted: %v", err)
		}
	})
}

// FuzzDecodeResponse feeds arbitrary bytes to DecodeResponse.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(Response{Status: StatusFound, Record: mustRecord(f, testKey(f, 1), 1, time.Hour, t0)}.Marshal())
	f.Add(Response{Status: StatusNotFound}.Marshal())
	f.Add(Response{Status: StatusNotNewer}.Marshal())
	f.Add([]byte{0x08, 0x01, 0x12, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeResponse(data)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error does not wrap ErrBadRequest: %v", err)
			}
			return
		}
		again, err := DecodeResponse(r.Marshal())
		if err != nil || again.Status != r.Status || !bytes.Equal(again.Record, r.Record) {
			t.Fatalf("re-encoding changed %+v to %+v (%v)", r, again, err)
		}
	})
}

func fuzzManager(t *testing.T) *Manager {
	m, err := New(t.Context(), Config{Clock: newClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
