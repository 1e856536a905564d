// Package node assembles a weft daemon: it opens the repo (config, identity,
// lock), the Badger store and the libp2p network, hands them to the protocol
// logic, and serves the HTTP API. It is the one place where p2p, store and
// protocol meet: imports flow cmd -> node -> {protocol, p2p, store}, and
// protocol packages get what they need from here through small interfaces.
//
// # Start order
//
// Start (node.go) brings the parts up in this order; each may use the ones
// before it, and a failure closes what was opened, in reverse:
//
//  1. the repo (OpenRepo): the repo lock first, then config.toml,
//     identity.key, api.token and swarm.key;
//  2. the API listener and server: bound first, because a taken port is the
//     commonest failure; until step 8 it answers /healthz, and 503 to
//     everything else;
//  3. the store (store.Open): Badger, the pack files, pins;
//  4. the network (p2p.New): libp2p host, DHT, gossipsub, bootstrap loop;
//  5. content (content.go): Bitswap on the store (p2p.Network.StartBitswap),
//     the DAG service, the reprovide loop;
//  6. the native exchange server (native.go), a stream handler on the host;
//  7. collections (collection.go), rejoining those recorded in the store,
//     then feeds (feed.go): feed.Manager, its topics and catch-up protocol;
//  8. ready: the API serves everything, and REPO/api is written last, so a
//     client that finds the file finds a node that answers.
//
// # Close order
//
// Close runs closeParts and then releases the repo lock. closeParts removes
// REPO/api, cancels every API request's context (so long exports, walks
// and streams return at once), shuts the API server down (requests in
// flight get 5 s) and
// waits for it, then closes collections, feeds, the native exchange,
// content, the network and the store, in that order: everything that
// writes to the store or sends on the network stops before the network and
// the store go away. The store is closed last, so a clean stop syncs its
// packs (see package store); then tracing flushes the spans of all that
// (at most 5 s) and closes its exporter.
//
// # Who owns which goroutines
//
// Every goroutine has an owner that starts it and waits for it on close:
//
//   - Node (n.wg): the API server's Serve loop. API handlers run on the
//     server's goroutines and end with their request (streams such as
//     pubsub sub and add end when the client goes or the server shuts down).
//   - content (c.wg): the reprovide loop and each provideAsync announcement;
//     close cancels them and waits.
//   - native: none of its own; the exchange.Server owns its per-stream
//     goroutines and ends them on Close.
//   - collections (cs.wg): the loop that steps every collection on
//     collection.tick_interval, and hand-overs of members leaving. Each
//     member (m.wg) owns its topic reader, its syncs, pin checks and pin
//     workers (collection.pin_concurrency at once over all collections);
//     close stops the loop,
//     then every member, waiting for each.
//   - feeds (f.wg): the loop that ticks feed.Manager and catches up on new
//     connections, and one reader per subscribed topic; feed.Manager owns
//     its own fetch goroutines and one DHT putter per owned feed with a
//     record to put, and ends them on Close.
//   - p2p.Network: the bootstrap loop and the libp2p host's, DHT's and
//     gossipsub's goroutines; Network.Close ends them.
//   - store.Store: Badger's goroutines, and block listings (AllKeysChan)
//     that end with their context or when the store closes; Store.Close.
//   - tracing (tracing.go): with tracing on, the OpenTelemetry SDK's batch
//     span processor and exporter; close shuts them down. Off, there are
//     none (the no-op provider).
//
// # Errors
//
// One rule for error text, so that a log line or a CLI error reads as one
// sentence from the outside in:
//
//   - lower case, no final period; wrap with %w, never %v, so callers can
//     match sentinels with errors.Is (never by their text);
//   - each layer that adds context says what it was doing and on what, as a
//     prefix: "open store: %w", "collection %s: subscribe: %w";
//   - an error that leaves protocol/, p2p/ or store/ through an exported
//     function names its package once, first ("feed: publish %s: %w",
//     "exchange: no providers"), so the log says which subsystem failed;
//     inside a package, and in node/ and cmd/, no package names are added;
//   - sentinels (package-level errors.New) live next to their concept and
//     say the condition in plain words.
//
// Code written before this rule does not all follow it yet (some protocol
// sentinels carry no package name); new code does.
package node
