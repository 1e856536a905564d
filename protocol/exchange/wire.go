package exchange

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/encoding/protowire"
)

// ProtocolID is the libp2p protocol of the native exchange. A change to the
// wire format or to the walk order (see the package doc) is a new version.
const ProtocolID = "/weft/exchange/1.0.0"

const (
	// MaxBlockSize is the largest block the exchange carries: the Bitswap
	// limit, which UnixFS importers respect.
	MaxBlockSize = 2 << 20
	// MaxFrameSize bounds a frame body (type byte and payload).
	MaxFrameSize = 1 + MaxBlockSize
	// MaxRequestSize bounds an encoded Request.
	MaxRequestSize = 512 << 10
	// MaxWants bounds the wants in one Request.
	MaxWants = 8192
	// MaxTraceSize bounds a Request's Trace, in bytes (a W3C traceparent
	// is 55).
	MaxTraceSize = 128
	// MaxErrorMessage bounds an Error frame's message, in bytes.
	MaxErrorMessage = 256
	// maxCidSize bounds a CID on the wire (verifcid allows digests up to 128 bytes).
	maxCidSize = 256
)

// ScopeKind says how much of the DAG below a CID a want covers.
type ScopeKind uint8

const (
	// ScopeDAG is the CID's block and everything it links to, recursively.
	ScopeDAG ScopeKind = 1
	// ScopeBlock is the CID's block alone.
	ScopeBlock ScopeKind = 2
	// ScopeRange is the blocks of a UnixFS file that hold the bytes in
	// [Offset, Offset+Length), and the nodes above them.
	ScopeRange ScopeKind = 3
)

func (k ScopeKind) String() string {
	switch k {
	case ScopeDAG:
		return "dag"
	case ScopeBlock:
		return "block"
	case ScopeRange:
		return "range"
	}
	return fmt.Sprintf("scope(%d)", uint8(k))
}

// ToEnd as a Scope's Length means "to the end of the file".
const ToEnd = math.MaxUint64

// Scope is what a fetch or a want covers. Build one with DAG, Block or
// Range; the zero Scope is invalid.
type Scope struct {
	Kind ScopeKind
	// Offset and Length select the file bytes of a ScopeRange (Length ToEnd:
	// to the end of the file). Both are zero for other kinds.
	Offset, Length uint64
}

// DAG is the scope of a whole DAG.
func DAG() Scope { return Scope{Kind: ScopeDAG} }

// Block is the scope of one block.
func Block() Scope { return Scope{Kind: ScopeBlock} }

// Range is the scope of length bytes of a UnixFS file from offset (length
// < 0: to the end). Negative offsets count as 0.
func Range(offset, length int64) Scope {
	s := Scope{Kind: ScopeRange, Length: ToEnd}
	if offset > 0 {
		s.Offset = uint64(offset)
	}
	if length >= 0 {
		s.Length = uint64(length)
	}
	return s
}

// end is the exclusive end of a ScopeRange, saturating.
func (s Scope) end() uint64 {
	if s.Length > math.MaxUint64-s.Offset {
		return math.MaxUint64
	}
	return s.Offset + s.Length
}

func (s Scope) validate() error {
	switch s.Kind {
	case ScopeDAG, ScopeBlock:
		if s.Offset != 0 || s.Length != 0 {
			return fmt.Errorf("%w: offset and length are for range scopes only", ErrBadScope)
		}
	case ScopeRange:
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrBadScope, s.Kind)
	}
	return nil
}

// Want is one entry of a Request: a CID and what below it to send.
type Want struct {
	Cid   cid.Cid
	Scope Scope
}

// Request asks a provider for the blocks of its wants, walked in order.
type Request struct {
	Wants []Want
	// Limit, if not 0, lets the provider stop once it has sent at least
	// this many block bytes (it then sends End, and the requester asks for
	// the rest elsewhere). It is how a requester splits a DAG whose shape it
	// does not know yet among several providers.
	Limit uint64
	// Trace, if not empty, is the W3C traceparent of the requester's span
	// for this request (at most MaxTraceSize bytes), so the provider's span
	// joins the requester's trace. Providers that predate it skip it as an
	// unknown field; a requester that sends none is served as before. A
	// value that does not parse as a traceparent is ignored.
	Trace string
}

// Request and Want field numbers.
const (
	fieldWants  = 1
	fieldLimit  = 2
	fieldTrace  = 3
	fieldCid    = 1
	fieldScope  = 2
	fieldOffset = 3
	fieldLength = 4
)

