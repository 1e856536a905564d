package feed

import (
	"fmt"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

// Catch-up wire format. A node that was offline, or has just followed a
// feed, asks peers on the feed's topic for their newest record with one
// request on a stream and reads one response. Both messages are protobuf
// (encoded by hand with protowire; field numbers are the contract):
//
//	message Request {
//	  bytes name = 1;              // the feed: binary multihash of its key,
//	                               // as in the routing key after "/ipns/"
//	  optional uint64 have_seq = 2; // sequence number the asker holds;
//	                               // absent when it holds no record
//	  string trace = 3;            // W3C traceparent of the asker's span,
//	                               // optional, printable ASCII, at most
//	                               // MaxTraceSize bytes (peers that predate
//	                               // it skip it as an unknown field)
//	}
//	message Response {
//	  Status status = 1;           // FOUND = 1, NOT_FOUND = 2, NOT_NEWER = 3
//	  bytes record = 2;            // the marshalled IPNS record, iff FOUND
//	}
//
// Stream framing (one length prefix or read-to-EOF per message) is the
// transport's; it must not read more than MaxRequestSize or MaxResponseSize.
// Decoders skip unknown fields (for later additions) and refuse truncated
// input, wrong wire types and repeated known fields.

const (
	// MaxRequestSize bounds an encoded Request.
	MaxRequestSize = 256
	// MaxTraceSize bounds a Request's Trace.
	MaxTraceSize = 128
	// MaxResponseSize bounds an encoded Response.
	MaxResponseSize = MaxRecordSize + 64
)

// Request asks a peer for its newest record of Name.
type Request struct {
	Name ipns.Name
	// Have is whether the asker holds a record; HaveSeq is its sequence.
	// A peer answers StatusNotNewer when it holds nothing above HaveSeq.
	Have    bool
	HaveSeq uint64
	// Trace is the W3C traceparent of the asker's span ("" if none); a
	// value that does not parse is ignored.
	Trace string
}

// Status is a Response's outcome.
type Status int32

const (
	// StatusFound: Response.Record holds the peer's newest record.
	StatusFound Status = 1
	// StatusNotFound: the peer holds no valid record of the name.
	StatusNotFound Status = 2
	// StatusNotNewer: the peer holds nothing newer than Request.HaveSeq.
	StatusNotNewer Status = 3
)

func (s Status) String() string {
	switch s {
	case StatusFound:
		return "found"
	case StatusNotFound:
		return "not found"
	case StatusNotNewer:
		return "not newer"
	}
	return fmt.Sprintf("status(%d)", int32(s))
}

func (s Status) valid() bool { return s >= StatusFound && s <= StatusNotNewer }

// Response answers a Request.
type Response struct {
	Status Status
	Record []byte
}

const (
	fieldName    protowire.Number = 1
	fieldHaveSeq protowire.Number = 2
	fieldTrace   protowire.Number = 3
	fieldStatus  protowire.Number = 1
	fieldRecord  protowire.Number = 2
)

// Marshal encodes r.
func (r Request) Marshal() []byte {
	id := []byte(r.Name.Peer())
	b := make([]byte, 0, len(id)+16+len(r.Trace))
	b = protowire.AppendTag(b, fieldName, protowire.BytesType)
	b = protowire.AppendBytes(b, id)
	if r.Have {
		b = protowire.AppendTag(b, fieldHaveSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, r.HaveSeq)
	}
	if r.Trace != "" {
		b = protowire.AppendTag(b, fieldTrace, protowire.BytesType)
		b = protowire.AppendString(b, r.Trace)
	}
	return b
}

// DecodeRequest decodes a Request read from the network. Errors wrap
// ErrBadRequest.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) > MaxRequestSize {
		return Request{}, fmt.Errorf("%w: request of %d bytes, limit %d", ErrBadRequest, len(b), MaxRequestSize)
	}
	var r Request
	var haveName, haveTrace bool
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case fieldTrace:
			if typ != protowire.BytesType {
				return errWireType(num, typ)
			}
			if haveTrace {
				return errRepeated(num)
			}
			if len(v) > MaxTraceSize {
				return fmt.Errorf("trace of %d bytes, limit %d", len(v), MaxTraceSize)
			}
			for _, c := range v {
				if c < 0x20 || c > 0x7e {
					return fmt.Errorf("trace is not printable ASCII")
				}
			}
			r.Trace, haveTrace = string(v), true
		case fieldName:
			if typ != protowire.BytesType {
				return errWireType(num, typ)
			}
			if haveName {
				return errRepeated(num)
			}
			id, err := peer.IDFromBytes(v)
			if err != nil {
				return fmt.Errorf("name: %w", err)
			}
			r.Name, haveName = ipns.NameFromPeer(id), true
		case fieldHaveSeq:
			if typ != protowire.VarintType {
				return errWireType(num, typ)
			}
			if r.Have {
				return errRepeated(num)
			}
			r.Have, r.HaveSeq = true, x
		}
		return nil
	})
	if err != nil {
		return Request{}, fmt.Errorf("%w: request: %w", ErrBadRequest, err)
	}
	if !haveName {
		return Request{}, fmt.Errorf("%w: request has no name", ErrBadRequest)
	}
	return r, nil
}

