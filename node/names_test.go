package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestGetNameParam: the name a tar export is put under comes from the
// request and heads every path in the archive, so it must be one valid
// path element.
func TestGetNameParam(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	c := addBytes(t, n, []byte("hello"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := nodetest.Client(n)
	for _, name := range []string{"..", "../x", "/etc/x", "a/b", ".", "a\x00b"} {
		r, err := cl.Get(ctx, c.String(), name)
		var se *api.StatusError
		if err == nil {
			r.Close()
		}
		if !errors.As(err, &se) || se.Code != 400 {
			t.Errorf("get with name %q: %v, want a 400", name, err)
		}
	}
	r, err := cl.Get(ctx, c.String(), "fine.txt")
	if err != nil {
		t.Fatalf("get with a good name: %v", err)
	}
	r.Close()
}
