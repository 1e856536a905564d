package node

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestReleaseBinaryPages: the test binary's file-backed pages are read,
// and releasing them leaves fewer mapped.
func TestReleaseBinaryPages(t *testing.T) {
	before := binaryRSS()
	if before <= 0 {
		t.Fatalf("binaryRSS = %d, want > 0", before)
	}
	released, err := releaseBinaryPages()
	if err != nil {
		t.Fatal(err)
	}
	if released <= 0 {
		t.Fatalf("released %d bytes of mappings", released)
	}
	if after := binaryRSS(); after >= before {
		t.Fatalf("file-backed RSS %d after the release, %d before", after, before)
	}
}

// binaryRSS is the process's file-backed resident memory (RssFile in
// /proc/self/status), which for weft is almost all the binary's pages; 0
// if it cannot be read.
func binaryRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kib << 10
		}
	}
	return 0
}
