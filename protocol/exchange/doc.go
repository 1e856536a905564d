// Package exchange is weft's native block exchange: a requester names a root
// CID and a scope (the whole DAG, one block, or a byte range of a UnixFS
// file), and a provider streams the blocks back on one stream, in an order
// both sides compute from the blocks themselves, with no round trip per
// block. It complements Bitswap, which weft keeps speaking with every other
// IPFS node; node/ picks the native protocol for peers that advertise
// ProtocolID and Bitswap for the rest.
//
// # Order
//
// Both sides walk the same depth-first, pre-order traversal. A request holds
// a list of wants (a CID and a scope); they are walked in order, each from
// its CID down:
//
//   - a dag-pb block's links are followed in link order; raw blocks, and
//     blocks of any other codec or dag-pb blocks that do not decode, are
//     leaves;
//   - ScopeBlock follows no links; ScopeRange follows only the links of a
//     UnixFS file node whose byte span (from the node's blocksizes, after
//     its own inline data) meets the range, with the range made relative to
//     each child; a node that is not a UnixFS file, or whose blocksizes do
//     not match its links, is a leaf under ScopeRange;
//   - a (CID, scope) already visited in the same request is skipped, so a
//     DAG that reuses subtrees costs each once and cannot blow up;
//   - a CID with an identity multihash carries its block: it is never sent,
//     and is expanded from the CID itself;
//   - a CID whose hash function or digest size boxo's verifcid default
//     allowlist refuses is neither sent nor followed: nobody could check
//     its block (the Fetcher reports it as not delivered).
//
// Because the requester knows which CID comes next, a block frame carries
// only the block's bytes: the requester hashes them with the expected CID's
// prefix and compares. Sending the CID too would cost bytes and invite the
// mistake of trusting it. A block that does not hash to the expected CID
// (wrong, corrupted, or out of order) ends the exchange with that provider
// at once: nothing from it past that point is stored, and blocks before it
// were verified one by one. A provider that lacks a block says so with a
// Missing frame (carrying the CID, as a check that both sides agree on the
// position) and does not descend; the requester asks another provider.
//
// # Wire format
//
// Every message, both ways, is an unsigned varint length followed by that
// many bytes. The requester sends Requests (protobuf, encoded by hand with
// protowire; field numbers are the contract):
//
//	message Request {
//	  repeated Want wants = 1;   // 1..MaxWants, walked in order
//	  uint64 limit = 2;          // stop after this many block bytes (0: none)
//	  string trace = 3;          // optional W3C traceparent of the requester's
//	                             // span (printable ASCII, <= MaxTraceSize);
//	                             // providers that predate it skip it as an
//	                             // unknown field, so it needs no new version
//	}
//	message Want {
//	  bytes cid = 1;
//	  uint32 scope = 2;          // 1 DAG, 2 BLOCK, 3 RANGE
//	  uint64 offset = 3;         // RANGE only
//	  optional uint64 length = 4; // RANGE only; absent: to the end
//	}
//
// and the provider answers each with frames, whose first byte is the type:
//
//	0x01 Block    the next block's bytes (at most MaxBlockSize)
//	0x02 Missing  the next block's CID: the provider does not have it
//	0x03 End      this request is done; with a limit, the walk may stop early
//	              and the requester takes what is left elsewhere
//	0x04 Error    uvarint code, then a short UTF-8 message; the stream ends
//
// A stream carries any number of requests one after the other; the provider
// answers them in order, so a requester may send the next before the last
// is answered. Decoders refuse lengths above MaxRequestSize and
// MaxFrameSize before allocating, so a peer cannot make the other side
// allocate more than one frame's worth per frame.
//
// # Roles
//
// Server answers requests from a block getter (the node's blockstore),
// reading each request's blocks ahead of its writes (ServerConfig.ReadAheadBytes
// across all streams), so a block's read from disk overlaps the previous
// one's send. It treats requesters as possibly hostile: one peer gets at
// most MaxStreamsPerPeer of the MaxStreams slots (the rest are answered
// busy, and a Fetcher goes on over the streams it got), a share of the
// read-ahead and a few reads at a time, and a requester that takes its
// answer slower than a minimum rate (ServerConfig.WriteTimeout per
// WriteChunk) is cut off; ServerStats.Held shows the memory held. Fetcher fetches a scope from one or more providers: it first
// walks the scope through the local blockstore, so only what is missing is
// asked for (a fetch interrupted by anything resumes where it stopped), then
// splits the missing subtrees among providers, over
// Config.StreamsPerProvider streams to each (so reading, hashing and
// writing overlap even with a single provider), in units of about
// Config.UnitBytes,
// hands a failed or stalled provider's unfinished walk to the others, moves
// the request of a provider far slower than the rest to one that ran out
// of work, writes verified blocks in batches and keeps at most
// Config.MaxBuffered bytes of blocks in memory. Each stream's blocks are
// written in the order they arrived, a parent before its children, so a
// fetch cut short leaves whole prefixes of subtrees behind, and the next
// fetch's walk of held blocks finds exactly what is still missing.
package exchange
