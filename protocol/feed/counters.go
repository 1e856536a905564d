package feed

import (
	"errors"
	"sync/atomic"
)

// Counters is a snapshot of a Manager's counts since New, for metrics. All
// are monotonic.
type Counters struct {
	// Accepted records were valid and newer than the one held, and applied.
	Accepted uint64
	// Duplicate records were byte for byte the one held.
	Duplicate uint64
	// Unknown records were for feeds neither followed nor owned.
	Unknown uint64

	// Rejections by reason (see the sentinel errors of the same names).
	// Stale counts StaleUnverified too.
	BadSignature uint64
	Expired      uint64
	Stale        uint64
	TooLarge     uint64
	WrongName    uint64
	Malformed    uint64

	// StaleUnverified counts stale records received on a topic that were
	// dropped on their sequence number alone, before any signature check.
	StaleUnverified uint64
	// SignatureChecks counts records received on a topic or in a catch-up
	// whose signature was verified: what a flood of records costs.
	SignatureChecks uint64

	// Pinned counts versions fetched and pinned; Unpinned those unpinned
	// after a newer one (or on unfollow). PinFailed and UnpinFailed count
	// errors; Superseded counts fetches abandoned for a newer version.
	Pinned      uint64
	Unpinned    uint64
	PinFailed   uint64
	UnpinFailed uint64
	Superseded  uint64

	// RequestsServed counts catch-up requests answered, BadRequests those
	// that did not decode. CatchUps counts catch-ups run, CatchUpsDHT those
	// that fell back to the DHT.
	RequestsServed uint64
	BadRequests    uint64
	CatchUps       uint64
	CatchUpsDHT    uint64

	// DHTPuts and DHTPutsFailed count the background DHT puts of
	// published records that succeeded and failed.
	DHTPuts       uint64
	DHTPutsFailed uint64
}

// Rejected is the total of records rejected for any reason.
func (c Counters) Rejected() uint64 {
	return c.BadSignature + c.Expired + c.Stale + c.TooLarge + c.WrongName + c.Malformed
}

type counters struct {
	accepted, duplicate, unknown                                 atomic.Uint64
	badSignature, expired, stale, tooLarge, wrongName, malformed atomic.Uint64
	staleUnverified, signatureChecks                             atomic.Uint64
	pinned, unpinned, pinFailed, unpinFailed, superseded         atomic.Uint64
	requestsServed, badRequests, catchUps, catchUpsDHT           atomic.Uint64
	dhtPuts, dhtPutsFailed                                       atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{
		Accepted: c.accepted.Load(), Duplicate: c.duplicate.Load(), Unknown: c.unknown.Load(),
		BadSignature: c.badSignature.Load(), Expired: c.expired.Load(), Stale: c.stale.Load(),
		TooLarge: c.tooLarge.Load(), WrongName: c.wrongName.Load(), Malformed: c.malformed.Load(),
		StaleUnverified: c.staleUnverified.Load(), SignatureChecks: c.signatureChecks.Load(),
		Pinned: c.pinned.Load(), Unpinned: c.unpinned.Load(), PinFailed: c.pinFailed.Load(),
		UnpinFailed: c.unpinFailed.Load(), Superseded: c.superseded.Load(),
		RequestsServed: c.requestsServed.Load(), BadRequests: c.badRequests.Load(),
		CatchUps: c.catchUps.Load(), CatchUpsDHT: c.catchUpsDHT.Load(),
		DHTPuts: c.dhtPuts.Load(), DHTPutsFailed: c.dhtPutsFailed.Load(),
	}
}

// count adds one to the counter of err's reason.
func (c *counters) count(err error) {
	switch {
	case err == nil:
		c.accepted.Add(1)
	case errors.Is(err, ErrDuplicate):
		c.duplicate.Add(1)
	case errors.Is(err, ErrUnknownFeed):
		c.unknown.Add(1)
	case errors.Is(err, ErrBadSignature):
		c.badSignature.Add(1)
	case errors.Is(err, ErrExpired):
		c.expired.Add(1)
	case errors.Is(err, ErrStale):
		c.stale.Add(1)
	case errors.Is(err, ErrTooLarge):
		c.tooLarge.Add(1)
	case errors.Is(err, ErrWrongName):
		c.wrongName.Add(1)
	default:
		c.malformed.Add(1)
	}
}
