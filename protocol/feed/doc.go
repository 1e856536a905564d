// Package feed implements weft's feeds: signed, mutable names that point at
// content, and the replication of their newest version to followers.
//
// A feed is an IPNS name (the libp2p-key CID of a public key). Its owner
// signs IPNS records (github.com/ipfs/boxo/ipns, with V1 and V2
// signatures, so any IPNS implementation can verify them) that map the name
// to an /ipfs/ path with a strictly increasing sequence number and an
// end-of-validity time. Each record is sent on the feed's gossipsub topic
// (Topic) and put into the DHT under its routing key (RoutingKey), in the
// background: publishing never waits on the DHT. Records also go out on
// the name's IPNS topic (IPNSTopic), the one Kubo's IPNS over pubsub uses,
// and followers listen on both.
//
// Followers keep two positions per feed:
//
//   - held: the newest valid record seen. It only moves forward, at once,
//     when a record is accepted; it is what the gossipsub validator compares
//     against, what catch-up requests are answered with and what Resolve
//     returns.
//   - pinned: the newest record whose content has been fetched and pinned.
//     It also only moves forward, and only once the Pinner has finished;
//     the version it replaces is unpinned afterwards unless the follow keeps
//     history. With a follow that does not pin, there is no pinned position.
//
// Fetching is asynchronous, one fetch per feed at a time and at most
// Config.MaxConcurrentFetches across feeds. A newer record arriving while an
// older one is being fetched cancels that fetch and skips to the newest, so
// neither position ever goes back to an older record.
//
// Records with a bad signature, a sequence number not above the one held, an
// expired validity or an oversize payload are rejected, counted (Counters)
// and never applied; the gossipsub verdict (Decision.Verdict) keeps them from
// being forwarded. Nodes that were offline catch up by asking the feed's
// topic peers for their newest record (Request, Response), and peers on the
// IPNS topic with the libp2p fetch protocol (FetchRequest, FetchResponse),
// with the DHT as fallback. Every Config.ResolveInterval a followed name is
// resolved again (RefreshAll), the DHT asked even when peers answered.
//
// The package is plain logic: it imports nothing from weft's node, p2p or
// store packages. What it needs from the network, the DHT, the block store
// and the datastore it states as small interfaces (deps.go), which node/
// implements; a Clock makes time drivable in tests.
package feed
