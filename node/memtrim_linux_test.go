package node

import "testing"

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
