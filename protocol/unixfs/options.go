package unixfs

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	chunker "github.com/ipfs/boxo/chunker"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/boxo/verifcid"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Layout names how file chunks are arranged under a file's root block.
type Layout string

const (
	// LayoutBalanced fills every level before adding a new one (Kubo's default).
	LayoutBalanced Layout = "balanced"
	// LayoutTrickle favours reading from the start, as for streaming media.
	LayoutTrickle Layout = "trickle"
)

// SizeEstimation names how a directory's size is estimated when deciding
// whether it must become a HAMT-sharded directory. The values are Kubo's
// Import.UnixFSHAMTDirectorySizeEstimation settings.
type SizeEstimation string

const (
	// EstimateLinks counts only link names and CID bytes: Kubo's legacy rule,
	// which underestimates and so shards later than EstimateBlock.
	EstimateLinks SizeEstimation = "links"
	// EstimateBlock counts the exact serialized size of the directory block
	// (unixfs-v1-2025).
	EstimateBlock SizeEstimation = "block"
	// EstimateDisabled ignores size: only DirMaxLinks can make a directory sharded.
	EstimateDisabled SizeEstimation = "disabled"
)

// Options are the settings that decide the shape, and so the CIDs, of an
// import. Two imports of the same bytes with equal Options give equal CIDs,
// and equal to Kubo's with the matching settings.
//
// Start from DefaultOptions or Profile and change fields: the zero Options is
// not valid (CID version 0 is a real setting, so zero cannot mean "default").
// Every function taking Options calls Validate first.
type Options struct {
	// CIDVersion is 0 or 1. Version 0 allows only sha2-256 and dag-pb roots.
	CIDVersion int
	// Hash is a multihash name: "sha2-256" or "blake3", or any other name that
	// go-multihash implements and boxo's verifcid allows (e.g. "sha2-512").
	Hash string
	// RawLeaves stores file chunks as raw blocks instead of wrapping each in
	// a UnixFS node. Kubo's --raw-leaves.
	RawLeaves bool
	// ChunkSize is the fixed size in bytes of file chunks (Kubo's
	// --chunker=size-N), from 1 to boxo's chunker.ChunkSizeLimit.
	ChunkSize int64
	// MaxLinks is the most links a file node has before the DAG grows a
	// level (Kubo's --max-file-links); at least 2.
	MaxLinks int
	// Layout is LayoutBalanced or LayoutTrickle.
	Layout Layout

	// HAMTThreshold is the estimated directory block size in bytes above
	// which a directory is sharded (a directory exactly at the threshold
	// stays basic). 0 turns size-based sharding off.
	HAMTThreshold int
	// HAMTSizeEstimation says how that size is estimated.
	HAMTSizeEstimation SizeEstimation
	// HAMTFanout is the width of each HAMT shard: a power of two from 8 to 1024.
	HAMTFanout int
	// DirMaxLinks, when above 0, shards any directory with more entries
	// (Kubo's --max-directory-links). 0 leaves the decision to the size rule.
	DirMaxLinks int

	// Hidden includes files and directories whose names start with a dot
	// when AddPath reads a directory. Like Kubo (without --hidden), they are
	// left out by default. It does not change how anything is encoded.
	Hidden bool
}

// Profile names, as in Kubo's config profiles and IPIP-499.
const (
	// ProfileV1_2025 is the unixfs-v1-2025 profile and weft's default.
	ProfileV1_2025 = "unixfs-v1-2025"
	// ProfileV0_2015 is the unixfs-v0-2015 profile: Kubo's defaults until
	// v0.40, which made the CIDv0 "Qm..." identifiers.
	ProfileV0_2015 = "unixfs-v0-2015"
	// ProfileLegacyCIDv0 is Kubo's other name for ProfileV0_2015.
	ProfileLegacyCIDv0 = "legacy-cid-v0"
)

var profiles = map[string]func() Options{
	ProfileV1_2025:     func() Options { return fromBoxo(uio.UnixFS_v1_2025) },
	ProfileV0_2015:     func() Options { return fromBoxo(uio.UnixFS_v0_2015) },
	ProfileLegacyCIDv0: func() Options { return fromBoxo(uio.UnixFS_v0_2015) },
}

// DefaultOptions returns the unixfs-v1-2025 settings: CIDv1, sha2-256, raw
// leaves, 1 MiB chunks, balanced layout, 1024 links per file node, and
// directories sharded (fanout 256) once their block would pass 256 KiB.
func DefaultOptions() Options { return profiles[ProfileV1_2025]() }

// Profile returns the Options of a named import profile: ProfileV1_2025,
// ProfileV0_2015 or its alias ProfileLegacyCIDv0.
func Profile(name string) (Options, error) {
	p, ok := profiles[name]
	if !ok {
		names := make([]string, 0, len(profiles))
		for n := range profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		return Options{}, fmt.Errorf("%w: unknown profile %q (known: %s)", ErrInvalidOptions, name, strings.Join(names, ", "))
	}
	return p(), nil
}

