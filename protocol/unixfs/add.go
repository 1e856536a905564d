package unixfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/files"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/ipld/unixfs/importer/trickle"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// EventKind tells what an Event reports.
type EventKind int

const (
	// EventProgress reports file bytes read so far; only Bytes is set (and
	// Path, the file being read).
	EventProgress EventKind = iota + 1
	// EventAdded reports an entry whose blocks are all written: Path, Type,
	// CID and Size are set.
	EventAdded
)

// Event reports the progress of an add.
type Event struct {
	Kind EventKind
	// Path is the entry's slash-separated path below the added root; the
	// root itself is "".
	Path string
	// Type is TypeFile, TypeDirectory or TypeSymlink.
	Type Type
	// CID is the entry's root.
	CID cid.Cid
	// Size is the entry's content bytes: a file's length, a symlink's
	// target length, or for a directory the sum over its entries.
	Size uint64
	// Bytes counts the file content read so far in the whole add, for a
	// progress bar over the total. It is reported at most once per chunk.
	Bytes int64
}

// AddFile imports the bytes of r as one UnixFS file and returns its root
// CID. It streams: memory use depends on opts (chunk size, links per node),
// not on how much r holds. progress, if not nil, is called with the bytes
// read so far, at most once per chunk, on the calling goroutine.
//
// Blocks go to dag one at a time; to batch writes, pass a batching
// DAGService (such as go-ipld-format's BufferedDAG) and commit it after.
func AddFile(ctx context.Context, dag ipld.DAGService, r io.Reader, opts Options, progress func(n int64)) (cid.Cid, error) {
	var events func(Event)
	if progress != nil {
		events = func(e Event) {
			if e.Kind == EventProgress {
				progress(e.Bytes)
			}
		}
	}
	return AddNode(ctx, dag, files.NewReaderFile(r), opts, events)
}

// AddPath imports the file, directory (recursively) or symlink at path.
// A symlink named by path itself is followed; symlinks found inside a
// directory are stored as UnixFS symlinks, as Kubo does. Names starting
// with a dot are skipped unless opts.Hidden is set. See AddNode for events.
func AddPath(ctx context.Context, dag ipld.DAGService, path string, opts Options, events func(Event)) (cid.Cid, error) {
	if err := opts.Validate(); err != nil {
		return cid.Undef, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", path, err)
	}
	filter, err := files.NewFilter("", nil, opts.Hidden)
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", path, err)
	}
	nd, err := files.NewSerialFileWithOptions(path, st, files.SerialFileOptions{Filter: filter})
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", path, err)
	}
	return AddNode(ctx, dag, nd, opts, events)
}

// AddNode imports a boxo files.Node: a files.File, a files.Directory (its
// entries in turn), or a *files.Symlink. That covers a path on disk
// (files.NewSerialFile), a multipart upload (files.NewFileFromPartReader,
// read once, in order, without buffering), or a tree built in memory
// (files.NewMapDirectory). AddNode closes nd and every node below it.
//
// Directories are built bottom-up, each one finished when its last entry
// is, and are HAMT-sharded by opts as Kubo would. Empty directories and
// empty files are kept.
//
// events, if not nil, is called on the calling goroutine for progress and
// once per entry added (EventAdded), children before their directory and
// the root last; it must not block for long.
func AddNode(ctx context.Context, dag ipld.DAGService, nd files.Node, opts Options, events func(Event)) (cid.Cid, error) {
	if err := opts.Validate(); err != nil {
		nd.Close()
		return cid.Undef, err
	}
	if events == nil {
		events = func(Event) {}
	}
	a := &adder{ctx: ctx, dag: dag, opts: opts, prefix: opts.prefix(), events: events}
	root, _, err := a.add("", nd)
	if err != nil {
		return cid.Undef, err
	}
	return root.Cid(), nil
}

// adder carries one import's settings and running byte count.
type adder struct {
	ctx    context.Context
	dag    ipld.DAGService
	opts   Options
	prefix cid.Prefix
	events func(Event)
	read   int64
}

