package unixfs

import (
	"context"
	"fmt"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
	"strconv"
	"strings"
	"testing"

	"github.com/ipfs/boxo/files"
)

// options maps a settings entry onto Options. Fields the entry leaves out
// keep Kubo's defaults of the time, which are the unixfs-v0-2015 ones.
func settingOptions(t *testing.T, s unixfstest.Settings) Options {
	t.Helper()
	o, err := Profile(ProfileV0_2015)
	if err != nil {
		t.Fatal(err)
	}
	o.CIDVersion, o.RawLeaves, o.ChunkSize, o.Hash, o.MaxLinks = s.CIDVersion, s.RawLeaves, s.ChunkSize, s.Hash, s.MaxLinks
	if s.Layout != "" {
		o.Layout = Layout(s.Layout)
	}
	if s.HAMTThreshold != "" {
		o.HAMTThreshold = parseBytes(t, s.HAMTThreshold)
	}
	if s.HAMTSizeEstimation != "" {
		o.HAMTSizeEstimation = SizeEstimation(s.HAMTSizeEstimation)
	}
	if s.HAMTFanout != 0 {
		o.HAMTFanout = s.HAMTFanout
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return o
}

func parseBytes(t *testing.T, s string) int {
	t.Helper()
	mult := 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("size %q: %v", s, err)
	}
	return n * mult
}

// TestKuboVectors checks that every input in kubo-cids.json, added with
// every setting listed for it, gives the CID Kubo gave.
func TestKuboVectors(t *testing.T) {
	v := unixfstest.LoadVectors(t)
	ctx := context.Background()
	opts := make(map[string]Options)
	for name, s := range v.Settings {
		opts[name] = settingOptions(t, s)
	}
	optsFor := func(t *testing.T, setting string) Options {
		o, ok := opts[setting]
		if !ok {
			t.Fatalf("setting %q not described in the JSON", setting)
		}
		return o
	}

	for _, f := range v.Files {
		t.Run(fmt.Sprintf("file/%s-%d", f.Seed, f.Size), func(t *testing.T) {
			t.Parallel()
			for _, setting := range unixfstest.SortedKeys(f.CIDs) {
				want := f.CIDs[setting]
				got, err := AddFile(ctx, nullDAG{}, unixfstest.NewInput(f.Seed, f.Size), optsFor(t, setting), nil)
				if err != nil {
					t.Fatalf("%s: %v", setting, err)
				}
				if got.String() != want {
					t.Errorf("%s: got %s, Kubo %s gives %s", setting, got, v.KuboVersion, want)
				}
			}
		})
	}

	for _, d := range v.Directories {
		t.Run("dir/"+d.Name, func(t *testing.T) {
			t.Parallel()
			for _, setting := range unixfstest.SortedKeys(d.CIDs) {
				want := d.CIDs[setting]
				var root files.Directory
				switch {
				case len(d.Entries) > 0:
					tree := newTree()
					for _, e := range d.Entries {
						if e.Dir {
							tree.dir(strings.TrimSuffix(e.Path, "/"))
						} else {
							tree.file(e.Path, e.Seed, e.Size)
						}
					}
					root = tree.node()
				case d.EntriesRule != "":
					root = wideDir(t, d.EntriesRule)
				default:
					t.Fatal("directory vector with neither entries nor entries_rule")
				}
				got, err := AddNode(ctx, nullDAG{}, root, optsFor(t, setting), nil)
				if err != nil {
					t.Fatalf("%s: %v", setting, err)
				}
				if got.String() != want {
					t.Errorf("%s: got %s, Kubo %s gives %s", setting, got, v.KuboVersion, want)
				}
			}
		})
	}
}

// wideDir builds the 6,000-entry directory whose rule the JSON states.
func wideDir(t *testing.T, rule string) files.Directory {
	t.Helper()
	const n = 6000
	if !strings.HasPrefix(rule, "6000 files named f00000 .. f05999") {
		t.Fatalf("unknown entries_rule %q", rule)
	}
	entries := make([]files.DirEntry, n)
	for i := range n {
		entries[i] = files.FileEntry(fmt.Sprintf("f%05d", i), files.NewReaderFile(unixfstest.NewInput(fmt.Sprintf("wide-%d", i), 10)))
	}
	return files.NewSliceDirectory(entries)
}

// tree builds a files.Directory from slash-separated paths; file contents
// are generated as they are read.
type tree struct {
	entries map[string]files.Node
	subdirs map[string]*tree
}

func newTree() *tree {
	return &tree{entries: map[string]files.Node{}, subdirs: map[string]*tree{}}
}

func (tr *tree) dir(path string) *tree {
	if path == "" {
		return tr
	}
	first, rest, _ := strings.Cut(path, "/")
	sub, ok := tr.subdirs[first]
	if !ok {
		sub = newTree()
		tr.subdirs[first] = sub
	}
	return sub.dir(rest)
}

func (tr *tree) file(path, seed string, size int64) {
	dir, name := "", path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		dir, name = path[:i], path[i+1:]
	}
	tr.dir(dir).entries[name] = files.NewReaderFile(unixfstest.NewInput(seed, size))
}

func (tr *tree) node() files.Directory {
	m := make(map[string]files.Node, len(tr.entries)+len(tr.subdirs))
	for name, n := range tr.entries {
		m[name] = n
	}
	for name, sub := range tr.subdirs {
		m[name] = sub.node()
	}
	return files.NewMapDirectory(m)
}
