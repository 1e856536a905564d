package unixfstest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Vectors is shared/testdata/kubo-cids.json: CIDs Kubo computed for
// deterministic inputs under several import settings.
type Vectors struct {
	KuboVersion string              `json:"kubo_version"`
	Generator   string              `json:"generator"`
	Settings    map[string]Settings `json:"settings"`
	Files       []struct {
		Seed string            `json:"seed"`
		Size int64             `json:"size"`
		CIDs map[string]string `json:"cids"`
	} `json:"files"`
	Directories []struct {
		Name    string `json:"name"`
		Entries []struct {
			Path string `json:"path"`
			Seed string `json:"seed"`
			Size int64  `json:"size"`
			Dir  bool   `json:"dir"`
		} `json:"entries"`
		EntriesRule string            `json:"entries_rule"`
		CIDs        map[string]string `json:"cids"`
	} `json:"directories"`
}

// Settings is one named import setting of the vectors.
type Settings struct {
	CIDVersion         int    `json:"cid_version"`
	RawLeaves          bool   `json:"raw_leaves"`
	ChunkSize          int64  `json:"chunk_size"`
	Hash               string `json:"hash"`
	MaxLinks           int    `json:"max_links"`
	Layout             string `json:"layout"`
	HAMTThreshold      string `json:"hamt_directory_size_threshold"`
	HAMTSizeEstimation string `json:"hamt_size_estimation"`
	HAMTFanout         int    `json:"hamt_fanout"`
	KuboFlags          string `json:"kubo_flags"`
}

// LoadVectors reads the vectors from ../shared/testdata beside the module
// root (the directory holding go.mod, found by walking up from the test's
// working directory).
func LoadVectors(t testing.TB) Vectors {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the package directory")
		}
		dir = parent
	}
	path := filepath.Join(dir, "..", "shared", "testdata", "kubo-cids.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read test vectors: %v", err)
	}
	var v Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if len(v.Files) == 0 || len(v.Directories) == 0 || len(v.Settings) == 0 {
		t.Fatalf("%s: no vectors", path)
	}
	return v
}

// SortedKeys returns m's keys in order, for deterministic subtests.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
