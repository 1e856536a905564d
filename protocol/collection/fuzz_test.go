package collection

import (
	"bytes"
	"testing"
	"time"
)

// Each fuzz target checks that a decoder never panics, and that whatever
// it accepts re-encodes to exactly the same bytes (one encoding per value,
// so CIDs and signatures are well defined).

func FuzzDecodeDelta(f *testing.F) {
	f.Add(sampleDelta(f).Encode())
	_, rs, gs := writerSet(f, 2, fastConfig())
	for _, b := range gs {
		f.Add(b.RawData())
	}
	for _, b := range mustAdd(f, rs[1], AddItem{Cid: itemCID(1), Label: "x", Replication: 2}) {
		f.Add(b.RawData())
	}
	f.Add(nonMinimal())
	f.Add(hugeCount(f))
	f.Add([]byte{KindDelta, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDelta(data)
		if err != nil {
			return
		}
		if got := d.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", got, data)
		}
		d.body = nil
		if got := d.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding from fields differs:\n%x\n%x", got, data)
		}
		_ = d.Verify()
	})
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add(sampleHeartbeat(f).Encode())
	long := sampleHeartbeat(f)
	long.Interval = 90 * time.Second
	if err := long.sign(mustKey(f, 3)); err != nil {
		f.Fatal(err)
	}
	f.Add(long.Encode())
	s := newSim(f, 2, 1, fastConfig(), 1)
	f.Add(s.beat(s.nodes[0]))
	f.Add([]byte{KindHeartbeat, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHeartbeat(data)
		if err != nil {
			return
		}
		if got := h.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs")
		}
		h.body = nil
		if got := h.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding from fields differs")
		}
		_ = h.Verify()
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	snap, chunk := sampleSnapshot(f)
	f.Add(snap.Encode())
	f.Add(chunk.Encode())
	f.Add([]byte{KindSnapshot, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := DecodeSnapshot(data); err == nil {
			if got := s.Encode(); !bytes.Equal(got, data) {
				t.Fatalf("snapshot re-encoding differs")
			}
			s.body = nil
			if got := s.Encode(); !bytes.Equal(got, data) {
				t.Fatalf("snapshot re-encoding from fields differs")
			}
			_ = s.Verify()
		}
		if c, err := DecodeChunk(data); err == nil {
			if got := c.Encode(); !bytes.Equal(got, data) {
				t.Fatalf("chunk re-encoding differs")
			}
		}
	})
}

func FuzzDecodeHeads(f *testing.F) {
	snap, _ := sampleSnapshot(f)
	h := &Heads{Collection: snap.Collection, Snapshots: snap.Chunks, Heads: snap.Heads, Recent: snap.Chunks}
	f.Add(h.Encode())
	q := &HeadsRequest{Collection: snap.Collection}
	f.Add(q.Encode())
	desc := testDescriptor(f, mustKey(f, 1), 3)
	f.Add(desc.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := DecodeHeads(data); err == nil && !bytes.Equal(h.Encode(), data) {
			t.Fatalf("heads re-encoding differs")
		}
		if q, err := DecodeHeadsRequest(data); err == nil && !bytes.Equal(q.Encode(), data) {
			t.Fatalf("heads request re-encoding differs")
		}
		if d, err := DecodeDescriptor(data); err == nil && !bytes.Equal(d.Encode(), data) {
			t.Fatalf("descriptor re-encoding differs")
		}
	})
}

// FuzzDecodeDirectAnswer: the framing of the direct heads exchange, and
// the heartbeat and heads inside it.
func FuzzDecodeDirectAnswer(f *testing.F) {
	_, rs, _ := writerSet(f, 2, fastConfig())
	mustAdd(f, rs[0], addItems(1, 2)...)
	if _, err := rs[0].Heartbeat(); err != nil {
		f.Fatal(err)
	}
	ans, err := rs[0].AnswerDirect(rs[1].Self(), rs[1].HeadsRequest())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ans)
	f.Add((&DirectAnswer{Heads: rs[1].Heads()}).Encode())
	f.Add([]byte{KindDirectAnswer, 1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeDirectAnswer(data)
		if err != nil {
			return
		}
		if got := a.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", got, data)
		}
		if len(a.Heartbeat) > 0 {
			if h, err := DecodeHeartbeat(a.Heartbeat); err == nil {
				_ = h.Verify()
			}
		}
		_, _ = DecodeHeads(a.Heads)
	})
}

// FuzzReplica feeds arbitrary blocks and messages to a replica that holds
// some state: it must neither panic nor change its state for anything not
// signed by a writer.
func FuzzReplica(f *testing.F) {
	d, rs, gs := writerSet(f, 2, fastConfig())
	var seeds [][]byte
	for _, b := range gs {
		seeds = append(seeds, b.RawData())
	}
	for _, b := range mustAdd(f, rs[0], addItems(1, 2)...) {
		seeds = append(seeds, b.RawData())
	}
	snap, err := rs[0].Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range snap {
		seeds = append(seeds, b.RawData())
	}
	seeds = append(seeds, rs[0].Heads(), rs[0].HeadsRequest())
	hb, _ := rs[1].Heartbeat()
	seeds = append(seeds, hb)
	if ans, err := rs[1].AnswerDirect(rs[0].Self(), rs[0].HeadsRequest()); err == nil {
		seeds = append(seeds, ans)
	}
	genuine := map[string]bool{}
	for _, s := range seeds {
		f.Add(s)
		genuine[string(s)] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, _ := testKey(t, 3)
		r := newReplica(t, d, k, fastConfig())
		for _, b := range gs {
			r.AddBlock(b)
		}
		before := fingerprint(r)
		r.AddBlock(newBlock(data))
		r.Authorize(rs[1].Self(), data)
		r.HandleMessage(rs[1].Self(), data)
		r.TakeDirectAnswer(rs[1].Self(), data)
		r.AnswerDirect(rs[1].Self(), data)
		r.Tick(t0.Add(1))
		_ = r.Plan()
		_ = r.Status()
		if _, err := r.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		// Only a signed delta or snapshot by the creator can change the
		// state; the fuzzer cannot forge those.
		if !genuine[string(data)] && fingerprint(r) != before {
			t.Fatalf("state changed:\n%s\n---\n%s", fingerprint(r), before)
		}
	})
}
