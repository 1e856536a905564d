package unixfstest

import (
	"io"
	"strings"
	"testing"
)

// TestInput checks the generator against the example kubo-cids.json gives,
// and that the stream does not depend on read sizes.
func TestInput(t *testing.T) {
	v := LoadVectors(t)
	if !strings.Contains(v.Generator, "sha256(f'{seed}:{k}'") {
		t.Fatalf("the JSON's generator changed, update Input: %q", v.Generator)
	}
	b, err := io.ReadAll(NewInput("one", 1))
	if err != nil || len(b) != 1 || b[0] != 0x73 {
		t.Fatalf("seed one, size 1: got %x, %v; want 73", b, err)
	}
	whole, _ := io.ReadAll(NewInput("x", 1000))
	var pieces []byte
	g := NewInput("x", 1000)
	buf := make([]byte, 7)
	for {
		n, err := g.Read(buf)
		pieces = append(pieces, buf[:n]...)
		if err == io.EOF {
			break
		}
	}
	if string(whole) != string(pieces) || len(whole) != 1000 {
		t.Fatal("generator output depends on read sizes")
	}
}