// fromBoxo converts one of boxo's IPIP-499 profiles, so that the numbers live
// in one place.
func fromBoxo(p uio.UnixFSProfile) Options {
	est := EstimateLinks
	switch p.HAMTSizeEstimation {
	case uio.SizeEstimationBlock:
		est = EstimateBlock
	case uio.SizeEstimationDisabled:
		est = EstimateDisabled
	}
	return Options{
		CIDVersion:         p.CIDVersion,
		Hash:               mh.Codes[p.MhType],
		RawLeaves:          p.RawLeaves,
		ChunkSize:          p.ChunkSize,
		MaxLinks:           p.FileDAGWidth,
		Layout:             LayoutBalanced,
		HAMTThreshold:      p.HAMTShardingSize,
		HAMTSizeEstimation: est,
		HAMTFanout:         p.HAMTShardWidth,
	}
}

// Validate reports every setting that is out of range or conflicts with
// another, joined in one error; each wraps ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.CIDVersion != 0 && o.CIDVersion != 1 {
		bad("CID version %d: must be 0 or 1", o.CIDVersion)
	}
	if code, err := hashCode(o.Hash); err != nil {
		errs = append(errs, err)
	} else if o.CIDVersion == 0 && code != mh.SHA2_256 {
		bad("hash %q needs CID version 1 (CIDv0 is sha2-256 only)", o.Hash)
	}
	if o.ChunkSize < 1 || o.ChunkSize > int64(chunker.ChunkSizeLimit) {
		bad("chunk size %d: must be from 1 to %d bytes", o.ChunkSize, chunker.ChunkSizeLimit)
	}
	if o.MaxLinks < 2 {
		bad("max links %d: a file node needs at least 2", o.MaxLinks)
	}
	if o.Layout != LayoutBalanced && o.Layout != LayoutTrickle {
		bad("layout %q: must be %q or %q", o.Layout, LayoutBalanced, LayoutTrickle)
	}
	if o.HAMTThreshold < 0 {
		bad("HAMT threshold %d: must not be negative", o.HAMTThreshold)
	}
	switch o.HAMTSizeEstimation {
	case EstimateLinks, EstimateBlock, EstimateDisabled:
	default:
		bad("HAMT size estimation %q: must be %q, %q or %q", o.HAMTSizeEstimation, EstimateLinks, EstimateBlock, EstimateDisabled)
	}
	if f := o.HAMTFanout; f < 8 || f > 1024 || f&(f-1) != 0 {
		bad("HAMT fanout %d: must be a power of 2 from 8 to 1024", f)
	}
	if o.DirMaxLinks < 0 {
		bad("directory max links %d: must not be negative", o.DirMaxLinks)
	}
	return errors.Join(errs...)
}

// hashCode resolves a multihash name to its code, refusing names that are
// unknown, not implemented here, or not allowed for IPFS content.
func hashCode(name string) (uint64, error) {
	code, ok := mh.Names[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("%w: unknown hash %q", ErrInvalidOptions, name)
	}
	if !verifcid.DefaultAllowlist.IsAllowed(code) || code == mh.IDENTITY {
		return 0, fmt.Errorf("%w: hash %q is not allowed for content", ErrInvalidOptions, name)
	}
	if _, err := mh.GetHasher(code); err != nil {
		return 0, fmt.Errorf("%w: hash %q is not implemented: %w", ErrInvalidOptions, name, err)
	}
	return code, nil
}

// prefix is the CID prefix of dag-pb blocks; raw leaves take the same one
// with the raw codec (and always version 1).
func (o Options) prefix() cid.Prefix {
	if o.CIDVersion == 0 {
		return mdag.V0CidPrefix()
	}
	code, _ := hashCode(o.Hash) // checked by Validate
	return cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: code, MhLength: -1}
}

// dirOptions configures a boxo directory from o alone, never from boxo's
// process-wide defaults (uio.HAMTShardingSize and friends), so imports with
// different Options can run at the same time.
func (o Options) dirOptions() []uio.DirectoryOption {
	est := uio.SizeEstimationLinks
	switch o.HAMTSizeEstimation {
	case EstimateBlock:
		est = uio.SizeEstimationBlock
	case EstimateDisabled:
		est = uio.SizeEstimationDisabled
	}
	threshold := o.HAMTThreshold
	if threshold == 0 {
		// boxo reads a per-directory threshold of 0 as "use the global one".
		// Estimation off and an unreachable threshold say "no size rule"
		// whatever the globals hold.
		est = uio.SizeEstimationDisabled
		threshold = math.MaxInt
	}
	return []uio.DirectoryOption{
		uio.WithCidBuilder(o.prefix()),
		uio.WithMaxLinks(o.DirMaxLinks),
		uio.WithMaxHAMTFanout(o.HAMTFanout),
		uio.WithSizeEstimationMode(est),
		func(d uio.Directory) { d.SetHAMTShardingSize(threshold) },
	}
}