// Marshal encodes r.
func (r Response) Marshal() []byte {
	b := make([]byte, 0, len(r.Record)+8)
	b = protowire.AppendTag(b, fieldStatus, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.Status))
	if len(r.Record) > 0 {
		b = protowire.AppendTag(b, fieldRecord, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Record)
	}
	return b
}

// DecodeResponse decodes a Response read from the network: a known status,
// and a record (of at most MaxRecordSize bytes) exactly when the status is
// StatusFound. The record itself is not validated here. Errors wrap
// ErrBadRequest.
func DecodeResponse(b []byte) (Response, error) {
	if len(b) > MaxResponseSize {
		return Response{}, fmt.Errorf("%w: response of %d bytes, limit %d", ErrBadRequest, len(b), MaxResponseSize)
	}
	var r Response
	var haveStatus, haveRecord bool
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case fieldStatus:
			if typ != protowire.VarintType {
				return errWireType(num, typ)
			}
			if haveStatus {
				return errRepeated(num)
			}
			if s := Status(x); uint64(s) != x || !s.valid() {
				return fmt.Errorf("unknown status %d", x)
			}
			r.Status, haveStatus = Status(x), true
		case fieldRecord:
			if typ != protowire.BytesType {
				return errWireType(num, typ)
			}
			if haveRecord {
				return errRepeated(num)
			}
			if len(v) > MaxRecordSize {
				return fmt.Errorf("record of %d bytes, limit %d", len(v), MaxRecordSize)
			}
			r.Record, haveRecord = v, true
		}
		return nil
	})
	switch {
	case err != nil:
		return Response{}, fmt.Errorf("%w: response: %w", ErrBadRequest, err)
	case !haveStatus:
		return Response{}, fmt.Errorf("%w: response has no status", ErrBadRequest)
	case (r.Status == StatusFound) != (len(r.Record) > 0):
		return Response{}, fmt.Errorf("%w: response status %v with %d record bytes", ErrBadRequest, r.Status, len(r.Record))
	}
	return r, nil
}

// walkFields calls fn for each field of the protobuf message b: v holds a
// bytes field's contents, x a varint field's value. Fields of other wire
// types are passed with neither, so fn can refuse them for known numbers;
// unknown fields are otherwise skipped.
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func errWireType(num protowire.Number, typ protowire.Type) error {
	return fmt.Errorf("field %d has wire type %d", num, typ)
}

func errRepeated(num protowire.Number) error {
	return fmt.Errorf("field %d repeated", num)
}
