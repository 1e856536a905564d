package main

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// listTree lists every path below dir (dir included) with its kind and,
// for a symlink, its target: what a get may have changed.
func listTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		kind := d.Type().String()
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			kind += " -> " + target
		} else if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			kind += " " + string(b)
		}
		out[p] = kind
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, k := range after {
		if before[p] != k {
			t.Errorf("%s: %s appeared or changed (%s)", what, p, k)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s vanished", what, p)
		}
	}
}

// twoNodes starts two connected nodes: a holds the content, b fetches it.
func twoNodes(t *testing.T) (a, b *node.Node) {
	t.Helper()
	a = nodetest.Start(t, nodetest.Options{})
	b = nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Network().Host.Connect(ctx, nodetest.AddrInfo(a)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestGetHostileDAGs imports DAGs whose entry names try to escape (.., ../x,
// an absolute path, a/b, a symlink out followed by a path through it, a
// sharded directory holding ..) by CAR into one daemon, then runs
// `weft get ROOT -o DIR/out` against it and against a second daemon that
// fetches the DAG from the first: each get fails naming the bad entry, and
// neither DIR nor the directory the attacks aim at changes. ls and stat
// refuse the bad directory too.
func TestGetHostileDAGs(t *testing.T) {
	a, b := twoNodes(t)
	ra, rb := a.Repo().Path, b.Repo().Path
	outside := t.TempDir()
	hs, err := unixfstest.HostileDAGs(outside)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		t.Run(h.Name, func(t *testing.T) {
			car, err := h.CAR()
			if err != nil {
				t.Fatal(err)
			}
			carFile := filepath.Join(t.TempDir(), "dag.car")
			if err := os.WriteFile(carFile, car, 0o644); err != nil {
				t.Fatal(err)
			}
			if code, _, stderr := weft(t, "car", "import", "--repo", ra, carFile); code != 0 {
				t.Fatalf("car import: exit %d: %s", code, stderr)
			}
			root := h.Root.String()
			quoted := unixfs.QuoteName(h.Bad)
			for _, repo := range []string{ra, rb} { // imported, then fetched
				dir := t.TempDir()
				before, beforeOut := listTree(t, dir), listTree(t, outside)
				code, _, stderr := weft(t, "get", "--repo", repo, root, "-o", filepath.Join(dir, "new", "parents", "out"))
				if code == 0 || !strings.Contains(stderr, quoted) || !strings.Contains(stderr, "invalid entry name") {
					t.Errorf("get from %s: exit %d, stderr %q; want a failure naming %s", filepath.Base(filepath.Dir(repo)), code, stderr, quoted)
				}
				sameTree(t, "get's parent directory", before, listTree(t, dir))
				sameTree(t, "the directory the attack aims at", beforeOut, listTree(t, outside))
			}
			if h.Name == "nested-dotdot" { // the bad name is one level down
				return
			}
			for _, cmd := range []string{"ls", "stat"} {
				code, _, stderr := weft(t, cmd, "--repo", rb, root)
				if code == 0 || !strings.Contains(stderr, quoted) {
					t.Errorf("%s: exit %d, stderr %q; want a failure naming %s", cmd, code, stderr, quoted)
				}
			}
		})
	}
}

// TestGetSymlinks adds a tree holding symlinks (relative, absolute, one
// that climbs out, one to a directory) with `add -r`, and gets it from
// another daemon: each comes back as a symlink with its target as stored,
// and nothing is written through any of them.
func TestGetSymlinks(t *testing.T) {
	a, b := twoNodes(t)
	outside := t.TempDir()
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(os.WriteFile(filepath.Join(src, "f"), []byte("hello"), 0o644))
	must(os.WriteFile(filepath.Join(src, "d", "g"), []byte("world"), 0o644))
	links := map[string]string{
		"rel":      "f",
		"abs":      filepath.Join(outside, "target"),
		"climb":    "../../../escape",
		"d/up":     "..",
		"d/dangle": "nowhere",
	}
	for name, target := range links {
		must(os.Symlink(target, filepath.Join(src, name)))
	}
	code, out, stderr := weft(t, "add", "-r", "-q", "--repo", a.Repo().Path, src)
	if code != 0 {
		t.Fatalf("add -r: exit %d: %s", code, stderr)
	}
	root := strings.TrimSpace(out)

	for _, repo := range []string{a.Repo().Path, b.Repo().Path} {
		dir := t.TempDir()
		beforeOut := listTree(t, outside)
		dst := filepath.Join(dir, "out")
		if code, _, stderr := weft(t, "get", "--repo", repo, root, "-o", dst); code != 0 {
			t.Fatalf("get: exit %d: %s", code, stderr)
		}
		want, got := map[string]string{}, map[string]string{}
		for p, k := range listTree(t, src) {
			rel, _ := filepath.Rel(src, p)
			want[rel] = k
		}
		for p, k := range listTree(t, dir) {
			if p == dir {
				continue
			}
			rel, _ := filepath.Rel(dst, p)
			got[rel] = k
		}
		sameTree(t, "round trip", want, got)
		sameTree(t, "the directory a symlink points at", beforeOut, listTree(t, outside))
	}
}

// TestExtractTarHostile hands the extractor tar streams a daemon would
// never send (it is the last line of defence): each is refused, naming the
// entry, and nothing is left in the parent of -o or where a symlink points.
func TestExtractTarHostile(t *testing.T) {
	type ent struct {
		name string
		typ  byte
		link string
	}
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []ent
		bad     string
	}{
		{"dotdot", []ent{{"out/", tar.TypeDir, ""}, {"out/../x", tar.TypeReg, ""}}, "out/../x"},
		{"sibling", []ent{{"out/", tar.TypeDir, ""}, {"outx/y", tar.TypeReg, ""}}, "outx/y"},
		{"absolute", []ent{{"out/", tar.TypeDir, ""}, {filepath.Join(outside, "x"), tar.TypeReg, ""}}, filepath.Join(outside, "x")},
		{"symlink-then-path", []ent{{"out/", tar.TypeDir, ""}, {"out/a", tar.TypeSymlink, outside}, {"out/a/passwd", tar.TypeReg, ""}}, "out/a/passwd"},
		{"symlink-then-dir", []ent{{"out/", tar.TypeDir, ""}, {"out/a", tar.TypeSymlink, outside}, {"out/a/", tar.TypeDir, ""}, {"out/a/b", tar.TypeReg, ""}}, "out/a"},
		{"no-parent", []ent{{"out/", tar.TypeDir, ""}, {"out/p/q", tar.TypeReg, ""}}, "out/p/q"},
		{"root-twice", []ent{{"out/", tar.TypeDir, ""}, {"out", tar.TypeReg, ""}}, "out"},
		{"hardlink", []ent{{"out/", tar.TypeDir, ""}, {"out/h", tar.TypeLink, "/etc/passwd"}}, "out/h"},
		{"file-root-then-more", []ent{{"out", tar.TypeReg, ""}, {"out/x", tar.TypeReg, ""}}, "out/x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range tc.entries {
				h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644}
				if e.typ == tar.TypeReg {
					h.Size = 6
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if e.typ == tar.TypeReg {
					tw.Write([]byte("pwned\n"))
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			before, beforeOut := listTree(t, dir), listTree(t, outside)
			_, err := extractTar(&buf, filepath.Join(dir, "out"), nil)
			if err == nil || !strings.Contains(err.Error(), unixfs.QuoteName(tc.bad)) {
				t.Errorf("extract: %v, want an error naming %s", err, unixfs.QuoteName(tc.bad))
			}
			sameTree(t, "parent of -o", before, listTree(t, dir))
			sameTree(t, "symlink target", beforeOut, listTree(t, outside))
		})
	}
}
