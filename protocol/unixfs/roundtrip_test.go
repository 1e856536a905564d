package unixfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ipfs/boxo/files"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// small returns options with tiny chunks and narrow nodes, so that a few
// KiB make a DAG several levels deep.
func small(base Options) Options {
	base.ChunkSize = 1000
	base.MaxLinks = 3
	return base
}

func TestFileRoundTrip(t *testing.T) {
	ctx := context.Background()
	v0, _ := Profile(ProfileV0_2015)
	trickle := DefaultOptions()
	trickle.Layout = LayoutTrickle
	blake := DefaultOptions()
	blake.Hash = "blake3"
	settings := map[string]Options{
		"v1-2025":       small(DefaultOptions()),
		"v0-2015":       small(v0),
		"trickle":       small(trickle),
		"blake3":        small(blake),
		"v1-2025-1MiB":  DefaultOptions(),
		"v0-raw-leaves": func() Options { o := small(v0); o.RawLeaves = true; return o }(),
	}
	for name, opts := range settings {
		for _, size := range []int64{0, 1, 999, 1000, 1001, 3000, 9001, 27_500} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				dag := memDAG()
				want, _ := io.ReadAll(unixfstest.NewInput("rt", size))
				var last int64
				c, err := AddFile(ctx, dag, bytes.NewReader(want), opts, func(n int64) {
					if n <= last {
						t.Errorf("progress went from %d to %d", last, n)
					}
					last = n
				})
				if err != nil {
					t.Fatal(err)
				}
				if last != size {
					t.Errorf("progress ended at %d, want %d", last, size)
				}

				r, err := Cat(ctx, dag, c)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if r.Size() != uint64(size) {
					t.Errorf("Size() = %d, want %d", r.Size(), size)
				}
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("cat: %d bytes, %v; want the %d bytes added", len(got), err, size)
				}
				// Ranges, as an HTTP Range request would read them.
				rng := rand.New(rand.NewPCG(uint64(size), 1))
				for range 5 {
					if size == 0 {
						break
					}
					off := rng.Int64N(size)
					n := rng.Int64N(size - off + 1)
					if _, err := r.Seek(off, io.SeekStart); err != nil {
						t.Fatal(err)
					}
					part, err := io.ReadAll(io.LimitReader(r, n))
					if err != nil || !bytes.Equal(part, want[off:off+n]) {
						t.Fatalf("range %d+%d: %v", off, n, err)
					}
				}

				st, err := Stat(ctx, dag, c)
				if err != nil {
					t.Fatal(err)
				}
				if st.Type != TypeFile || st.Size != uint64(size) || st.CID != c || st.CumulativeSize < uint64(size) {
					t.Errorf("stat = %+v", st)
				}
			})
		}
	}
}

