package unixfs

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// genReader streams the bytes of shared/testdata/make-input.py: the
// concatenation of sha256(seed + ":" + k) for k = 0, 1, ..., cut to size.
// It holds one digest at a time, so a 50 MiB input costs no memory.
type genReader struct {
	prefix []byte // seed + ":"
	left   int64
	k      int64
	block  [sha256.Size]byte
	off    int // read offset in block; len(block) when it is used up
	msg    []byte
}

func newGen(seed string, size int64) *genReader {
	return &genReader{prefix: []byte(seed + ":"), left: size, off: sha256.Size}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n := 0
	for n < len(p) {
		if g.off == sha256.Size {
			g.msg = strconv.AppendInt(append(g.msg[:0], g.prefix...), g.k, 10)
			g.block = sha256.Sum256(g.msg)
			g.k++
			g.off = 0
		}
		c := copy(p[n:], g.block[g.off:])
		g.off += c
		n += c
	}
	g.left -= int64(n)
	return n, nil
}

// nullDAG is a DAGService that keeps nothing: an import into it computes
// CIDs only, like `ipfs add --only-hash`.
type nullDAG struct{}

func (nullDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (nullDAG) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

func (nullDAG) Add(context.Context, ipld.Node) error        { return nil }
func (nullDAG) AddMany(context.Context, []ipld.Node) error  { return nil }
func (nullDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (nullDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }

var _ ipld.DAGService = nullDAG{}

// memDAG returns boxo's in-memory DAGService: merkledag over a blockservice
// over a map blockstore.
func memDAG() ipld.DAGService { return mdtest.Mock() }

// repoRoot walks up from the package directory to the module root.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the package directory")
		}
		dir = parent
	}
}

func mustCid(t testing.TB, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return c
}