// AppendRequest appends r's encoding, without the length prefix, to b.
func AppendRequest(b []byte, r Request) []byte {
	for _, w := range r.Wants {
		b = protowire.AppendTag(b, fieldWants, protowire.BytesType)
		b = protowire.AppendBytes(b, appendWant(nil, w))
	}
	if r.Limit != 0 {
		b = protowire.AppendTag(b, fieldLimit, protowire.VarintType)
		b = protowire.AppendVarint(b, r.Limit)
	}
	if r.Trace != "" {
		b = protowire.AppendTag(b, fieldTrace, protowire.BytesType)
		b = protowire.AppendString(b, r.Trace)
	}
	return b
}

func appendWant(b []byte, w Want) []byte {
	b = protowire.AppendTag(b, fieldCid, protowire.BytesType)
	b = protowire.AppendBytes(b, w.Cid.Bytes())
	b = protowire.AppendTag(b, fieldScope, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(w.Scope.Kind))
	if w.Scope.Kind == ScopeRange {
		if w.Scope.Offset != 0 {
			b = protowire.AppendTag(b, fieldOffset, protowire.VarintType)
			b = protowire.AppendVarint(b, w.Scope.Offset)
		}
		if w.Scope.Length != ToEnd {
			b = protowire.AppendTag(b, fieldLength, protowire.VarintType)
			b = protowire.AppendVarint(b, w.Scope.Length)
		}
	}
	return b
}

// DecodeRequest decodes a Request encoded by AppendRequest. It skips
// unknown fields and refuses truncated input, wrong wire types, repeated
// scalar fields, more than MaxWants wants, none at all, input above
// MaxRequestSize, a Trace above MaxTraceSize or not printable ASCII, and
// wants with an invalid CID or scope. Every error wraps ErrMalformed.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequestSize {
		return r, fmt.Errorf("%w: request of %d bytes exceeds %d", ErrMalformed, len(b), MaxRequestSize)
	}
	var seenLimit, seenTrace bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Request{}, fmt.Errorf("%w: request tag: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fieldWants && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Request{}, fmt.Errorf("%w: want: %v", ErrMalformed, protowire.ParseError(n))
			}
			b = b[n:]
			if len(r.Wants) == MaxWants {
				return Request{}, fmt.Errorf("%w: more than %d wants", ErrMalformed, MaxWants)
			}
			w, err := decodeWant(v)
			if err != nil {
				return Request{}, err
			}
			r.Wants = append(r.Wants, w)
		case num == fieldLimit && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Request{}, fmt.Errorf("%w: limit: %v", ErrMalformed, protowire.ParseError(n))
			}
			if seenLimit {
				return Request{}, fmt.Errorf("%w: repeated limit", ErrMalformed)
			}
			seenLimit = true
			b = b[n:]
			r.Limit = v
		case num == fieldTrace && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Request{}, fmt.Errorf("%w: trace: %v", ErrMalformed, protowire.ParseError(n))
			}
			if seenTrace {
				return Request{}, fmt.Errorf("%w: repeated trace", ErrMalformed)
			}
			seenTrace = true
			b = b[n:]
			if len(v) > MaxTraceSize {
				return Request{}, fmt.Errorf("%w: trace of %d bytes exceeds %d", ErrMalformed, len(v), MaxTraceSize)
			}
			for _, c := range v {
				if c < 0x20 || c > 0x7e {
					return Request{}, fmt.Errorf("%w: trace is not printable ASCII", ErrMalformed)
				}
			}
			r.Trace = string(v)
		case num == fieldWants || num == fieldLimit || num == fieldTrace:
			return Request{}, fmt.Errorf("%w: field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Request{}, fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if len(r.Wants) == 0 {
		return Request{}, fmt.Errorf("%w: request has no wants", ErrMalformed)
	}
	return r, nil
}