// TestDirectoryRoundTrip adds a tree from disk and checks that Get writes it
// back identically, and that Ls and Stat describe it.
func TestDirectoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	write := func(rel string, size int64) {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(unixfstest.NewInput(rel, size))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", 5000)
	write("sub/b.bin", 4500)
	write("sub/deeper/c", 1)
	write("zero", 0)
	write(".hidden", 10)
	write("sub/.hidden-too", 10)
	if err := os.MkdirAll(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/b.bin", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}

	for _, hidden := range []bool{false, true} {
		t.Run(fmt.Sprintf("hidden=%v", hidden), func(t *testing.T) {
			dag := memDAG()
			opts := small(DefaultOptions())
			opts.Hidden = hidden
			var added []Event
			var progress int64
			root, err := AddPath(ctx, dag, src, opts, func(e Event) {
				switch e.Kind {
				case EventAdded:
					added = append(added, e)
				case EventProgress:
					progress = e.Bytes
				}
			})
			if err != nil {
				t.Fatal(err)
			}

			wantPaths := []string{"a.txt", "emptydir", "link", "sub", "sub/b.bin", "sub/deeper", "sub/deeper/c", "zero", ""}
			wantBytes := int64(5000 + 4500 + 1)
			if hidden {
				wantPaths = append(wantPaths, ".hidden", "sub/.hidden-too")
				wantBytes += 20
			}
			var paths []string
			for _, e := range added {
				paths = append(paths, e.Path)
			}
			const linkTarget = int64(len("sub/b.bin"))
			if last := added[len(added)-1]; last.Path != "" || last.CID != root || last.Type != TypeDirectory || int64(last.Size) != wantBytes+linkTarget {
				t.Errorf("last event = %+v, want the root %s with %d bytes", last, root, wantBytes+linkTarget)
			}
			sort.Strings(paths)
			sort.Strings(wantPaths)
			if strings.Join(paths, ",") != strings.Join(wantPaths, ",") {
				t.Errorf("added %q, want %q", paths, wantPaths)
			}
			if progress != wantBytes {
				t.Errorf("progress ended at %d, want %d", progress, wantBytes)
			}

			out := filepath.Join(t.TempDir(), "out")
			if err := Get(ctx, dag, root, out); err != nil {
				t.Fatal(err)
			}
			if got, want := snapshot(t, out, true), snapshot(t, src, hidden); got != want {
				t.Errorf("get wrote\n%s\nwant\n%s", got, want)
			}

			entries, err := Ls(ctx, dag, root)
			if err != nil {
				t.Fatal(err)
			}
			var ls []string
			for _, e := range entries {
				ls = append(ls, fmt.Sprintf("%s %s %d", e.Name, e.Type, e.Size))
			}
			wantLs := "a.txt file 5000,emptydir directory 0,link symlink 9,sub directory 0,zero file 0"
			if hidden {
				wantLs = ".hidden file 10," + wantLs
			}
			if strings.Join(ls, ",") != wantLs {
				t.Errorf("ls = %q, want %q", ls, wantLs)
			}

			st, err := Stat(ctx, dag, root)
			if err != nil {
				t.Fatal(err)
			}
			if st.Type != TypeDirectory || st.Sharded || st.Links != len(entries) || st.Size != 0 {
				t.Errorf("stat = %+v", st)
			}
			if _, err := Cat(ctx, dag, root); !errors.Is(err, ErrNotFile) {
				t.Errorf("cat of a directory: %v, want ErrNotFile", err)
			}
			if _, err := Ls(ctx, dag, entries[len(entries)-1].CID); !errors.Is(err, ErrNotDirectory) {
				t.Errorf("ls of a file: %v, want ErrNotDirectory", err)
			}
			if err := Get(ctx, dag, root, out); err == nil {
				t.Error("get over an existing path succeeded")
			}
		})
	}
}

// snapshot describes a tree on disk: each path, its kind, and a hash of its
// content or its link target.
func snapshot(t *testing.T, root string, hidden bool) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if !hidden && strings.HasPrefix(d.Name(), ".") && rel != "." {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, rel+" -> "+target)
		case d.IsDir():
			lines = append(lines, rel+"/")
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("%s %x", rel, sha256.Sum256(b)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// TestShardedDirectory checks the 6,000-entry directory both ways Kubo
// builds it: sharded under unixfs-v1-2025, one block under the legacy
// link-size estimate, and that it reads back either way.
func TestShardedDirectory(t *testing.T) {
	ctx := context.Background()
	legacy := DefaultOptions()
	legacy.HAMTSizeEstimation = EstimateLinks
	legacy.MaxLinks = 174
	for _, tc := range []struct {
		name    string
		opts    Options
		sharded bool
	}{
		{"block-estimate", DefaultOptions(), true},
		{"links-estimate", legacy, false},
		{"dir-max-links", func() Options { o := DefaultOptions(); o.HAMTThreshold = 0; o.DirMaxLinks = 100; return o }(), true},
		{"no-sharding", func() Options { o := DefaultOptions(); o.HAMTThreshold = 0; return o }(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dag := memDAG()
			root, err := AddNode(ctx, dag, wideDir(t, "6000 files named f00000 .. f05999"), tc.opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Stat(ctx, dag, root)
			if err != nil {
				t.Fatal(err)
			}
			if st.Type != TypeDirectory || st.Sharded != tc.sharded {
				t.Fatalf("stat = %+v, want sharded=%v", st, tc.sharded)
			}
			entries, err := Ls(ctx, dag, root)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 6000 {
				t.Fatalf("ls gave %d entries", len(entries))
			}
			for i, e := range entries {
				if want := fmt.Sprintf("f%05d", i); e.Name != want || e.Type != TypeFile || e.Size != 10 {
					t.Fatalf("entry %d = %+v, want %s, a 10-byte file", i, e, want)
				}
			}
			if tc.name != "block-estimate" {
				return
			}
			out := filepath.Join(t.TempDir(), "wide")
			if err := Get(ctx, dag, root, out); err != nil {
				t.Fatal(err)
			}
			for _, i := range []int{0, 4242, 5999} {
				b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("f%05d", i)))
				want, _ := io.ReadAll(unixfstest.NewInput(fmt.Sprintf("wide-%d", i), 10))
				if err != nil || !bytes.Equal(b, want) {
					t.Fatalf("f%05d: %x, %v", i, b, err)
				}
			}
			names, _ := os.ReadDir(out)
			if len(names) != 6000 {
				t.Fatalf("get wrote %d files", len(names))
			}
		})
	}
}

// TestMultipart adds a directory the way the HTTP API receives it: as a
// multipart stream read once, in order. It must give the same CID as the
// same tree added directly.
func TestMultipart(t *testing.T) {
	ctx := context.Background()
	build := func() files.Directory {
		tr := newTree()
		tr.file("a.txt", "tree-a", 5000)
		tr.file("sub/b.bin", "tree-b", 200_000)
		tr.file("sub/deeper/c", "tree-c", 1)
		tr.file("zero", "", 0)
		tr.dir("emptydir")
		return tr.node()
	}
	want, err := AddNode(ctx, nullDAG{}, build(), DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}

	body := files.NewMultiFileReader(build(), true, false)
	ctype := "multipart/form-data; boundary=" + body.Boundary()
	mediatype, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := files.NewFileFromPartReader(multipart.NewReader(body, params["boundary"]), mediatype)
	if err != nil {
		t.Fatal(err)
	}
	dag := memDAG()
	got, err := AddNode(ctx, dag, dir, DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("multipart gave %s, direct add %s", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, name := range []string{ProfileV1_2025, ProfileV0_2015, ProfileLegacyCIDv0} {
		o, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Profile("nope"); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), ProfileV1_2025) {
		t.Errorf("unknown profile: %v", err)
	}
	v0, _ := Profile(ProfileV0_2015)
	if v0.CIDVersion != 0 || v0.RawLeaves || v0.ChunkSize != 256<<10 || v0.MaxLinks != 174 || v0.HAMTSizeEstimation != EstimateLinks {
		t.Errorf("unixfs-v0-2015 = %+v", v0)
	}
	d := DefaultOptions()
	if d.CIDVersion != 1 || !d.RawLeaves || d.ChunkSize != 1<<20 || d.MaxLinks != 1024 || d.Hash != "sha2-256" ||
		d.Layout != LayoutBalanced || d.HAMTThreshold != 256<<10 || d.HAMTSizeEstimation != EstimateBlock || d.HAMTFanout != 256 {
		t.Errorf("defaults = %+v", d)
	}

	for _, tc := range []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"zero value", func(o *Options) { *o = Options{} }, "chunk size 0"},
		{"cid version", func(o *Options) { o.CIDVersion = 2 }, "CID version 2"},
		{"v0 blake3", func(o *Options) { o.CIDVersion = 0; o.Hash = "blake3" }, "needs CID version 1"},
		{"unknown hash", func(o *Options) { o.Hash = "md5000" }, "unknown hash"},
		{"identity hash", func(o *Options) { o.Hash = "identity" }, "not allowed"},
		{"chunk too big", func(o *Options) { o.ChunkSize = 4 << 20 }, "chunk size"},
		{"one link", func(o *Options) { o.MaxLinks = 1 }, "max links 1"},
		{"layout", func(o *Options) { o.Layout = "spiral" }, "layout"},
		{"fanout", func(o *Options) { o.HAMTFanout = 100 }, "fanout 100"},
		{"threshold", func(o *Options) { o.HAMTThreshold = -1 }, "threshold"},
		{"estimation", func(o *Options) { o.HAMTSizeEstimation = "guess" }, "estimation"},
		{"dir links", func(o *Options) { o.DirMaxLinks = -1 }, "directory max links"},
	} {
		o := DefaultOptions()
		tc.change(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalidOptions mentioning %q", tc.name, err, tc.want)
		}
		if _, err2 := AddFile(context.Background(), nullDAG{}, strings.NewReader("x"), o, nil); !errors.Is(err2, ErrInvalidOptions) {
			t.Errorf("%s: AddFile accepted invalid options: %v", tc.name, err2)
		}
	}
}

func TestAddCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	opts := small(DefaultOptions())
	_, err := AddFile(ctx, nullDAG{}, unixfstest.NewInput("c", 1<<20), opts, func(n int64) {
		if n > 10_000 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("add after cancel: %v, want context.Canceled", err)
	}
}

// TestBadNames: names that would escape the output directory are refused
// on the way in and on the way out.
func TestBadNames(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"..", ".", "a/b", ""} {
		dir := files.NewSliceDirectory([]files.DirEntry{files.FileEntry(name, files.NewBytesFile([]byte("x")))})
		if _, err := AddNode(ctx, nullDAG{}, dir, DefaultOptions(), nil); !errors.Is(err, ErrBadName) {
			t.Errorf("add entry %q: %v, want ErrBadName", name, err)
		}
	}

	// The error names the failing entry once, however deep.
	nested := files.NewMapDirectory(map[string]files.Node{
		"sub": files.NewSliceDirectory([]files.DirEntry{files.FileEntry("..", files.NewBytesFile(nil))}),
	})
	_, err := AddNode(ctx, nullDAG{}, nested, DefaultOptions(), nil)
	if want := `add sub/..: invalid entry name ".."`; err == nil || err.Error() != want {
		t.Errorf("nested bad name: %v, want %q", err, want)
	}

	// A hostile DAG: a directory whose entry is named "..".
	dag := memDAG()
	leaf := mdag.NewRawNode([]byte("pwned"))
	dir := ft.EmptyDirNode()
	if err := dir.AddNodeLink("..", leaf); err != nil {
		t.Fatal(err)
	}
	if err := dag.AddMany(ctx, []ipld.Node{leaf, dir}); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	if err := Get(ctx, dag, dir.Cid(), filepath.Join(base, "out")); err == nil {
		t.Fatal("get of an entry named .. succeeded")
	}
	if _, err := os.Stat(filepath.Join(base, "pwned")); err == nil {
		t.Fatal("get wrote outside its directory")
	}
}
