package unixfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// FileReader streams a file's bytes. It fetches blocks as the reader
// advances, a few ahead, so memory does not grow with the file. Seek makes
// ranges cheap: only the blocks on the path to the offset are fetched.
type FileReader interface {
	io.ReadSeekCloser
	io.WriterTo
	// Size is the file's length in bytes.
	Size() uint64
}

// Cat opens the file at c for reading. Reads use ctx to fetch blocks, so
// cancelling it fails them; Close releases the reader. A directory or a
// symlink gives ErrNotFile.
func Cat(ctx context.Context, dag ipld.DAGService, c cid.Cid) (FileReader, error) {
	nd, err := dag.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("cat %s: %w", c, err)
	}
	r, err := uio.NewDagReader(ctx, nd, dag)
	switch {
	case errors.Is(err, uio.ErrIsDir), errors.Is(err, uio.ErrCantReadSymlinks):
		return nil, fmt.Errorf("cat %s: %w (%w)", c, ErrNotFile, err)
	case errors.Is(err, uio.ErrUnkownNodeType), errors.Is(err, ft.ErrUnrecognizedType):
		return nil, fmt.Errorf("cat %s: %w (%w)", c, ErrUnsupported, err)
	case err != nil:
		return nil, fmt.Errorf("cat %s: %w", c, err)
	}
	return r, nil
}

// Get writes the file, directory tree or symlink at c to outPath, which
// must not exist yet. Files are streamed to disk. Every entry name is
// checked with ValidName before anything is made from it, all writes go
// through an os.Root on outPath's parent, and each entry is created new
// (O_EXCL, Mkdir) inside a directory this call made, so nothing is ever
// written through a symlink, whatever the DAG holds. Symlinks are recreated
// as symlinks with their target as stored (it is only text; Get never
// follows it). After an error, Get removes what it wrote.
func Get(ctx context.Context, dag ipld.DAGService, c cid.Cid, outPath string) (err error) {
	ctx, cancel := context.WithCancel(ctx) // stops boxo's directory walkers on return
	defer cancel()
	parent, base := filepath.Split(filepath.Clean(outPath))
	if err := ValidName(base); err != nil {
		return fmt.Errorf("get %s to %s: output path: %w", c, outPath, err)
	}
	if parent == "" {
		parent = "."
	}
	root, err := os.OpenRoot(parent)
	if err != nil {
		return fmt.Errorf("get %s to %s: %w", c, outPath, err)
	}
	defer root.Close()
	g := &getter{ctx: ctx, dag: dag, root: root}
	defer func() {
		if err != nil && g.made {
			_ = root.RemoveAll(base) // removes symlinks, never follows them
		}
	}()
	if err := g.write(c, base, ""); err != nil {
		return fmt.Errorf("get %s to %s: %w", c, outPath, err)
	}
	return nil
}

// getter writes a DAG below an os.Root. Paths are slash-separated and
// relative to the root.
type getter struct {
	ctx  context.Context
	dag  ipld.DAGService
	root *os.Root
	made bool // the output path exists: remove it on error
}

// write writes the DAG at c to rel; entry is rel below the output path,
// for errors ("" for the output path itself).
func (g *getter) write(c cid.Cid, rel, entry string) error {
	where := func(err error) error {
		if err == nil || entry == "" {
			return err
		}
		return fmt.Errorf("entry %s: %w", QuoteName(entry), err)
	}
	nd, err := g.dag.Get(g.ctx, c)
	if err != nil {
		return where(err)
	}
	fsn, err := kind(nd)
	if err != nil {
		return where(err)
	}
	switch {
	case fsn != nil && fsn.Type() == ft.TSymlink:
		target, err := symlinkTarget(fsn)
		if err != nil {
			return where(err)
		}
		if err := g.root.Symlink(target, rel); err != nil {
			return where(err)
		}
		g.made = true
		return nil
	case fsn != nil && (fsn.Type() == ft.TDirectory || fsn.Type() == ft.THAMTShard):
		dir, err := uio.NewDirectoryFromNode(g.dag, nd)
		if err != nil {
			return where(err)
		}
		if err := g.root.Mkdir(rel, 0o755); err != nil {
			return where(err)
		}
		g.made = true
		seen := map[string]struct{}{}
		return dir.ForEachLink(g.ctx, func(l *ipld.Link) error {
			err := ValidName(l.Name)
			if _, dup := seen[l.Name]; dup && err == nil {
				err = fmt.Errorf("%w %s: it comes twice", ErrBadName, QuoteName(l.Name))
			}
			if err != nil {
				if entry == "" {
					return err
				}
				return fmt.Errorf("in %s: %w", QuoteName(entry), err)
			}
			seen[l.Name] = struct{}{}
			return g.write(l.Cid, rel+"/"+l.Name, path.Join(entry, l.Name))
		})
	default: // a file or a raw block
		r, err := uio.NewDagReader(g.ctx, nd, g.dag)
		if err != nil {
			return where(err)
		}
		defer r.Close()
		f, err := g.root.OpenFile(rel, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return where(err)
		}
		g.made = true
		_, err = r.WriteTo(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return where(err)
	}
}

// Readlink returns the target of the symlink at c, as stored: it may be
// absolute or point anywhere, so a caller must never write through it.
// Anything but a symlink gives ErrNotSymlink.
func Readlink(ctx context.Context, dag ipld.NodeGetter, c cid.Cid) (string, error) {
	nd, err := dag.Get(ctx, c)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", c, err)
	}
	fsn, err := kind(nd)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", c, err)
	}
	if fsn == nil || fsn.Type() != ft.TSymlink {
		return "", fmt.Errorf("readlink %s: %w", c, ErrNotSymlink)
	}
	target, err := symlinkTarget(fsn)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", c, err)
	}
	return target, nil
}