func decodeWant(b []byte) (Want, error) {
	var w Want
	var seen [fieldLength + 1]bool
	w.Scope.Length = ToEnd
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Want{}, fmt.Errorf("%w: want tag: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		known := num >= fieldCid && num <= fieldLength
		if known {
			if seen[num] {
				return Want{}, fmt.Errorf("%w: repeated want field %d", ErrMalformed, num)
			}
			seen[num] = true
		}
		switch {
		case num == fieldCid && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Want{}, fmt.Errorf("%w: want cid: %v", ErrMalformed, protowire.ParseError(n))
			}
			b = b[n:]
			if len(v) > maxCidSize {
				return Want{}, fmt.Errorf("%w: cid of %d bytes", ErrMalformed, len(v))
			}
			c, err := cid.Cast(v)
			if err != nil {
				return Want{}, fmt.Errorf("%w: want cid: %v", ErrMalformed, err)
			}
			w.Cid = c
		case known && num != fieldCid && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Want{}, fmt.Errorf("%w: want field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldScope:
				if v > math.MaxUint8 {
					return Want{}, fmt.Errorf("%w: scope %d", ErrMalformed, v)
				}
				w.Scope.Kind = ScopeKind(v)
			case fieldOffset:
				w.Scope.Offset = v
			case fieldLength:
				w.Scope.Length = v
			}
		case known:
			return Want{}, fmt.Errorf("%w: want field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Want{}, fmt.Errorf("%w: want field %d: %v", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !w.Cid.Defined() {
		return Want{}, fmt.Errorf("%w: want without cid", ErrMalformed)
	}
	if w.Scope.Kind != ScopeRange {
		if seen[fieldOffset] || seen[fieldLength] {
			return Want{}, fmt.Errorf("%w: offset or length on a %v want", ErrMalformed, w.Scope.Kind)
		}
		w.Scope.Length = 0
	}
	if err := w.Scope.validate(); err != nil {
		return Want{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return w, nil
}

// FrameType is the first byte of a frame.
type FrameType byte

const (
	// FrameBlock carries the next block's bytes.
	FrameBlock FrameType = 0x01
	// FrameMissing carries the next block's CID, which the provider lacks.
	FrameMissing FrameType = 0x02
	// FrameEnd ends the answer to one request.
	FrameEnd FrameType = 0x03
	// FrameError carries an ErrorCode and a message; the stream ends.
	FrameError FrameType = 0x04
)

func (t FrameType) String() string {
	switch t {
	case FrameBlock:
		return "block"
	case FrameMissing:
		return "missing"
	case FrameEnd:
		return "end"
	case FrameError:
		return "error"
	}
	return fmt.Sprintf("frame(%#x)", byte(t))
}

// ErrorCode says why a provider refused a request.
type ErrorCode uint64

const (
	// CodeBusy: the provider serves too many streams; try later or elsewhere.
	CodeBusy ErrorCode = 1
	// CodeBadRequest: the request did not decode.
	CodeBadRequest ErrorCode = 2
	// CodeInternal: the provider failed (its store, for instance).
	CodeInternal ErrorCode = 3
)

// Frame is one decoded provider frame. Data aliases the decoder's input.
type Frame struct {
	Type FrameType
	// Data is a FrameBlock's block.
	Data []byte
	// Cid is a FrameMissing's CID.
	Cid cid.Cid
	// Code and Message are a FrameError's.
	Code    ErrorCode
	Message string
}

// DecodeFrame decodes a frame body (without its length prefix). Errors wrap
// ErrMalformed.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) == 0 {
		return Frame{}, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	if len(b) > MaxFrameSize {
		return Frame{}, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrMalformed, len(b), MaxFrameSize)
	}
	f := Frame{Type: FrameType(b[0])}
	p := b[1:]
	switch f.Type {
	case FrameBlock:
		f.Data = p
	case FrameMissing:
		if len(p) > maxCidSize {
			return Frame{}, fmt.Errorf("%w: cid of %d bytes", ErrMalformed, len(p))
		}
		c, err := cid.Cast(p)
		if err != nil {
			return Frame{}, fmt.Errorf("%w: missing frame: %v", ErrMalformed, err)
		}
		f.Cid = c
	case FrameEnd:
		if len(p) != 0 {
			return Frame{}, fmt.Errorf("%w: %d bytes after end", ErrMalformed, len(p))
		}
	case FrameError:
		code, n := binary.Uvarint(p)
		if n <= 0 {
			return Frame{}, fmt.Errorf("%w: error code", ErrMalformed)
		}
		msg := p[n:]
		if len(msg) > MaxErrorMessage || !utf8.Valid(msg) {
			return Frame{}, fmt.Errorf("%w: error message", ErrMalformed)
		}
		f.Code, f.Message = ErrorCode(code), string(msg)
	default:
		return Frame{}, fmt.Errorf("%w: unknown frame type %#x", ErrMalformed, b[0])
	}
	return f, nil
}

// AppendFrame appends f with its length prefix to b. Oversized payloads
// are the caller's mistake and are not checked here.
func AppendFrame(b []byte, f Frame) []byte {
	switch f.Type {
	case FrameBlock:
		b = binary.AppendUvarint(b, uint64(1+len(f.Data)))
		b = append(b, byte(FrameBlock))
		return append(b, f.Data...)
	case FrameMissing:
		cb := f.Cid.Bytes()
		b = binary.AppendUvarint(b, uint64(1+len(cb)))
		b = append(b, byte(FrameMissing))
		return append(b, cb...)
	case FrameError:
		msg := f.Message
		if len(msg) > MaxErrorMessage {
			msg = msg[:MaxErrorMessage]
		}
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
		body := binary.AppendUvarint([]byte{byte(FrameError)}, uint64(f.Code))
		body = append(body, msg...)
		b = binary.AppendUvarint(b, uint64(len(body)))
		return append(b, body...)
	default:
		b = binary.AppendUvarint(b, 1)
		return append(b, byte(f.Type))
	}
}

// readLength reads a uvarint length prefix and checks it against max.
func readLength(r io.ByteReader, max int) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, err // clean end between messages
		}
		return 0, fmt.Errorf("%w: length prefix: %v", ErrMalformed, err)
	}
	if n == 0 || n > uint64(max) {
		return 0, fmt.Errorf("%w: length %d outside 1..%d", ErrMalformed, n, max)
	}
	return int(n), nil
}

