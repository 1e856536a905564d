package feed

import (
	"context"
	"errors"

	"github.com/ipfs/boxo/ipns"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Verdict tells gossipsub what to do with a message.
type Verdict uint8

const (
	// Accept: the record was valid and newer, and has been applied; deliver
	// and forward it.
	Accept Verdict = iota + 1
	// Ignore: the record was not applied and must not be forwarded, but the
	// sender is not to blame: a duplicate, a record that lost a race to a
	// newer one (ErrStale, judged on the sequence number before the
	// signature is checked), one that expired in flight or under clock skew
	// (ErrExpired), one over this node's max_record_size but within the
	// IPNS limit (ErrTooLarge), or one for a feed not tracked here.
	Ignore
	// Reject: the record is invalid in a way no honest peer forwards (bad
	// signature, wrong name, malformed, larger than IPNS allows); drop it
	// and let gossipsub's peer scoring penalize the sender: every weft
	// topic is scored (p2p.Network.Topic), and a peer whose invalid
	// messages take its score below the graylist threshold is ignored,
	// then disconnected and banned for a while.
	Reject
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Ignore:
		return "ignore"
	case Reject:
		return "reject"
	}
	return "verdict(?)"
}

// PubsubResult maps v onto gossipsub's validation result.
func (v Verdict) PubsubResult() pubsub.ValidationResult {
	switch v {
	case Accept:
		return pubsub.ValidationAccept
	case Reject:
		return pubsub.ValidationReject
	}
	return pubsub.ValidationIgnore
}

// Decision is the outcome of handling one record.
type Decision struct {
	Verdict Verdict
	// Record is the validated record, set whenever validation passed (also
	// for ErrDuplicate, and for ErrStale found after the signature check;
	// a record dropped as stale before it is zero).
	Record Record
	// Err is nil for Accept, and otherwise wraps one of ErrDuplicate,
	// ErrUnknownFeed, ErrStale or a validation error.
	Err error
}

func verdictOf(err error) Verdict {
	switch {
	case err == nil:
		return Accept
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrWrongName),
		errors.Is(err, ErrMalformed), errors.Is(err, ErrTooLarge):
		return Reject
	}
	return Ignore
}

// TopicValidator returns the gossipsub validator of name's topic; the
// Manager hands it to Topics.Join. It calls HandleMessage with the peer the
// message came from (gossipsub's ReceivedFrom, which is the node itself for
// its own publishes).
func (m *Manager) TopicValidator(name ipns.Name) pubsub.ValidatorEx {
	return func(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		return m.HandleMessage(name, from, msg.GetData()).Verdict.PubsubResult()
	}
}
