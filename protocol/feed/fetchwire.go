package feed

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ipfs/boxo/ipns"
	"google.golang.org/protobuf/encoding/protowire"
)

// IPNS over pubsub, as Kubo (Ipns.UsePubsub) and go-libp2p-pubsub-router
// speak it. A name's records are sent, bare, on the topic IPNSTopic; a node
// joining the topic asks its peers there for their newest record with the
// libp2p fetch protocol (FetchProtocolID): one length-prefixed FetchRequest
// on a stream, one length-prefixed FetchResponse back. Both are protobuf
// (encoded by hand with protowire; the field numbers are the contract):
//
//	message FetchRequest {
//	  string identifier = 1;   // the routing key: "/ipns/" + binary multihash
//	}
//	message FetchResponse {
//	  StatusCode status = 1;   // OK = 0, NOT_FOUND = 1, ERROR = 2
//	  bytes data = 2;          // the marshalled IPNS record, when OK
//	}
//
// The length prefix is an unsigned varint, as go-msgio's delimited protobuf
// framing writes it.

const (
	// FetchProtocolID is the libp2p fetch protocol.
	FetchProtocolID = "/libp2p/fetch/0.0.1"
	// IPNSTopicPrefix begins the pubsub topic of an IPNS name.
	IPNSTopicPrefix = "/record/"
	// MaxFetchRequestSize bounds an encoded FetchRequest: a routing key of
	// an identity or sha2-256 multihash is well under it.
	MaxFetchRequestSize = 512
	// MaxFetchResponseSize bounds an encoded FetchResponse.
	MaxFetchResponseSize = MaxRecordSize + 64
)

// IPNSTopic returns the pubsub topic Kubo uses for name: "/record/"
// followed by the unpadded base64url of the routing key.
func IPNSTopic(name ipns.Name) string {
	return IPNSTopicPrefix + base64.RawURLEncoding.EncodeToString(name.RoutingKey())
}

// NameFromIPNSTopic returns the name whose IPNS topic is topic. Only the
// exact form IPNSTopic produces is accepted.
func NameFromIPNSTopic(topic string) (ipns.Name, error) {
	s, ok := strings.CutPrefix(topic, IPNSTopicPrefix)
	if !ok {
		return ipns.Name{}, fmt.Errorf("feed: %q is not an IPNS topic", topic)
	}
	key, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return ipns.Name{}, fmt.Errorf("feed: %q is not an IPNS topic", topic)
	}
	n, err := ipns.NameFromRoutingKey(key)
	if err != nil || IPNSTopic(n) != topic {
		return ipns.Name{}, fmt.Errorf("feed: %q is not an IPNS topic", topic)
	}
	return n, nil
}

// FetchRequest asks a peer for the value it holds under Identifier.
type FetchRequest struct {
	Identifier string
}

// FetchStatus is a FetchResponse's outcome.
type FetchStatus int32

const (
	FetchOK       FetchStatus = 0
	FetchNotFound FetchStatus = 1
	FetchError    FetchStatus = 2
)

func (s FetchStatus) String() string {
	switch s {
	case FetchOK:
		return "ok"
	case FetchNotFound:
		return "not found"
	case FetchError:
		return "error"
	}
	return fmt.Sprintf("fetch status(%d)", int32(s))
}

// FetchResponse answers a FetchRequest.
type FetchResponse struct {
	Status FetchStatus
	Data   []byte
}

// Marshal encodes r.
func (r FetchRequest) Marshal() []byte {
	b := make([]byte, 0, len(r.Identifier)+4)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendString(b, r.Identifier)
}

// DecodeFetchRequest decodes a FetchRequest read from the network. Errors
// wrap ErrBadRequest.
func DecodeFetchRequest(b []byte) (FetchRequest, error) {
	if len(b) > MaxFetchRequestSize {
		return FetchRequest{}, fmt.Errorf("%w: fetch request of %d bytes, limit %d", ErrBadRequest, len(b), MaxFetchRequestSize)
	}
	var r FetchRequest
	var have bool
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 {
			return nil
		}
		if typ != protowire.BytesType {
			return errWireType(num, typ)
		}
		if have {
			return errRepeated(num)
		}
		r.Identifier, have = string(v), true
		return nil
	})
	if err != nil {
		return FetchRequest{}, fmt.Errorf("%w: fetch request: %w", ErrBadRequest, err)
	}
	return r, nil
}

// Marshal encodes r. Status OK is proto3's default and, as there, left out.
func (r FetchResponse) Marshal() []byte {
	b := make([]byte, 0, len(r.Data)+8)
	if r.Status != FetchOK {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.Status))
	}
	if len(r.Data) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Data)
	}
	return b
}

// DecodeFetchResponse decodes a FetchResponse read from the network: a
// known status and at most MaxRecordSize bytes of data. The data itself is
// not validated here. Errors wrap ErrBadRequest.
func DecodeFetchResponse(b []byte) (FetchResponse, error) {
	if len(b) > MaxFetchResponseSize {
		return FetchResponse{}, fmt.Errorf("%w: fetch response of %d bytes, limit %d", ErrBadRequest, len(b), MaxFetchResponseSize)
	}
	var r FetchResponse
	var haveStatus, haveData bool
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			if typ != protowire.VarintType {
				return errWireType(num, typ)
			}
			if haveStatus {
				return errRepeated(num)
			}
			if s := FetchStatus(x); uint64(s) != x || s < FetchOK || s > FetchError {
				return fmt.Errorf("unknown status %d", x)
			}
			r.Status, haveStatus = FetchStatus(x), true
		case 2:
			if typ != protowire.BytesType {
				return errWireType(num, typ)
			}
			if haveData {
				return errRepeated(num)
			}
			if len(v) > MaxRecordSize {
				return fmt.Errorf("data of %d bytes, limit %d", len(v), MaxRecordSize)
			}
			r.Data, haveData = v, true
		}
		return nil
	})
	if err != nil {
		return FetchResponse{}, fmt.Errorf("%w: fetch response: %w", ErrBadRequest, err)
	}
	return r, nil
}

// WriteDelimited writes msg with its unsigned varint length prefix.
func WriteDelimited(w io.Writer, msg []byte) error {
	b := binary.AppendUvarint(make([]byte, 0, len(msg)+binary.MaxVarintLen64), uint64(len(msg)))
	_, err := w.Write(append(b, msg...))
	return err
}

// ReadDelimited reads one message written by WriteDelimited, refusing one
// longer than max bytes before reading it. Errors for bad framing wrap
// ErrBadRequest.
func ReadDelimited(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: message length: %w", ErrBadRequest, err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: message of %d bytes, limit %d", ErrBadRequest, n, max)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: message body: %w", ErrBadRequest, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return msg, nil
}