// ReadRequest reads one length-prefixed Request. At a clean end of stream
// (no byte of a next request) it returns io.EOF.
func ReadRequest(r *bufio.Reader) (Request, error) {
	n, err := readLength(r, MaxRequestSize)
	if err != nil {
		return Request{}, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return Request{}, fmt.Errorf("read request: %w", noEOF(err))
	}
	return DecodeRequest(buf)
}

// WriteRequest writes r with its length prefix in one Write.
func WriteRequest(w io.Writer, r Request) error {
	body := AppendRequest(nil, r)
	if len(body) > MaxRequestSize {
		return fmt.Errorf("request of %d bytes exceeds %d", len(body), MaxRequestSize)
	}
	_, err := w.Write(append(binary.AppendUvarint(make([]byte, 0, len(body)+4), uint64(len(body))), body...))
	return err
}

// ReadFrame reads one length-prefixed frame. A FrameBlock's Data is a new
// slice of exactly the block's size, owned by the caller. Before it
// allocates the block, ReadFrame calls reserve (if not nil) with the
// block's size, and returns reserve's error if it fails; a provider cannot
// make ReadFrame allocate more than MaxFrameSize.
func ReadFrame(r *bufio.Reader, reserve func(n int) error) (Frame, error) {
	return ReadFrameBuf(r, func(n int) ([]byte, error) {
		if reserve != nil {
			if err := reserve(n); err != nil {
				return nil, err
			}
		}
		return make([]byte, n), nil
	})
}

// ReadFrameBuf is ReadFrame with the buffer of a FrameBlock's Data from
// alloc, which is called with the block's size (at most MaxFrameSize) and
// returns a slice of that length or an error, which ReadFrameBuf returns.
func ReadFrameBuf(r *bufio.Reader, alloc func(n int) ([]byte, error)) (Frame, error) {
	n, err := readLength(r, MaxFrameSize)
	if err != nil {
		return Frame{}, noEOF(err)
	}
	t, err := r.ReadByte()
	if err != nil {
		return Frame{}, fmt.Errorf("read frame: %w", noEOF(err))
	}
	if FrameType(t) == FrameBlock {
		data, err := alloc(n - 1)
		if err != nil {
			return Frame{}, err
		}
		if len(data) != n-1 {
			return Frame{}, fmt.Errorf("read block: buffer of %d bytes for %d", len(data), n-1)
		}
		if _, err := io.ReadFull(r, data); err != nil {
			return Frame{}, fmt.Errorf("read block: %w", noEOF(err))
		}
		return Frame{Type: FrameBlock, Data: data}, nil
	}
	if n-1 > maxCidSize+16 { // every other frame is small
		return Frame{}, fmt.Errorf("%w: %v frame of %d bytes", ErrMalformed, FrameType(t), n)
	}
	var small [maxCidSize + 17]byte
	small[0] = t
	if _, err := io.ReadFull(r, small[1:n]); err != nil {
		return Frame{}, fmt.Errorf("read frame: %w", noEOF(err))
	}
	f, err := DecodeFrame(small[:n])
	if err != nil {
		return Frame{}, err
	}
	return f, nil
}

// noEOF turns an end of stream inside a message into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
