package collection

import (
	"fmt"
	"time"
)

// Config holds a member's timing and limits. The zero value of every field
// means its default, listed beside it; DefaultConfig returns them filled
// in. Every interval is a field so that tests can run them fast (or drive
// them with a fake clock, as this package's tests do).
//
// Members of one collection should use the same GracePeriod: allocation
// depends on which members each one counts as alive, and members that
// disagree for longer than necessary hold surplus copies for longer.
type Config struct {
	// HeartbeatInterval is how often node/ publishes Collection.Heartbeat.
	// Default 10s.
	HeartbeatInterval time.Duration
	// HeartbeatRate bounds the heartbeats per second a member takes from
	// the collection: every member hears every member, so with more than
	// HeartbeatRate × HeartbeatInterval live members a member's interval
	// grows to live/HeartbeatRate seconds, and each heartbeat says so
	// (Heartbeat.Interval). A member announcing an interval f times
	// HeartbeatInterval is suspected after f × SuspectAfter, and leaves
	// the allocation, and WarmUp ends, that much later too: a collection
	// of many members finds a failure later, and each member's work stays
	// bounded. Default 20.
	HeartbeatRate int
	// SuspectAfter is how long a member may stay unheard before its copies
	// stop counting as confirmed (so its items show as under-replicated),
	// while it still keeps its allocation. Default 3 × HeartbeatInterval.
	// Scaled for members with a longer interval (HeartbeatRate).
	SuspectAfter time.Duration
	// GracePeriod is how long a member may stay unheard before it is
	// dropped from the allocation and its items are given to others.
	// Default 60s. Lengthened by as much as SuspectAfter is for members
	// with a longer interval (HeartbeatRate).
	GracePeriod time.Duration
	// RebroadcastInterval is how often node/ publishes Collection.Heads even
	// when nothing changed. Default 30s.
	RebroadcastInterval time.Duration
	// SnapshotThreshold is the number of deltas kept after the last
	// snapshot at which ShouldSnapshot starts saying yes. Default 1000.
	SnapshotThreshold int
	// GCDelay is how long blocks folded into a snapshot stay live (so peers
	// that have not loaded the snapshot yet can still fetch them) before
	// TakeGarbage returns them. Default 10m.
	GCDelay time.Duration
	// MaxPending bounds the deltas kept while their parents are fetched.
	// Default 100000.
	MaxPending int
	// PendingTTL is how long a delta may wait for its parents, and an
	// announced head to be fetched, before it is dropped. Default 10m.
	PendingTTL time.Duration
	// PinRetry is how long Plan waits before it asks again for a pin that
	// failed. Default 30s.
	PinRetry time.Duration
	// MaxClockSkew bounds how old a heartbeat from a member not heard
	// before may be: Time must be within GracePeriod+MaxClockSkew of the
	// local clock. Default 5m.
	MaxClockSkew time.Duration
	// WarmUp is how long after New Plan stays silent, so the member hears
	// the others' heartbeats before it decides what to pin or release.
	// Default SuspectAfter.
	WarmUp time.Duration
	// MaxRejected bounds the remembered CIDs of rejected blocks (so they
	// are not fetched again). Default 10000.
	MaxRejected int
	// MaxClaims bounds the blocks one member's heads messages may have the
	// replica fetch at once (its claims: announced heads and snapshots not
	// fetched yet). Each claim that turns out false halves the sender's
	// budget until it makes a true one. Default 256.
	MaxClaims int
	// ClaimTimeout is how long a claimed block may stay unfetched before
	// the claim counts as false. Default 2m.
	ClaimTimeout time.Duration
	// AnswerInterval is how often at most a heads request from one member
	// is answered. Default 2s.
	AnswerInterval time.Duration
	// AnswerDelay bounds the random delay before an answer, during which
	// an identical answer from another member cancels it. Default 500ms.
	AnswerDelay time.Duration
	// SenderSigned says that every message given to Authorize and
	// HandleMessage was signed by its from, and the signature verified, by
	// the transport (gossipsub with strict signature verification, as
	// node/ runs it). A heartbeat's own signature is by the same key over
	// the same content, so it is then not checked again: a member takes a
	// thousand heartbeats a round at a thousand members. Default false:
	// checked.
	SenderSigned bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval:   10 * time.Second,
		HeartbeatRate:       20,
		SuspectAfter:        30 * time.Second,
		GracePeriod:         60 * time.Second,
		RebroadcastInterval: 30 * time.Second,
		SnapshotThreshold:   1000,
		GCDelay:             10 * time.Minute,
		MaxPending:          100000,
		PendingTTL:          10 * time.Minute,
		PinRetry:            30 * time.Second,
		MaxClockSkew:        5 * time.Minute,
		MaxRejected:         10000,
		WarmUp:              30 * time.Second,
		MaxClaims:           256,
		ClaimTimeout:        2 * time.Minute,
		AnswerInterval:      2 * time.Second,
		AnswerDelay:         500 * time.Millisecond,
	}
}

// withDefaults fills zero fields. SuspectAfter follows HeartbeatInterval.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.HeartbeatRate == 0 {
		c.HeartbeatRate = d.HeartbeatRate
	}
	if c.SuspectAfter == 0 {
		c.SuspectAfter = 3 * c.HeartbeatInterval
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = d.GracePeriod
	}
	if c.RebroadcastInterval == 0 {
		c.RebroadcastInterval = d.RebroadcastInterval
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.GCDelay == 0 {
		c.GCDelay = d.GCDelay
	}
	if c.MaxPending == 0 {
		c.MaxPending = d.MaxPending
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = d.PendingTTL
	}
	if c.PinRetry == 0 {
		c.PinRetry = d.PinRetry
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = d.MaxClockSkew
	}
	if c.MaxRejected == 0 {
		c.MaxRejected = d.MaxRejected
	}
	if c.WarmUp == 0 {
		c.WarmUp = c.SuspectAfter
	}
	if c.MaxClaims == 0 {
		c.MaxClaims = d.MaxClaims
	}
	if c.ClaimTimeout == 0 {
		c.ClaimTimeout = d.ClaimTimeout
	}
	if c.AnswerInterval == 0 {
		c.AnswerInterval = d.AnswerInterval
	}
	if c.AnswerDelay == 0 {
		c.AnswerDelay = d.AnswerDelay
	}
	return c
}

// Validate fills defaults and checks c. GCDelay and WarmUp may be negative
// to mean none (tests use it).
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.HeartbeatInterval < 0 || c.SuspectAfter < 0 || c.GracePeriod < 0 ||
		c.RebroadcastInterval < 0 || c.PendingTTL < 0 || c.PinRetry < 0 || c.MaxClockSkew < 0 ||
		c.ClaimTimeout < 0 || c.AnswerInterval < 0 || c.AnswerDelay < 0:
		return bad("negative interval")
	case c.HeartbeatInterval > MaxHeartbeatInterval:
		return bad("HeartbeatInterval (%v) must be at most %v", c.HeartbeatInterval, MaxHeartbeatInterval)
	case c.SuspectAfter <= c.HeartbeatInterval:
		return bad("SuspectAfter (%v) must exceed HeartbeatInterval (%v)", c.SuspectAfter, c.HeartbeatInterval)
	case c.GracePeriod < c.SuspectAfter:
		return bad("GracePeriod (%v) must be at least SuspectAfter (%v)", c.GracePeriod, c.SuspectAfter)
	case c.SnapshotThreshold < 0 || c.MaxPending < 0 || c.MaxRejected < 0 || c.MaxClaims < 0 || c.HeartbeatRate < 0:
		return bad("negative limit")
	}
	return nil
}
