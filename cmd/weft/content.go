package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	stdpath "path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/files"
	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// progress draws a one-line progress bar on stderr when it is a terminal,
// at most ten times a second; on a pipe it draws nothing.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	label string
	total int64
	last  time.Time
	start time.Time
}

func newProgress(w io.Writer, label string, total int64) *progress {
	on := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, on: on, label: label, total: total, start: time.Now()}
}

func (p *progress) set(n int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && n < p.total {
		return
	}
	p.last = time.Now()
	rate := float64(n) / time.Since(p.start).Seconds()
	if p.total > 0 {
		frac := float64(n) / float64(p.total)
		if frac > 1 {
			frac = 1
		}
		bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(".", 30-int(frac*30))
		fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %s/%s %s/s ", p.label, bar, frac*100, humanBytes(n), humanBytes(p.total), humanBytes(int64(rate)))
	} else {
		fmt.Fprintf(p.w, "\r%s %s %s/s ", p.label, humanBytes(n), humanBytes(int64(rate)))
	}
}

func (p *progress) done() {
	if p.on {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func addContentCommands(root *cobra.Command, o *clientOpts) []*cobra.Command {
	return []*cobra.Command{newAddCmd(o), newCatCmd(o), newGetCmd(o), newLsCmd(o), newStatCmd(o), newPinCmd(o),
		newCarCmd(o), newProvidersCmd(o), newGCCmd(o)}
}

func newAddCmd(o *clientOpts) *cobra.Command {
	var (
		recursive, quiet, noPin, hidden bool
		profile, hash, name             string
		chunkSize                       string
		cidVersion, maxLinks            int
		rawLeaves                       bool
	)
	cmd := &cobra.Command{
		Use:   "add PATH|-",
		Short: "Add a file, a directory (-r) or stdin (-) and print its CID (Kubo-compatible UnixFS)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			f := cmd.Flags()
			if profile != "" {
				q.Set("profile", profile)
			}
			if f.Changed("chunk-size") {
				q.Set("chunk-size", chunkSize)
			}
			if f.Changed("cid-version") {
				q.Set("cid-version", fmt.Sprint(cidVersion))
			}
			if f.Changed("raw-leaves") {
				q.Set("raw-leaves", fmt.Sprint(rawLeaves))
			}
			if f.Changed("max-links") {
				q.Set("max-links", fmt.Sprint(maxLinks))
			}
			if f.Changed("hash") {
				q.Set("hash", hash)
			}
			if noPin {
				q.Set("pin", "false")
			}
			if hidden {
				q.Set("hidden", "true")
			}
			var nd files.Node
			var total int64
			label := args[0]
			rootName := ""
			if args[0] == "-" {
				nd = files.NewReaderFile(cmd.InOrStdin())
				label = "stdin"
			} else {
				st, err := os.Stat(args[0])
				if err != nil {
					return fmt.Errorf("add: %w", err)
				}
				if st.IsDir() && !recursive {
					return fmt.Errorf("add: %s is a directory: use -r", args[0])
				}
				nd, err = files.NewSerialFile(args[0], hidden, st)
				if err != nil {
					return fmt.Errorf("add: %w", err)
				}
				if st.IsDir() {
					rootName = filepath.Base(filepath.Clean(args[0]))
				}
				total, _ = nd.Size()
			}
			if name != "" {
				q.Set("name", name)
			}
			ctx, cancel := o.cmdContext(cmd.CommandPath())
			defer cancel()
			bar := newProgress(cmd.ErrOrStderr(), "adding "+label, total)
			out := cmd.OutOrStdout()
			var events []api.AddEvent
			rootCID, err := c.Add(ctx, nd, q, func(ev api.AddEvent) {
				if o.json {
					events = append(events, ev)
					return
				}
				if recursive && !quiet {
					bar.done()
					fmt.Fprintf(out, "added %s %s\n", ev.CID, path(rootName, ev.Path))
				}
			}, bar.set)
			bar.done()
			if err != nil {
				return explainAPIError(err)
			}
			if o.json {
				return printJSON(out, map[string]any{"cid": rootCID, "entries": events})
			}
			if recursive && !quiet && rootName != "" {
				fmt.Fprintf(out, "added %s %s\n", rootCID, rootName)
				return nil
			}
			fmt.Fprintln(out, rootCID)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&recursive, "recursive", "r", false, "add a directory tree")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the root CID")
	f.BoolVar(&noPin, "no-pin", false, "do not pin the result (it is then collectable by gc)")
	f.BoolVar(&hidden, "hidden", false, "include files whose names start with a dot")
	f.StringVar(&profile, "profile", "", "import profile: unixfs-v1-2025 (default), unixfs-v0-2015, legacy-cid-v0")
	f.StringVar(&chunkSize, "chunk-size", "", "chunk size in bytes (e.g. 262144, 1MiB, size-262144)")
	f.IntVar(&cidVersion, "cid-version", 1, "CID version, 0 or 1 (1 implies --raw-leaves unless set)")
	f.BoolVar(&rawLeaves, "raw-leaves", true, "store file data in raw leaves")
	f.IntVar(&maxLinks, "max-links", 1024, "maximum links per file node")
	f.StringVar(&hash, "hash", "sha2-256", "hash function: sha2-256 or blake3 (non-sha2 implies CIDv1)")
	f.StringVar(&name, "name", "", "pin name")
	return cmd
}

func path(root, p string) string {
	if root == "" {
		return p
	}
	return root + "/" + p
}

func newCatCmd(o *clientOpts) *cobra.Command {
	var offset, length int64
	cmd := &cobra.Command{
		Use:   "cat CID",
		Short: "Write a file's bytes to stdout, fetching from the swarm if needed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(func(ctx context.Context, c *api.Client) error {
				r, err := c.Cat(ctx, args[0], offset, length)
				if err != nil {
					return err
				}
				return copyStream(cmd.OutOrStdout(), r, "cat "+args[0])
			})
		},
	}
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this byte")
	cmd.Flags().Int64Var(&length, "length", -1, "read at most this many bytes")
	return cmd
}

