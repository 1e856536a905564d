package feed

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// TopicPrefix begins every feed's gossipsub topic; the version is that
	// of the message format (a bare marshalled IPNS record).
	TopicPrefix = "/weft/feed/1/"
	// MaxRecordSize is the largest record accepted by default, and the
	// largest limit Config.MaxRecordSize may set: the IPNS record size limit.
	MaxRecordSize = ipns.MaxRecordSize
	// DefaultValidity is how long a published record stays valid by default
	// (the IPNS default, matching the DHT's record expiry).
	DefaultValidity = ipns.DefaultRecordLifetime
	// RecordTTL is the cache hint written into every record NewRecord makes.
	RecordTTL = ipns.DefaultRecordTTL
)

// Record is a validated feed record.
type Record struct {
	// Name is the feed the record was validated for.
	Name ipns.Name
	// Seq is the record's sequence number.
	Seq uint64
	// Value is the content the name points at.
	Value path.ImmutablePath
	// EOL is the end of the record's validity.
	EOL time.Time
	// TTL is the record's cache hint.
	TTL time.Duration
	// Raw is the marshalled record as signed and sent.
	Raw []byte
}

// CID returns the root CID of the record's value: what a follower pins.
func (r Record) CID() cid.Cid { return r.Value.RootCid() }

// IsZero reports whether r is the zero Record.
func (r Record) IsZero() bool { return r.Raw == nil }

// NameFromKey returns the IPNS name of a public key.
func NameFromKey(pk crypto.PubKey) (ipns.Name, error) {
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return ipns.Name{}, fmt.Errorf("feed: name from key: %w", err)
	}
	return ipns.NameFromPeer(id), nil
}

// ParseName parses a feed name as a user types it: the libp2p-key CID
// (k51...), a peer ID (12D3..., Qm...), either with or without "/ipns/".
func ParseName(s string) (ipns.Name, error) {
	n, err := ipns.NameFromString(s)
	if err != nil {
		return ipns.Name{}, fmt.Errorf("feed: parse name %q: %w", s, err)
	}
	return n, nil
}

// Topic returns the gossipsub topic of a feed: TopicPrefix followed by the
// name as a base36 libp2p-key CID.
func Topic(name ipns.Name) string { return TopicPrefix + name.String() }

// NameFromTopic returns the feed whose topic is topic. Only the exact form
// Topic produces is accepted.
func NameFromTopic(topic string) (ipns.Name, error) {
	s, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return ipns.Name{}, fmt.Errorf("feed: %q is not a feed topic", topic)
	}
	n, err := ipns.NameFromString(s)
	if err != nil || Topic(n) != topic {
		return ipns.Name{}, fmt.Errorf("feed: %q is not a feed topic", topic)
	}
	return n, nil
}

// RoutingKey returns the DHT key of a feed's records: "/ipns/" followed by
// the name's binary multihash, as boxo defines it.
func RoutingKey(name ipns.Name) string { return string(name.RoutingKey()) }

// NewRecord signs a record pointing the name of sk at value, an /ipfs/ (or
// /ipld/) path, with sequence number seq, valid from now for validity. It
// returns the marshalled IPNS record with V1 and V2 signatures (boxo's
// defaults) and RecordTTL as cache hint. The public key is embedded only
// when the name cannot hold it (RSA keys), as IPNS does.
func NewRecord(sk crypto.PrivKey, value path.Path, seq uint64, validity time.Duration, now time.Time) ([]byte, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("feed: new record: validity %v is not positive", validity)
	}
	if seq > math.MaxInt64 {
		// dag-cbor integers are signed 64-bit in boxo's encoding.
		return nil, fmt.Errorf("feed: new record: sequence %d out of range", seq)
	}
	if _, err := path.NewImmutablePath(value); err != nil {
		return nil, fmt.Errorf("feed: new record: value %q is not an immutable path", value)
	}
	rec, err := ipns.NewRecord(sk, value, seq, now.Add(validity), RecordTTL)
	if err != nil {
		return nil, fmt.Errorf("feed: new record: %w", err)
	}
	data, err := ipns.MarshalRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("feed: new record: marshal: %w", err)
	}
	return data, nil
}

