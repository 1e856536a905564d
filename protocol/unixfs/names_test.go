package unixfs

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"...", true}, {".hidden", true}, {"a b", true}, {`back\slash`, true}, {"ünï", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"/abs", false}, {"../x", false},
		{"x/", false}, {"a\x00b", false},
	} {
		err := ValidName(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadName)) {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// A hostile name is quoted safely and cut short in the error.
	long := strings.Repeat("\x1b[2J", 1000) + "/"
	err := ValidName(long)
	if err == nil || len(err.Error()) > 2*maxQuotedName+len(ErrBadName.Error())+8 || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("error for a long hostile name: %q", err)
	}
}

// listTree lists every path below dir with its kind and, for symlinks, target.
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
			t.Errorf("%s: %s appeared (%s)", what, p, k)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s vanished", what, p)
		}
	}
}

// TestHostileDAGs reads DAGs whose entry names try to escape: Ls, Stat
// and Get refuse each, naming the entry, and Get writes nothing anywhere.
func TestHostileDAGs(t *testing.T) {
	ctx := context.Background()
	outside := t.TempDir()
	hs, err := unixfstest.HostileDAGs(outside)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		t.Run(h.Name, func(t *testing.T) {
			dag := memDAG()
			for _, b := range h.Blocks {
				nd, err := decodeAny(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := dag.Add(ctx, nd); err != nil {
					t.Fatal(err)
				}
			}
			quoted := QuoteName(h.Bad)
			check := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, ErrBadName) || !strings.Contains(err.Error(), quoted) {
					t.Errorf("%s: %v, want ErrBadName naming %s", op, err, quoted)
				}
			}
			if h.Name == "nested-dotdot" {
				if _, err := Ls(ctx, dag, h.Root); err != nil {
					t.Errorf("ls of the good top level: %v", err)
				}
			} else {
				_, err := Ls(ctx, dag, h.Root)
				check("ls", err)
				_, err = Stat(ctx, dag, h.Root)
				check("stat", err)
			}
			base := t.TempDir()
			before, beforeOut := listTree(t, base), listTree(t, outside)
			check("get", Get(ctx, dag, h.Root, filepath.Join(base, "out")))
			sameTree(t, "get's parent", before, listTree(t, base))
			sameTree(t, "the outside dir", beforeOut, listTree(t, outside))
		})
	}
}
