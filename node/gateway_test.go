package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	carv2 "github.com/ipld/go-car/v2"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs"
)

// gwGet sends one request to n's gateway and returns the response with its
// body read.
func gwGet(t *testing.T, n *node.Node, method, urlPath string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.GatewayAddr()+urlPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, urlPath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, urlPath, err)
	}
	return resp, body
}

// TestGatewayServesOtherNodesContent: content added on node A is served
// by node B's gateway, fetched from A: a file, a directory listing, a byte
// range, a CAR whose blocks each match their CIDs and rebuild the file, a
// raw block, and A's feed through /ipns/. The gateway metrics count it.
func TestGatewayServesOtherNodesContent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{Bootstrap: []string{nodetest.Addr(t, a)}})
	if b.GatewayAddr() == "" || !strings.HasPrefix(b.GatewayAddr(), "127.0.0.1:") {
		t.Fatalf("gateway address %q", b.GatewayAddr())
	}
	data := randomBytes(7, 5<<19) // 2.5 MiB: three 1 MiB chunks and a root
	file := addBytes(t, a, data)
	dir, err := a.Add(ctx, files.NewMapDirectory(map[string]files.Node{
		"hello.txt":  files.NewBytesFile([]byte("hello from A\n")),
		"second.bin": files.NewBytesFile(randomBytes(8, 1000)),
	}), unixfs.DefaultOptions(), true, "", nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("byte range", func(t *testing.T) { // first: the blocks are on A only
		from, to := 1<<20-5, 1<<20+99 // across a chunk boundary
		resp, body := gwGet(t, b, http.MethodGet, "/ipfs/"+file.String(), map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", from, to)})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[from:to+1]) {
			t.Fatalf("status %d, %d bytes, equal %v", resp.StatusCode, len(body), bytes.Equal(body, data[from:to+1]))
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", from, to, len(data)); resp.Header.Get("Content-Range") != want {
			t.Fatalf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
		}
	})
	t.Run("file", func(t *testing.T) {
		resp, body := gwGet(t, b, http.MethodGet, "/ipfs/"+file.String(), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("status %d, %d bytes (want %d)", resp.StatusCode, len(body), len(data))
		}
	})
	t.Run("directory listing", func(t *testing.T) {
		resp, body := gwGet(t, b, http.MethodGet, "/ipfs/"+dir.String()+"/", nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
			!bytes.Contains(body, []byte("hello.txt")) || !bytes.Contains(body, []byte("second.bin")) {
			t.Fatalf("status %d, type %q, listing %q", resp.StatusCode, resp.Header.Get("Content-Type"), clipBody(body))
		}
		resp, body = gwGet(t, b, http.MethodGet, "/ipfs/"+dir.String()+"/hello.txt", nil)
		if resp.StatusCode != http.StatusOK || string(body) != "hello from A\n" {
			t.Fatalf("file in dir: status %d, %q", resp.StatusCode, clipBody(body))
		}
	})
	t.Run("CAR", func(t *testing.T) {
		for _, h := range []map[string]string{nil, {"Accept": "application/vnd.ipld.car"}} {
			q := "?format=car"
			if h != nil {
				q = ""
			}
			resp, body := gwGet(t, b, http.MethodGet, "/ipfs/"+file.String()+q, h)
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/vnd.ipld.car") {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			got := rebuildFromCAR(t, ctx, body, file)
			if !bytes.Equal(got, data) {
				t.Fatalf("file rebuilt from the CAR differs (%d bytes, want %d)", len(got), len(data))
			}
		}
	})
	t.Run("raw block", func(t *testing.T) {
		for _, h := range []map[string]string{nil, {"Accept": "application/vnd.ipld.raw"}} {
			q := "?format=raw"
			if h != nil {
				q = ""
			}
			resp, body := gwGet(t, b, http.MethodGet, "/ipfs/"+file.String()+q, h)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/vnd.ipld.raw" {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			sum, err := file.Prefix().Sum(body)
			if err != nil || !sum.Equals(file) {
				t.Fatalf("raw block hashes to %v, want %s", sum, file)
			}
		}
	})
	t.Run("feed through /ipns/", func(t *testing.T) {
		rec, err := a.PublishFeed(ctx, "self", file)
		if err != nil {
			t.Fatal(err)
		}
		// The record reaches B through A's DHT put (B is not on the feed's
		// topic), which runs in the background: wait for it, as a user
		// would watch 'weft feed ls'.
		nodetest.WaitFor(t, 30*time.Second, "A's DHT put of the record", func() bool {
			f, ok := feedOf(a, rec.Name)
			return ok && f.DHT != nil && f.DHT.Seq >= rec.Seq
		})
		resp, body := gwGet(t, b, http.MethodGet, "/ipns/"+rec.Name, nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("status %d, %d bytes: %q", resp.StatusCode, len(body), clipBody(body))
		}
		resp, body = gwGet(t, b, http.MethodGet, "/ipns/"+rec.Name+"?format=ipns-record", nil)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("ipns-record: status %d, %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + b.APIAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{
			`weft_gateway_requests_total{format="car",status="200"} 2`,
			`weft_gateway_requests_total{format="raw",status="200"} 2`,
			`weft_gateway_response_bytes_total{format="file"}`,
		} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// rebuildFromCAR checks every block of a CAR against its CID, stores them
// in a fresh blockstore, and reads the file at root from that store alone.
func rebuildFromCAR(t *testing.T, ctx context.Context, car []byte, root cid.Cid) []byte {
	t.Helper()
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		t.Fatalf("read CAR: %v", err)
	}
	if len(br.Roots) != 1 || !br.Roots[0].Equals(root) {
		t.Fatalf("CAR roots %v, want %s", br.Roots, root)
	}
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	n := 0
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("CAR block %d: %v", n, err)
		}
		sum, err := blk.Cid().Prefix().Sum(blk.RawData())
		if err != nil || !sum.Equals(blk.Cid()) {
			t.Fatalf("CAR block %d: data hashes to %v, not its CID %s", n, sum, blk.Cid())
		}
		if err := bs.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("CAR has %d blocks, want the root and its chunks", n)
	}
	r, err := unixfs.Cat(ctx, merkledag.NewDAGService(blockservice.New(bs, nil)), root)
	if err != nil {
		t.Fatalf("read the file from the CAR's blocks: %v", err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read the file from the CAR's blocks: %v", err)
	}
	return out
}

func clipBody(b []byte) string {
	if len(b) > 300 {
		b = b[:300]
	}
	return string(b)
}

// TestGatewayBrowserSafety: the gateway answers only to its own address
// (a rebinding page's Host is refused) and only reads.
func TestGatewayBrowserSafety(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	c := addBytes(t, n, []byte("local content"))
	_, port, _ := strings.Cut(n.GatewayAddr(), ":")
	tests := []struct {
		name   string
		method string
		host   string
		want   int
	}{
		{"own address", http.MethodGet, "", http.StatusOK},
		{"localhost", http.MethodGet, "localhost:" + port, http.StatusOK},
		{"HEAD", http.MethodHead, "", http.StatusOK},
		{"rebinding host", http.MethodGet, "attacker.example:" + port, http.StatusForbidden},
		{"rebinding host without port", http.MethodGet, "attacker.example", http.StatusForbidden},
		{"POST", http.MethodPost, "", http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, "", http.StatusMethodNotAllowed},
		{"DELETE", http.MethodDelete, "", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.host != "" {
				h["Host"] = tt.host
			}
			resp, body := gwGet(t, n, tt.method, "/ipfs/"+c.String(), h)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, clipBody(body))
			}
			if tt.want == http.StatusOK && tt.method == http.MethodGet && string(body) != "local content" {
				t.Fatalf("body %q", clipBody(body))
			}
		})
	}
}

