package main

import (
	"fmt"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/weft-p2p/weft/node/nodetest"
)

// writeGen writes the generated input (seed, size) to path.
func writeGen(t testing.TB, path, seed string, size int64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, unixfstest.NewInput(seed, size)); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// profileSetting is the setting that stands for a whole import profile: it
// maps onto no flags at all, since it is weft's default.
const profileSetting = "unixfs-v1-2025"

// legacyProfile is the base of every other setting. Those settings were
// made with Kubo's add flags on a repo with Kubo's default import config,
// which is unixfs-v0-2015 in what the flags leave out (the HAMT rule: size
// estimated from links); weft's default profile estimates it from the
// block, which shards the 6,000-entry directory differently.
const legacyProfile = "unixfs-v0-2015"

// flags turns a setting into `weft add` flags.
func settingFlags(s unixfstest.Settings, name string) []string {
	if name == profileSetting {
		return nil
	}
	return []string{
		"--profile", legacyProfile,
		"--cid-version", strconv.Itoa(s.CIDVersion),
		"--raw-leaves=" + strconv.FormatBool(s.RawLeaves),
		"--chunk-size", strconv.FormatInt(s.ChunkSize, 10),
		"--max-links", strconv.Itoa(s.MaxLinks),
		"--hash", s.Hash,
	}
}

// TestAddKuboVectors adds every input of kubo-cids.json with the real CLI,
// through the HTTP API of a running node, under every setting listed for
// it, and checks that `weft add` prints the CID Kubo printed.
func TestAddKuboVectors(t *testing.T) {
	v := unixfstest.LoadVectors(t)
	n := nodetest.Start(t, nodetest.Options{})
	repo := n.Repo().Path
	inputs := t.TempDir()

	add := func(t *testing.T, setting, path string, dir bool) string {
		t.Helper()
		s, ok := v.Settings[setting]
		if !ok {
			t.Fatalf("setting %q not described in the JSON", setting)
		}
		args := []string{"add", "--repo", repo}
		if dir {
			args = append(args, "-r", "-q")
		}
		args = append(args, settingFlags(s, setting)...)
		args = append(args, path)
		code, out, stderr := weft(t, args...)
		if code != 0 {
			t.Fatalf("weft %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return strings.TrimSpace(out)
	}
	check := func(t *testing.T, setting, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s (Kubo flags: %s): weft add printed %q, Kubo %s gives %s",
				setting, v.Settings[setting].KuboFlags, got, v.KuboVersion, want)
		}
	}

	for _, f := range v.Files {
		t.Run(fmt.Sprintf("file/%s-%d", f.Seed, f.Size), func(t *testing.T) {
			if testing.Short() && f.Size > 16<<20 {
				t.Skip("large input; run without -short")
			}
			path := filepath.Join(inputs, "files", f.Seed)
			writeGen(t, path, f.Seed, f.Size)
			defer os.Remove(path)
			for _, setting := range unixfstest.SortedKeys(f.CIDs) {
				check(t, setting, add(t, setting, path, false), f.CIDs[setting])
			}
		})
	}

	for _, d := range v.Directories {
		t.Run("dir/"+d.Name, func(t *testing.T) {
			root := filepath.Join(inputs, "dirs", d.Name)
			switch {
			case len(d.Entries) > 0:
				for _, e := range d.Entries {
					p := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(e.Path, "/")))
					if e.Dir {
						if err := os.MkdirAll(p, 0o755); err != nil {
							t.Fatal(err)
						}
						continue
					}
					writeGen(t, p, e.Seed, e.Size)
				}
			case strings.HasPrefix(d.EntriesRule, "6000 files named f00000 .. f05999"):
				for i := range 6000 {
					writeGen(t, filepath.Join(root, fmt.Sprintf("f%05d", i)), fmt.Sprintf("wide-%d", i), 10)
				}
			default:
				t.Fatalf("directory vector %q: unknown entries_rule %q", d.Name, d.EntriesRule)
			}
			for _, setting := range unixfstest.SortedKeys(d.CIDs) {
				check(t, setting, add(t, setting, root, true), d.CIDs[setting])
			}
		})
	}
}
