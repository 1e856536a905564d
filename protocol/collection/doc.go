// Package collection is the logic of weft collections: named, replicated
// sets of pins shared by the nodes that join them. It holds the CRDT that
// says which items a collection has, the wire formats members exchange,
// the allocation that says which members pin which item, and the repair
// that follows when members come and go. It does no I/O and owns no
// goroutines; node/ wires it to gossipsub, the block exchange and the
// store, and drives its clock with Tick.
//
// # State: a signed, causal observed-remove set
//
// Every change is a Delta: a signed list of ops (add an item with a
// replication factor and label, remove the adds of an item it has seen,
// grant a writer), stored as a content-addressed block whose parents are
// the heads its author had applied. Deltas form a Merkle DAG. A replica
// applies a delta only after all its parents, so each remove comes after
// the adds it names; concurrent adds survive a remove that did not see
// them. Replicas that applied the same deltas, in whatever order, hold the
// same items, the same heads and the same clock.
//
// Each author numbers its deltas 1, 2, 3, ... and every delta has its
// author's previous one in its past, so a causally closed set of deltas is
// described exactly by a version vector (Clock). Parent links carry the
// parent's (author, seq), which is what lets a replica that folded history
// into a snapshot recognise a folded parent without its CID.
//
// # Who may write
//
// The collection ID is the CID of its Descriptor, which names the
// creator's key. The creator grants writers (only the creator may). A
// delta is applied only if its author is the creator or has a grant in the
// delta's own causal past, its sequence number follows the author's
// previous one in that past, and every tag it removes lies in that past;
// all of these depend only on the delta's past, so every replica decides
// alike whatever the delivery order. Anything else is rejected, counted
// (Stats) and remembered, and so is every delta descending from it.
// Signatures use the members' libp2p keys.
//
// # Snapshots: bounded state
//
// A writer folds the state into a Snapshot: a signed root holding the
// version vector it covers, its heads, and the creator-signed grant deltas
// of every writer (so a new member can check the writers without the
// history), and chunks listing the live items. Loading a snapshot is the
// state-based join of an observed-remove set with causal contexts, so
// concurrent snapshots, and deltas concurrent with them, merge like
// anything else. After a snapshot the deltas it covers are garbage
// (TakeGarbage, after GCDelay): what a member stores is the live items
// and the deltas since the last snapshot, however long the history. A new
// member loads the snapshot and the deltas after it.
//
// Trust: a snapshot is believed, not re-derived; its author must be the
// creator or a granted writer. When a delta names a parent that a loaded
// snapshot folded in, its causal past is bounded by the snapshot's clock
// rather than known exactly. Deltas from honest writers are judged the
// same either way; a writer that signs a delta concurrent with its own
// grant, or two deltas with one sequence number (equivocation, recorded as
// evidence), can make replicas that loaded a snapshot and replicas that
// kept the history disagree about that delta. Writers are trusted not to.
//
// # Sync
//
// Members announce their heads (Heads) on the collection's topic when they
// change and every RebroadcastInterval. A member that joins asks a few
// peers directly (direct.go: HeadsRequest, AnswerDirect, TakeDirectAnswer
// over a stream of HeadsProtocolID); one that reconnects publishes a
// HeadsRequest on the topic. Members whose heads differ answer with their
// heads, snapshots and the CIDs of every delta they keep after them, so
// the newcomer fetches the whole recent history in one round (Missing,
// Sync through a BlockGetter with GetMany) instead of walking the DAG one
// parent at a time.
//
// # Allocation and repair
//
// Members publish a signed Heartbeat every HeartbeatInterval. Every member
// hears every member's heartbeats, so in a collection of more than
// HeartbeatRate × HeartbeatInterval members each heartbeats more seldom,
// every live/HeartbeatRate seconds, and says so in its heartbeat; the
// others then wait as many of its intervals before they suspect it, and as
// much longer before its items move (see Config.HeartbeatRate). A
// member's work stays bounded however large its collection; failures are
// found later in a large one. The live
// members are the ones heard within GracePeriod; each item is held by the
// R live members of highest rendezvous weight (Holders), which every
// member computes alike. Plan tells the local member what to pin and
// unpin: it pins what it is allocated, and releases what it no longer is
// only once the item's holders report it pinned, so an item never has
// fewer than R copies during a move. A member unheard for SuspectAfter no
// longer counts as a copy (its items show under-replicated); past
// GracePeriod it leaves the allocation and its items move to others
// (repairing, then ok). When it returns it is allocated its items again,
// finds them still pinned, and the surplus copies are released.
//
// # Wiring (node/)
//
// The collection's topic carries Heartbeat, Heads and HeadsRequest
// messages; deltas and snapshots travel as blocks through the exchange.
// A node that creates a collection stores and pins Descriptor.Block (its
// CID is the ID joiners are given); a joiner fetches it and calls
// DecodeDescriptor. Then, per collection:
//
//	c, _ := collection.New(desc, key, cfg, time.Now())
//	for each stored collection block: c.AddBlock(b)    // any order
//	c.RestorePins(items pinned for this collection)
//	publish(c.Heartbeat()); for a few topic peers p: c.TakeDirectAnswer(p, ask(p, c.HeadsRequest()))
//	loop:
//	  every second:             c.Tick(now); act(c.Plan()); unpin(c.TakeGarbage())
//	  every c.HeartbeatEvery(): publish(c.Heartbeat())
//	  every RebroadcastInterval and when heads changed: publish(c.Heads())
//	  on a topic message m:     if reply, _ := c.HandleMessage(m); reply != nil { publish(reply) }
//	  when len(c.Missing()) > 0: res, _ := c.Sync(ctx, getter); pin(res.Keep)
//	  on a direct request q:    answer(c.AnswerDirect(from, q))
//	  a member back after a silence: publish(c.HeadsRequest())
//	  if c.ShouldSnapshot():    pin(c.Snapshot())
//	  user writes:              pin(c.Add(...)), c.Remove, c.Grant; publish(c.Heads())
//
// where act pins or unpins each Action and reports it with PinDone or
// UnpinDone, and pin stores and directly pins collection blocks.
//
// # Concurrency
//
// A Collection's methods may be called from any goroutine; each holds one
// mutex for its short run and calls nothing outside the package while
// holding it. Sync calls the BlockGetter without the lock.
package collection