// add imports nd at path and closes it; it returns the entry's root node
// and its content bytes.
func (a *adder) add(path string, nd files.Node) (ipld.Node, uint64, error) {
	defer nd.Close()
	if err := a.ctx.Err(); err != nil {
		return nil, 0, err
	}
	var (
		root ipld.Node
		size uint64
		typ  Type
		err  error
	)
	switch nd := nd.(type) {
	case files.Directory:
		typ = TypeDirectory
		root, size, err = a.addDir(path, nd)
	case *files.Symlink: // before files.File, which it also implements
		typ = TypeSymlink
		root, size, err = a.addSymlink(nd)
	case files.File:
		typ = TypeFile
		root, size, err = a.addFile(path, nd)
	default:
		err = fmt.Errorf("%w: %T", ErrUnsupported, nd)
	}
	if err != nil {
		// Name the deepest entry that failed, once: errors from entries
		// below, or from reading a file on disk, carry a path already.
		var pe *fs.PathError
		if path != "" && !errors.As(err, &pe) {
			err = &fs.PathError{Op: "add", Path: path, Err: err}
		}
		return nil, 0, err
	}
	a.events(Event{Kind: EventAdded, Path: path, Type: typ, CID: root.Cid(), Size: size})
	return root, size, nil
}

func (a *adder) addFile(path string, r io.Reader) (ipld.Node, uint64, error) {
	var src chunker.Splitter = chunker.NewSizeSplitter(r, a.opts.ChunkSize)
	var builder cid.Builder = a.prefix
	// Raw leaves of a useful size are hashed ahead, on the other cores (see
	// prehash.go).
	if a.opts.RawLeaves && a.opts.ChunkSize >= 16<<10 && runtime.GOMAXPROCS(0) > 1 {
		ph := newPrehash(src, a.prefix, a.opts.ChunkSize)
		defer ph.close()
		src, builder = ph, prehashBuilder{inner: a.prefix, p: ph}
	}
	spl := &progressSplitter{
		Splitter: src,
		a:        a,
		path:     path,
	}
	params := helpers.DagBuilderParams{
		Dagserv:    a.dag,
		RawLeaves:  a.opts.RawLeaves,
		Maxlinks:   a.opts.MaxLinks,
		CidBuilder: builder,
	}
	db, err := params.New(spl)
	if err != nil {
		return nil, 0, err
	}
	var nd ipld.Node
	if a.opts.Layout == LayoutTrickle {
		nd, err = trickle.Layout(db)
	} else {
		nd, err = balanced.Layout(db)
	}
	if err != nil {
		return nil, 0, err
	}
	return nd, spl.n, nil
}

// progressSplitter counts the bytes the importer takes, reports them, and
// stops the import once the context is done.
type progressSplitter struct {
	chunker.Splitter
	a    *adder
	path string
	n    uint64
}

func (s *progressSplitter) NextBytes() ([]byte, error) {
	if err := s.a.ctx.Err(); err != nil {
		return nil, err
	}
	b, err := s.Splitter.NextBytes()
	if len(b) > 0 {
		s.n += uint64(len(b))
		s.a.read += int64(len(b))
		s.a.events(Event{Kind: EventProgress, Path: s.path, Bytes: s.a.read})
	}
	return b, err
}

func (a *adder) addSymlink(l *files.Symlink) (ipld.Node, uint64, error) {
	data, err := ft.SymlinkData(l.Target)
	if err != nil {
		return nil, 0, err
	}
	nd := mdag.NodeWithData(data)
	if err := nd.SetCidBuilder(a.prefix); err != nil {
		return nil, 0, err
	}
	if err := a.dag.Add(a.ctx, nd); err != nil {
		return nil, 0, err
	}
	return nd, uint64(len(l.Target)), nil
}

func (a *adder) addDir(path string, d files.Directory) (ipld.Node, uint64, error) {
	dir, err := uio.NewDirectory(a.dag, a.opts.dirOptions()...)
	if err != nil {
		return nil, 0, err
	}
	var size uint64
	it := d.Entries()
	for it.Next() {
		name := it.Name()
		childPath := name
		if path != "" {
			childPath = path + "/" + name // not path.Join, which would clean a bad name away
		}
		if err := ValidName(name); err != nil {
			it.Node().Close()
			return nil, 0, &fs.PathError{Op: "add", Path: childPath, Err: err}
		}
		child, n, err := a.add(childPath, it.Node())
		if err != nil {
			return nil, 0, err
		}
		if err := dir.AddChild(a.ctx, name, child); err != nil {
			return nil, 0, err
		}
		size += n
	}
	if err := it.Err(); err != nil {
		return nil, 0, err
	}
	nd, err := dir.GetNode() // a sharded directory writes its inner shards here
	if err != nil {
		return nil, 0, err
	}
	if err := a.dag.Add(a.ctx, nd); err != nil {
		return nil, 0, err
	}
	return nd, size, nil
}
