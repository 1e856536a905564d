package feed

import "errors"

// Reasons a record is not applied. Every error Validate, Manager.HandleMessage
// and the catch-up path return for a record wraps exactly one of them, and
// Counters counts each separately.
var (
	// ErrBadSignature: the signature does not verify against the name's key
	// (a forged or tampered record, or one signed by another key).
	ErrBadSignature = errors.New("feed: bad record signature")
	// ErrExpired: the record's validity (EOL) is in the past.
	ErrExpired = errors.New("feed: record expired")
	// ErrStale: the record's sequence number is not above the one held
	// (a replay, or an older record that lost a race).
	ErrStale = errors.New("feed: record sequence not above the one held")
	// ErrTooLarge: the record is larger than the configured limit.
	ErrTooLarge = errors.New("feed: record too large")
	// ErrWrongName: the record carries a public key that is not the name's.
	// A record signed by another Ed25519 key carries no key (the name holds
	// it) and shows as ErrBadSignature instead.
	ErrWrongName = errors.New("feed: record is for another name")
	// ErrMalformed: the bytes are not a well-formed IPNS record, or its value
	// is not an immutable /ipfs/ (or /ipld/) path.
	ErrMalformed = errors.New("feed: malformed record")
)

// Outcomes that are not rejections: the record is not applied and not
// forwarded, but nobody misbehaved.
var (
	// ErrDuplicate: the record is byte for byte the one held.
	ErrDuplicate = errors.New("feed: duplicate record")
	// ErrUnknownFeed: the name is neither followed nor owned here.
	ErrUnknownFeed = errors.New("feed: feed not tracked")
)

// Other errors.
var (
	// ErrNotFound is returned by Resolve and CatchUp when no record for the
	// name could be found locally, from peers or in the DHT.
	ErrNotFound = errors.New("feed: no record found")
	// ErrBadRequest wraps every error DecodeRequest and DecodeResponse return.
	ErrBadRequest = errors.New("feed: malformed catch-up message")
	// ErrInvalidConfig wraps every error Config validation returns.
	ErrInvalidConfig = errors.New("feed: invalid config")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("feed: manager closed")
)
