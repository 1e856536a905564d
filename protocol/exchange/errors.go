package exchange

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

var (
	// ErrBadBlock: a provider sent bytes that do not hash to the CID due
	// next (a wrong or corrupted block, or blocks out of order). Nothing it
	// sent from that point on is stored. Returned wrapped in a *PeerError.
	ErrBadBlock = errors.New("exchange: block does not match its CID")
	// ErrProtocol: a provider broke the protocol otherwise (a frame that does
	// not decode, more blocks than the walk has room for, a Missing frame for
	// another CID). Returned wrapped in a *PeerError.
	ErrProtocol = errors.New("exchange: protocol violation")
	// ErrMalformed wraps every decoding error of a Request or a Frame.
	ErrMalformed = errors.New("exchange: malformed message")
	// ErrStalled: a provider sent nothing for Config.StallTimeout while a
	// request was outstanding.
	ErrStalled = errors.New("exchange: provider stalled")
	// ErrRefused: a provider answered with an Error frame (busy, say).
	ErrRefused = errors.New("exchange: provider refused")
	// ErrBusy wraps ErrRefused: the provider served this requester (or
	// everyone) all the streams it would at once. The fetch goes on over
	// the provider's other streams, if it has any.
	ErrBusy = fmt.Errorf("%w: busy", ErrRefused)
	// ErrIncomplete: some blocks could not be fetched from the providers
	// given: each lacked them or failed. The blocks that did arrive are
	// stored, so fetching again (from others, or over Bitswap) continues
	// from there. Returned wrapped in a *FetchError.
	ErrIncomplete = errors.New("exchange: fetch incomplete")
	// ErrNoProviders: a fetch that needs blocks was given no providers.
	ErrNoProviders = errors.New("exchange: no providers")
	// ErrBadScope: a Scope that is not DAG, Block or Range, or a range
	// offset on another kind.
	ErrBadScope = errors.New("exchange: invalid scope")
	// ErrTooLarge: the walk below the root holds more pending blocks than
	// Config.MaxPending.
	ErrTooLarge = errors.New("exchange: DAG too wide")
	// ErrInvalidConfig wraps every error a Config or ServerConfig
	// validation returns.
	ErrInvalidConfig = errors.New("exchange: invalid config")
	// ErrClosed is returned by calls on a closed Server or Fetcher.
	ErrClosed = errors.New("exchange: closed")
)

// PeerError says which provider failed, and how. Err wraps ErrBadBlock,
// ErrProtocol, ErrStalled, ErrRefused or a stream error.
type PeerError struct {
	Peer peer.ID
	// Cid is the block due when the provider failed (undefined if none).
	Cid cid.Cid
	Err error
}

func (e *PeerError) Error() string {
	if e.Cid.Defined() {
		return fmt.Sprintf("provider %s at %s: %v", e.Peer, e.Cid, e.Err)
	}
	return fmt.Sprintf("provider %s: %v", e.Peer, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// Bad reports whether the provider misbehaved (ErrBadBlock or ErrProtocol),
// as opposed to failing or lacking blocks.
func (e *PeerError) Bad() bool {
	return errors.Is(e.Err, ErrBadBlock) || errors.Is(e.Err, ErrProtocol)
}

// FetchError is a fetch that did not get every block: Missing is how many
// subtrees (or blocks) no provider delivered, First the first of them, and
// Peers the providers' failures, if any. It matches ErrIncomplete and each
// provider error with errors.Is and errors.As.
type FetchError struct {
	Missing int
	First   cid.Cid
	Peers   []*PeerError
}

func (e *FetchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d subtrees not delivered (first %s)", ErrIncomplete, e.Missing, e.First)
	for i, p := range e.Peers {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

func (e *FetchError) Unwrap() []error {
	errs := []error{ErrIncomplete}
	for _, p := range e.Peers {
		errs = append(errs, p)
	}
	return errs
}