// TestGatewayOff: addresses.gateway "off" starts no gateway; the default
// is Kubo's 127.0.0.1:8080, and test repos (API on port 0) get port 0.
func TestGatewayOff(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Tune: func(c *node.Config) { c.Addresses.Gateway = "off" }})
	if addr := n.GatewayAddr(); addr != "" {
		t.Fatalf("gateway listening on %s while off", addr)
	}
	def, err := node.DefaultConfig(node.ProfileLocal)
	if err != nil {
		t.Fatal(err)
	}
	if def.Addresses.Gateway != "127.0.0.1:8080" {
		t.Fatalf("default gateway %q", def.Addresses.Gateway)
	}
	cfg, err := node.InitRepo(t.TempDir(), node.InitOptions{API: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addresses.Gateway != "127.0.0.1:0" {
		t.Fatalf("test repo gateway %q, want 127.0.0.1:0", cfg.Addresses.Gateway)
	}
	for _, v := range []string{"off", "", "127.0.0.1:8081"} {
		if err := def.Set("addresses.gateway", v); err != nil {
			t.Errorf("set addresses.gateway %q: %v", v, err)
		}
	}
	if err := def.Set("addresses.gateway", "nonsense"); err == nil {
		t.Error("addresses.gateway nonsense accepted")
	}
}
