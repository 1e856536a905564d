package collection

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
)

// Errors of the wire formats. Every decode error wraps ErrMalformed or
// ErrTooLarge and names the field that failed.
var (
	// ErrMalformed is wrapped by every error a Decode function returns for
	// bytes that are not a well-formed, canonically encoded message.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge is wrapped when a message, a field or a list exceeds its
	// limit (see the Max constants).
	ErrTooLarge = errors.New("message too large")
	// ErrBadSignature is returned when a signature does not verify against
	// the key in the message.
	ErrBadSignature = errors.New("bad signature")
	// ErrWrongCollection is returned for a message or block that names
	// another collection.
	ErrWrongCollection = errors.New("message for another collection")
	// ErrBadBlock is returned for a block whose CID is not a CIDv1
	// raw/sha2-256 CID of its bytes.
	ErrBadBlock = errors.New("block CID does not match its content")
)

// Reasons a delta or snapshot is rejected. A rejected delta is never
// applied, nor is any delta that descends from it.
var (
	// ErrUnauthorized: the author is neither the creator nor a writer
	// granted in the delta's causal past (or the snapshot's proofs).
	ErrUnauthorized = errors.New("author is not a writer of the collection")
	// ErrBadSeq: the author's sequence number is not one more than the
	// highest of its own deltas in the delta's causal past.
	ErrBadSeq = errors.New("sequence number does not follow the author's previous delta")
	// ErrEquivocation: the author signed two different deltas with the same
	// sequence number. The first one applied stays; see Equivocations.
	ErrEquivocation = errors.New("author signed two deltas with the same sequence number")
	// ErrBadParent: a parent link's (author, seq) does not match the delta
	// it names.
	ErrBadParent = errors.New("parent link does not match the parent delta")
	// ErrRejectedParent: a parent was rejected, so this delta cannot be.
	ErrRejectedParent = errors.New("a parent delta was rejected")
	// ErrUnobservedRemove: a remove names an add outside the delta's causal
	// past, which would make the outcome depend on delivery order.
	ErrUnobservedRemove = errors.New("remove names an add outside the delta's causal past")
	// ErrGrantNotCreator: only the creator may grant.
	ErrGrantNotCreator = errors.New("only the creator may grant writers")
	// ErrBadSnapshot: a snapshot's chunks or proofs do not agree with its
	// root.
	ErrBadSnapshot = errors.New("inconsistent snapshot")
)

// Errors of the local API.
var (
	// ErrNotWriter is returned by writes when the local key may not write.
	ErrNotWriter = errors.New("local key is not a writer of the collection")
	// ErrNoItem is returned by Remove for an item not in the collection.
	ErrNoItem = errors.New("item not in collection")
	// ErrPendingFull is returned when too many deltas wait for their
	// parents; the delta is dropped and will be fetched again when needed.
	ErrPendingFull = errors.New("too many deltas waiting for their parents")
	// ErrStaleHeartbeat is returned for a heartbeat not newer than the last
	// one seen from the same member (a duplicate or a replay).
	ErrStaleHeartbeat = errors.New("heartbeat not newer than the last one from this member")
	// ErrIncomplete is wrapped by *IncompleteError.
	ErrIncomplete = errors.New("sync incomplete")
	// ErrInvalidConfig is wrapped by every error Config.Validate returns.
	ErrInvalidConfig = errors.New("invalid collection config")
	// ErrNotMember is returned for a heads message or heads request whose
	// sender is not a member the replica knows (heard through a signed
	// heartbeat) nor a writer.
	ErrNotMember = errors.New("sender is not a member of the collection")
	// ErrSenderMismatch is returned for a heartbeat published by another
	// peer than the member it names.
	ErrSenderMismatch = errors.New("heartbeat published by another peer than its member")
	// ErrRateLimited is returned for a heads request from a member already
	// answered within AnswerInterval.
	ErrRateLimited = errors.New("heads request within the answer interval")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)
}

// Rejection says why a block was not accepted.
type Rejection struct {
	Cid cid.Cid
	Err error
}

func (r Rejection) Error() string { return fmt.Sprintf("block %s: %v", r.Cid, r.Err) }
func (r Rejection) Unwrap() error { return r.Err }

// IncompleteError is returned by Sync when blocks it needs could not be
// fetched; Missing lists them. Sync can be called again later.
type IncompleteError struct {
	Missing []cid.Cid
	Err     error // the context's error, if it ended the sync
}

func (e *IncompleteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sync incomplete: %d block(s) not fetched", len(e.Missing))
	for i, c := range e.Missing {
		if i == 3 {
			b.WriteString(", ...")
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(c.String())
	}
	if e.Err != nil {
		fmt.Fprintf(&b, " (%v)", e.Err)
	}
	return b.String()
}

func (e *IncompleteError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrIncomplete, e.Err}
	}
	return []error{ErrIncomplete}
}