// Validate checks data, a marshalled IPNS record received from the
// network, as a record of name at time now, with the MaxRecordSize limit.
// It verifies what boxo's ipns.Validate verifies (size, V2 signature,
// agreement of the V1 fields with the signed data, non-negative TTL) and
// also that the value is an immutable path, but judges expiry by now rather
// than the wall clock. The error wraps ErrTooLarge, ErrMalformed,
// ErrWrongName, ErrBadSignature or ErrExpired. Validate holds no state:
// whether the sequence number is new is for the caller to judge (the
// Manager rejects it with ErrStale).
func Validate(name ipns.Name, data []byte, now time.Time) (Record, error) {
	return validate(name, data, now, MaxRecordSize, true)
}

func validate(name ipns.Name, data []byte, now time.Time, maxSize int, checkEOL bool) (Record, error) {
	u, err := parse(name, data, maxSize)
	if err != nil {
		return Record{}, err
	}
	return u.verify(now, checkEOL)
}

// unverified is a record that passed the cheap checks of parse; its
// fields are as the sender wrote them until verify checks the signature.
type unverified struct {
	name ipns.Name
	data []byte
	rec  *ipns.Record
	pk   crypto.PubKey
	seq  uint64
}

// parse runs the checks that cost no signature verification: the size,
// the decoding, the agreement of name and key, and the range of the
// sequence number (read from the signed data, not yet verified). The error
// wraps ErrTooLarge, ErrMalformed or ErrWrongName.
func parse(name ipns.Name, data []byte, maxSize int) (unverified, error) {
	if len(data) > maxSize {
		return unverified{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxSize)
	}
	rec, err := ipns.UnmarshalRecord(data)
	if err != nil {
		if errors.Is(err, ipns.ErrRecordSize) {
			return unverified{}, fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return unverified{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	pk, err := ipns.ExtractPublicKey(rec, name)
	if err != nil {
		if errors.Is(err, ipns.ErrPublicKeyMismatch) {
			return unverified{}, fmt.Errorf("%w: %w", ErrWrongName, err)
		}
		return unverified{}, fmt.Errorf("%w: public key: %w", ErrMalformed, err)
	}
	seq, err := rec.Sequence()
	if err != nil || seq > math.MaxInt64 {
		return unverified{}, fmt.Errorf("%w: bad sequence number", ErrMalformed)
	}
	return unverified{name: name, data: data, rec: rec, pk: pk, seq: seq}, nil
}

// verify checks the signature and the rest of the record. The error wraps
// ErrTooLarge, ErrMalformed, ErrBadSignature or ErrExpired.
func (u unverified) verify(now time.Time, checkEOL bool) (Record, error) {
	rec := u.rec
	// ipns.Validate checks expiry against the wall clock, last but for the
	// TTL sign. ErrExpiredRecord therefore means everything before it
	// passed; expiry is judged below with now, and the TTL checked there too.
	switch err := ipns.Validate(rec, u.pk); {
	case err == nil, errors.Is(err, ipns.ErrExpiredRecord):
	case errors.Is(err, ipns.ErrSignature):
		return Record{}, fmt.Errorf("%w: %w", ErrBadSignature, err)
	case errors.Is(err, ipns.ErrRecordSize):
		return Record{}, fmt.Errorf("%w: %w", ErrTooLarge, err)
	default:
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	eol, err := rec.Validity()
	if err != nil {
		return Record{}, fmt.Errorf("%w: validity: %w", ErrMalformed, err)
	}
	ttl, err := rec.TTL()
	if err != nil || ttl < 0 {
		return Record{}, fmt.Errorf("%w: bad TTL", ErrMalformed)
	}
	p, err := rec.Value()
	if err != nil {
		return Record{}, fmt.Errorf("%w: value: %w", ErrMalformed, err)
	}
	value, err := path.NewImmutablePath(p)
	if err != nil {
		return Record{}, fmt.Errorf("%w: value %q is not an immutable path", ErrMalformed, p)
	}
	if checkEOL && now.After(eol) {
		return Record{}, fmt.Errorf("%w: seq %d ended %s", ErrExpired, u.seq, eol.UTC().Format(time.RFC3339))
	}
	return Record{Name: u.name, Seq: u.seq, Value: value, EOL: eol, TTL: ttl, Raw: u.data}, nil
}
