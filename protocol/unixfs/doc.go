// Package unixfs turns files and directories into UnixFS DAGs the way Kubo
// does, and back.
//
// Imports use boxo's chunker, balanced (or trickle) file layout and
// directories, configured per call by Options. The defaults are Kubo's
// unixfs-v1-2025 profile (IPIP-499), and Profile and the Options fields
// reproduce older Kubo settings, so the same bytes give the same CIDs as
// `ipfs add` with matching settings. Options never touch boxo's
// process-wide import globals, so imports with different settings can run
// at once.
//
// Everything streams: AddFile, AddNode and AddPath read input one chunk at
// a time and write blocks as they go; Cat and Get fetch blocks as the
// reader advances. Memory depends on the chunk size and directory widths,
// not on how large a file is.
//
// The package takes the block layer as a go-ipld-format DAGService (for
// instance boxo's merkledag over a blockservice) and imports nothing from
// weft's node, p2p or store packages: node/ hands it the real one.
package unixfs