// maxSymlinkTarget is PATH_MAX on Linux: no file system takes a longer one.
const maxSymlinkTarget = 4096

// symlinkTarget checks a symlink node's target: one no file system could
// hold (empty, with a NUL, longer than PATH_MAX) is refused.
func symlinkTarget(fsn *ft.FSNode) (string, error) {
	t := string(fsn.Data())
	if t == "" || len(t) > maxSymlinkTarget || strings.ContainsRune(t, 0) {
		return "", fmt.Errorf("%w %s", ErrBadSymlink, QuoteName(t))
	}
	return t, nil
}

// Entry is one entry of a directory.
type Entry struct {
	Name string
	CID  cid.Cid
	Type Type
	// Size is the bytes of content: a file's length, a symlink target's
	// length, 0 for a directory.
	Size uint64
	// CumulativeSize is the size of the entry's whole DAG as its link
	// records it, what fetching it all would move.
	CumulativeSize uint64
}

// Ls lists the directory at c, sorted by name; sharded directories are
// walked whole. Each entry's root block is fetched (concurrently, through
// GetMany) to learn its type and size, except raw blocks, whose link says
// both. A file gives ErrNotDirectory.
func Ls(ctx context.Context, dag ipld.DAGService, c cid.Cid) ([]Entry, error) {
	nd, err := dag.Get(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("ls %s: %w", c, err)
	}
	dir, err := uio.NewDirectoryFromNode(dag, nd)
	if errors.Is(err, uio.ErrNotADir) {
		return nil, fmt.Errorf("ls %s: %w", c, ErrNotDirectory)
	}
	if err != nil {
		return nil, fmt.Errorf("ls %s: %w", c, err)
	}
	links, err := dir.Links(ctx)
	if err != nil {
		return nil, fmt.Errorf("ls %s: %w", c, err)
	}
	if err := validNames(links, 0); err != nil {
		return nil, fmt.Errorf("ls %s: %w", c, err)
	}

	type info struct {
		typ  Type
		size uint64
	}
	infos := make(map[cid.Cid]info, len(links))
	var fetch []cid.Cid
	for _, l := range links {
		if l.Cid.Prefix().Codec == cid.Raw {
			infos[l.Cid] = info{TypeFile, l.Size}
		} else if _, ok := infos[l.Cid]; !ok {
			infos[l.Cid] = info{}
			fetch = append(fetch, l.Cid)
		}
	}
	// Only each node's type and size are kept, so a directory of large
	// single-block files does not sit in memory all at once.
	for res := range dag.GetMany(ctx, fetch) {
		if res.Err != nil {
			return nil, fmt.Errorf("ls %s: %w", c, res.Err)
		}
		st, err := stat(res.Node)
		if err != nil {
			return nil, fmt.Errorf("ls %s: entry %s: %w", c, res.Node.Cid(), err)
		}
		infos[res.Node.Cid()] = info{st.Type, st.Size}
	}
	if err := ctx.Err(); err != nil { // GetMany stops early, silently, on cancel
		return nil, fmt.Errorf("ls %s: %w", c, err)
	}

	out := make([]Entry, len(links))
	for i, l := range links {
		in := infos[l.Cid]
		if in.typ == "" {
			return nil, fmt.Errorf("ls %s: entry %q (%s): %w", c, l.Name, l.Cid, ipld.ErrNotFound{Cid: l.Cid})
		}
		out[i] = Entry{Name: l.Name, CID: l.Cid, Type: in.typ, Size: in.size, CumulativeSize: l.Size}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// StatResult describes the root of a UnixFS DAG.
type StatResult struct {
	CID  cid.Cid
	Type Type
	// Sharded is true for a HAMT-sharded directory.
	Sharded bool
	// Size is the bytes of content: a file's length, a symlink target's
	// length, 0 for a directory.
	Size uint64
	// CumulativeSize is the root block's size plus the sizes its links
	// record: the bytes of the whole DAG (Kubo's CumulativeSize).
	CumulativeSize uint64
	// BlockSize is the root block's size in bytes.
	BlockSize int
	// Links counts the root block's links: chunks or inner nodes of a file,
	// entries of a basic directory, shards and entries of a HAMT's top
	// level (Kubo calls it Blocks).
	Links int
	// Mode and ModTime are set only when the DAG records them.
	Mode    os.FileMode
	ModTime time.Time
}

// Stat describes the DAG at c from its root block alone.
func Stat(ctx context.Context, dag ipld.DAGService, c cid.Cid) (StatResult, error) {
	nd, err := dag.Get(ctx, c)
	if err != nil {
		return StatResult{}, fmt.Errorf("stat %s: %w", c, err)
	}
	st, err := stat(nd)
	if err == nil && st.Type == TypeDirectory {
		err = rootNames(nd, st.Sharded)
	}
	if err != nil {
		return StatResult{}, fmt.Errorf("stat %s: %w", c, err)
	}
	return st, nil
}

// rootNames checks the entry names a directory's root block holds: all of
// a basic directory's, the top level of a sharded one. A shard's links are
// named by a hex index of fixed width, the entry's name after it; a link
// of just the index is a sub-shard.
func rootNames(nd ipld.Node, sharded bool) error {
	prefix := 0
	if sharded {
		fsn, err := kind(nd)
		if err != nil {
			return err
		}
		if fo := fsn.Fanout(); fo > 1 {
			prefix = len(strconv.FormatUint(fo-1, 16))
		}
	}
	return validNames(nd.Links(), prefix)
}

func stat(nd ipld.Node) (StatResult, error) {
	fsn, err := kind(nd)
	if err != nil {
		return StatResult{}, err
	}
	cum, err := nd.Size()
	if err != nil {
		return StatResult{}, err
	}
	st := StatResult{
		CID:            nd.Cid(),
		Type:           TypeFile,
		CumulativeSize: cum,
		BlockSize:      len(nd.RawData()),
		Links:          len(nd.Links()),
	}
	if fsn == nil { // raw block
		st.Size = uint64(len(nd.RawData()))
		return st, nil
	}
	st.Mode, st.ModTime = fsn.Mode(), fsn.ModTime()
	switch fsn.Type() {
	case ft.TFile, ft.TRaw:
		st.Size = fsn.FileSize()
	case ft.TDirectory:
		st.Type = TypeDirectory
	case ft.THAMTShard:
		st.Type, st.Sharded = TypeDirectory, true
	case ft.TSymlink:
		st.Type, st.Size = TypeSymlink, uint64(len(fsn.Data()))
	}
	return st, nil
}

// validNames checks a directory's entry names, each after a prefix of
// prefix bytes (a HAMT shard's hex index; links of just the prefix are
// sub-shards and skipped): each must pass ValidName, and no name may come
// twice, since the second would be written over or through the first.
func validNames(links []*ipld.Link, prefix int) error {
	seen := make(map[string]struct{}, len(links))
	for _, l := range links {
		if prefix > 0 && len(l.Name) <= prefix {
			continue
		}
		name := l.Name[prefix:]
		if err := ValidName(name); err != nil {
			return err
		}
		if _, dup := seen[name]; dup {
			return fmt.Errorf("%w %s: it comes twice", ErrBadName, QuoteName(name))
		}
		seen[name] = struct{}{}
	}
	return nil
}

// kind checks that nd is a UnixFS node of a type this package reads and
// returns its UnixFS data, or nil for a raw block.
func kind(nd ipld.Node) (*ft.FSNode, error) {
	switch nd := nd.(type) {
	case *mdag.RawNode:
		return nil, nil
	case *mdag.ProtoNode:
		fsn, err := ft.FSNodeFromBytes(nd.Data())
		if err != nil {
			return nil, fmt.Errorf("%w: dag-pb without UnixFS data: %w", ErrUnsupported, err)
		}
		switch fsn.Type() {
		case ft.TFile, ft.TRaw, ft.TDirectory, ft.THAMTShard, ft.TSymlink:
			return fsn, nil
		}
		return nil, fmt.Errorf("%w: UnixFS type %s", ErrUnsupported, fsn.Type())
	default:
		return nil, fmt.Errorf("%w: codec %#x", ErrUnsupported, nd.Cid().Prefix().Codec)
	}
}
