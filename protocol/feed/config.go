package feed

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/trace"
)

// Config describes a Manager. Every optional field's zero value is a
// sensible default, noted beside it; New refuses inconsistent settings.
type Config struct {
	// Self is this node's peer ID. Required with Topics: gossipsub runs the
	// validator on the node's own publishes with Self as sender, and the
	// Manager accepts a record it already holds only from Self.
	Self peer.ID
	// Topics is the gossipsub side (nil: records are neither sent nor
	// received on topics; catch-up and the DHT still work).
	Topics Topics
	// Router is the DHT (nil: no DHT put on publish and no DHT fallback).
	Router Router
	// Pinner fetches and pins followed content. Required to follow with Pin.
	Pinner Pinner
	// Exchange carries catch-up requests (nil: catch up from the DHT only).
	Exchange Exchange
	// Fetcher asks peers on a name's IPNS topic for their record with the
	// libp2p fetch protocol, as Kubo does (nil: not asked).
	Fetcher Fetcher
	// Store persists follows, owned feeds, held and pinned records and used
	// sequence numbers (nil: all of it lives in memory and dies with the
	// Manager).
	Store KV
	// Clock tells the time (nil: the wall clock).
	Clock Clock
	// MaxRecordSize is the largest record accepted, in bytes (0:
	// MaxRecordSize, which is also the upper bound).
	MaxRecordSize int
	// Validity is how long records made by Publish stay valid (0:
	// DefaultValidity).
	Validity time.Duration
	// FetchTimeout bounds one fetch and pin of a version (0: 10m).
	FetchTimeout time.Duration
	// MaxConcurrentFetches bounds fetches in flight across all feeds (0: 4).
	// Each feed has at most one in flight regardless.
	MaxConcurrentFetches int
	// RetryMin and RetryMax bound the backoff before a failed fetch or DHT
	// put is tried again by Tick; it doubles from RetryMin on each failure
	// (0: 30s, 10m).
	RetryMin, RetryMax time.Duration
	// CatchUpPeers is how many topic peers a catch-up asks at once (0: 3).
	CatchUpPeers int
	// CatchUpTimeout bounds asking peers, and separately the DHT fallback,
	// during a catch-up (0: 10s).
	CatchUpTimeout time.Duration
	// CatchUpDHTEvery is how often, at most, a catch-up of a tracked feed
	// falls back to the DHT (0: 30s; negative: every time). node/ catches
	// up after every new connection, and a follower whose own DHT walks
	// open connections would otherwise walk again after each, before the
	// first publish, when no peer holds a record. Refresh (every
	// ResolveInterval) always asks the DHT.
	CatchUpDHTEvery time.Duration
	// ResolveInterval is how often every followed feed not owned here is
	// resolved again (its topic peers and the DHT asked for a newer
	// record), so a name whose owner publishes only to the DHT does not go
	// stale (0: DefaultResolveInterval; negative: never).
	ResolveInterval time.Duration
	// DHTPutTimeout bounds one background DHT put of a published record
	// (0: 1m).
	DHTPutTimeout time.Duration
	// Logger receives the package's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Tracer, if set, records a client span for every catch-up request
	// sent (its trace context travels in Request.Trace) and a server span
	// for every one answered that carries one.
	Tracer trace.Tracer
}

// DefaultResolveInterval is Config.ResolveInterval's default: well under
// the 4 h at which Kubo republishes, and the 1 m of its pubsub resolver.
const DefaultResolveInterval = time.Minute

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.MaxRecordSize == 0 {
		c.MaxRecordSize = MaxRecordSize
	}
	if c.Validity == 0 {
		c.Validity = DefaultValidity
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = 10 * time.Minute
	}
	if c.MaxConcurrentFetches == 0 {
		c.MaxConcurrentFetches = 4
	}
	if c.RetryMin == 0 {
		c.RetryMin = 30 * time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 10 * time.Minute
	}
	if c.CatchUpPeers == 0 {
		c.CatchUpPeers = 3
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = 10 * time.Second
	}
	if c.CatchUpDHTEvery == 0 {
		c.CatchUpDHTEvery = 30 * time.Second
	}
	if c.ResolveInterval == 0 {
		c.ResolveInterval = DefaultResolveInterval
	}
	if c.DHTPutTimeout == 0 {
		c.DHTPutTimeout = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.Topics != nil && c.Self == "":
		return fmt.Errorf("%w: Topics needs Self", ErrInvalidConfig)
	case c.MaxRecordSize < 0 || c.MaxRecordSize > MaxRecordSize:
		return fmt.Errorf("%w: MaxRecordSize %d outside 1..%d", ErrInvalidConfig, c.MaxRecordSize, MaxRecordSize)
	case c.Validity < 0, c.FetchTimeout < 0, c.RetryMin < 0, c.RetryMax < 0, c.CatchUpTimeout < 0, c.DHTPutTimeout < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case c.RetryMax < c.RetryMin:
		return fmt.Errorf("%w: RetryMax %v below RetryMin %v", ErrInvalidConfig, c.RetryMax, c.RetryMin)
	case c.MaxConcurrentFetches < 0:
		return fmt.Errorf("%w: negative MaxConcurrentFetches", ErrInvalidConfig)
	case c.CatchUpPeers < 0:
		return fmt.Errorf("%w: negative CatchUpPeers", ErrInvalidConfig)
	}
	return nil
}