func newGetCmd(o *clientOpts) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get CID -o PATH",
		Short: "Write a file or directory tree to PATH, fetching from the swarm if needed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				out = filepath.Base(args[0]) // the CID, also from /ipfs/CID
			}
			out = filepath.Clean(out)
			if _, err := os.Lstat(out); err == nil {
				return fmt.Errorf("get: %s already exists; pick another -o", out)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.cmdContext(cmd.CommandPath())
			defer cancel()
			r, err := c.Get(ctx, args[0], filepath.Base(out))
			if err != nil {
				return explainAPIError(err)
			}
			defer r.Close()
			undo, err := makeParents(filepath.Dir(out))
			if err != nil {
				return fmt.Errorf("get: %w", err)
			}
			bar := newProgress(cmd.ErrOrStderr(), "fetching "+args[0], 0)
			n, err := extractTar(r, out, bar.set)
			bar.done()
			if err != nil {
				undo()
				return fmt.Errorf("get %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved %s to %s (%s)\n", args[0], out, humanBytes(n))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write (default: ./CID)")
	return cmd
}

// makeParents makes dir and its missing parents (as -o a/b/out asks), and
// returns a function that removes what it made, for a get that failed.
func makeParents(dir string) (undo func(), err error) {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return func() {
		for _, d := range made { // deepest first; each is empty by now
			_ = os.Remove(d)
		}
	}, nil
}

// extractTar writes the tar stream of `weft get` to out, which must not
// exist: the first entry is out itself (named by its base name), every
// later one lies below it. The stream is hostile until checked: each path
// element must pass unixfs.ValidName, each entry's parent must be a
// directory this call made, and every entry is created new (Mkdir, O_EXCL,
// Symlink) through an os.Root on out, so nothing lands outside out and
// nothing is written through a symlink (one is recreated as a symlink; its
// target is only text). On error, out is removed: a failed get leaves
// nothing behind. It returns the file bytes written.
func extractTar(r io.Reader, out string, onBytes func(int64)) (total int64, err error) {
	out = filepath.Clean(out)
	parent, err := os.OpenRoot(filepath.Dir(out))
	if err != nil {
		return 0, err
	}
	defer parent.Close()
	x := &extractor{parent: parent, base: filepath.Base(out), dirs: map[string]bool{}, onBytes: onBytes}
	defer func() {
		if x.root != nil {
			x.root.Close()
		}
		if err != nil && x.made {
			_ = parent.RemoveAll(x.base) // removes a symlink, never follows one
		}
	}()
	tr := tar.NewReader(r)
	for first := true; ; first = false {
		h, err := tr.Next()
		if err == io.EOF {
			if first {
				return 0, errors.New("empty archive")
			}
			return x.total, nil
		}
		if err != nil {
			return x.total, err
		}
		name := strings.TrimSuffix(h.Name, "/")
		rel, err := tarEntryPath(name, x.base)
		if err != nil {
			return x.total, err
		}
		if first != (rel == "") {
			return x.total, fmt.Errorf("refusing entry %s: out of order", unixfs.QuoteName(name))
		}
		if !first && !x.dirs[parentDir(rel)] {
			return x.total, fmt.Errorf("refusing entry %s: its parent is not a directory this get made", unixfs.QuoteName(name))
		}
		if err := x.entry(h, tr, rel, first); err != nil {
			var se streamError
			if errors.As(err, &se) { // the daemon's error, not this entry's
				return x.total, se.error
			}
			return x.total, fmt.Errorf("entry %s: %w", unixfs.QuoteName(name), err)
		}
	}
}

// extractor is the state of one extractTar.
type extractor struct {
	parent, root *os.Root // -o's parent; -o once it is a directory made here
	base         string   // -o's name in parent
	made         bool     // -o exists: remove it on error
	dirs         map[string]bool
	total        int64
	onBytes      func(int64)
}

// entry creates one checked entry: rel is its slash path below -o ("" and
// first for -o itself), its parent a directory made here.
func (x *extractor) entry(h *tar.Header, r io.Reader, rel string, first bool) error {
	switch h.Typeflag {
	case tar.TypeDir:
		if first {
			if err := x.parent.Mkdir(x.base, 0o755); err != nil {
				return err
			}
			x.made = true
			var err error
			if x.root, err = x.parent.OpenRoot(x.base); err != nil {
				return err
			}
		} else if err := x.root.Mkdir(rel, 0o755); err != nil {
			return err
		}
		x.dirs[rel] = true
	case tar.TypeReg:
		var f *os.File
		var err error
		if first {
			f, err = x.parent.OpenFile(x.base, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		} else {
			f, err = x.root.OpenFile(rel, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		}
		if err != nil {
			return err
		}
		x.made = true
		n, err := io.Copy(f, streamReader{r})
		x.total += n
		if x.onBytes != nil {
			x.onBytes(x.total)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	case tar.TypeSymlink:
		var err error
		if first {
			err = x.parent.Symlink(h.Linkname, x.base)
		} else {
			err = x.root.Symlink(h.Linkname, rel)
		}
		if err != nil {
			return err
		}
		x.made = true
	default:
		return fmt.Errorf("unsupported tar type %q", h.Typeflag)
	}
	return nil
}

// streamError is a failure to read the archive (the daemon cut the stream
// and said why), as opposed to one writing an entry.
type streamError struct{ error }

// streamReader marks its reader's errors as streamErrors.
type streamReader struct{ r io.Reader }

func (s streamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = streamError{err}
	}
	return n, err
}

// parentDir is the directory of a slash path, "" at the top.
func parentDir(rel string) string {
	if d := stdpath.Dir(rel); d != "." {
		return d
	}
	return ""
}

// tarEntryPath checks a tar entry's name (without a trailing slash), which
// must be base or lie below it, and returns its slash path below base ("" for base itself).
func tarEntryPath(name, base string) (string, error) {
	if name == base {
		return "", nil
	}
	rest, ok := strings.CutPrefix(name, base+"/")
	if !ok {
		return "", fmt.Errorf("refusing entry %s: not under %s", unixfs.QuoteName(name), unixfs.QuoteName(base))
	}
	for _, el := range strings.Split(rest, "/") {
		if err := unixfs.ValidName(el); err != nil {
			return "", fmt.Errorf("refusing entry %s: %w", unixfs.QuoteName(name), err)
		}
	}
	return rest, nil
}

func newLsCmd(o *clientOpts) *cobra.Command {
	return clientCmd(o, "ls CID", "List a directory", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.Ls(ctx, a[0]) },
		func(w io.Writer, v any) {
			t := newTable(w)
			for _, e := range v.([]api.LsEntry) {
				name := e.Name
				if e.Type == "directory" {
					name += "/"
				}
				fmt.Fprintf(t, "%s\t%d\t%s\n", e.CID, e.Size, name)
			}
			t.Flush()
		})
}

func newStatCmd(o *clientOpts) *cobra.Command {
	return clientCmd(o, "stat CID", "Describe an object: type, sizes, links, local and pinned", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.Stat(ctx, a[0]) },
		func(w io.Writer, v any) {
			s := v.(api.ObjectStat)
			t := newTable(w)
			fmt.Fprintf(t, "cid\t%s\ntype\t%s\nsize\t%d\ncumulative size\t%d\nblock size\t%d\nlinks\t%d\nlocal\t%v\npinned\t%v\n",
				s.CID, s.Type, s.Size, s.CumulativeSize, s.BlockSize, s.Links, s.Local, s.Pinned)
			if s.Sharded {
				fmt.Fprintf(t, "sharded\ttrue\n")
			}
			t.Flush()
		})
}

func newPinCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "pin", Short: "Keep content from gc: add, rm, ls"}
	var direct bool
	var name string
	add := clientCmd(o, "add CID", "Fetch (if needed) and pin a DAG", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.PinAdd(ctx, a[0], !direct, name)
		},
		func(w io.Writer, v any) { p := v.(api.PinEntry); fmt.Fprintf(w, "pinned %s %s\n", p.CID, p.Mode) })
	add.Flags().BoolVar(&direct, "direct", false, "pin only this block, not the DAG below it")
	add.Flags().StringVar(&name, "name", "", "a label for the pin")
	rm := clientCmd(o, "rm CID", "Unpin (the blocks become collectable)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return map[string]string{"unpinned": a[0]}, c.PinRm(ctx, a[0])
		},
		func(w io.Writer, v any) { fmt.Fprintf(w, "unpinned %s\n", v.(map[string]string)["unpinned"]) })
	ls := clientCmd(o, "ls", "List pins", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.PinLs(ctx) },
		func(w io.Writer, v any) {
			t := newTable(w)
			for _, p := range v.([]api.PinEntry) {
				fmt.Fprintf(t, "%s\t%s\t%s\n", p.CID, p.Mode, p.Name)
			}
			t.Flush()
		})
	cmd.AddCommand(add, rm, ls)
	return cmd
}

func newCarCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "car", Short: "Export or import CAR archives"}
	export := &cobra.Command{
		Use:   "export CID",
		Short: "Write a CARv1 of the DAG under CID to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(func(ctx context.Context, c *api.Client) error {
				r, err := c.CarExport(ctx, args[0])
				if err != nil {
					return err
				}
				return copyStream(cmd.OutOrStdout(), r, "car export")
			})
		},
	}
	var noPin bool
	imp := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Store every block of a CAR (verified against its CID) and pin its roots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("car import: %w", err)
				}
				defer f.Close()
				r = f
			}
			ctx, cancel := o.cmdContext(cmd.CommandPath())
			defer cancel()
			res, err := c.CarImport(ctx, r, !noPin)
			if err != nil {
				return explainAPIError(err)
			}
			if o.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d blocks\n", res.Blocks)
			for _, root := range res.Roots {
				fmt.Fprintf(cmd.OutOrStdout(), "root %s\n", root)
			}
			return nil
		},
	}
	imp.Flags().BoolVar(&noPin, "no-pin", false, "do not pin the roots")
	cmd.AddCommand(export, imp)
	return cmd
}

func newProvidersCmd(o *clientOpts) *cobra.Command {
	var max, found int
	cmd := clientCmd(o, "providers CID", "Find peers that provide CID, through the DHT (exit 1 when none is found)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			ps, err := c.Providers(ctx, a[0], max)
			found = len(ps)
			return ps, err
		},
		func(w io.Writer, v any) {
			for _, p := range v.([]api.PeerInfo) {
				fmt.Fprintln(w, p.ID)
			}
		})
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		if err := run(cmd, a); err != nil {
			return err
		}
		if found == 0 {
			return &exitError{1, errors.New("no providers found")}
		}
		return nil
	}
	cmd.Flags().IntVar(&max, "max", 20, "stop after this many providers")
	return cmd
}

func newGCCmd(o *clientOpts) *cobra.Command {
	return clientCmd(o, "gc", "Delete unpinned blocks and give the disk space back (the node keeps serving)", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.GC(ctx) },
		func(w io.Writer, v any) {
			g := v.(api.GCResult)
			fmt.Fprintf(w, "freed %d blocks (%s); %d live blocks; disk %s -> %s in %.1fs\n",
				g.BlocksFreed, humanBytes(g.BytesFreed), g.LiveBlocks, humanBytes(g.DiskBefore), humanBytes(g.DiskAfter), g.Seconds)
		})
}
