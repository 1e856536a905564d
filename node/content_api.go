package node

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/files"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"

	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/protocol/unixfs"
	"github.com/weft-p2p/weft/store"
)

func parseCID(s string) (cid.Cid, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "/ipfs/")
	if s == "" {
		return cid.Undef, badRequest("missing cid")
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, badRequest("bad CID %q: %v", clip(s), err)
	}
	return c, nil
}

func queryCID(r *http.Request) (cid.Cid, error) { return parseCID(r.URL.Query().Get("cid")) }

// importOptions reads the add settings from the query, on top of a profile.
// As in Kubo, --cid-version=1 implies raw leaves unless they are set, and a
// hash other than sha2-256 implies CIDv1.
func importOptions(q map[string][]string) (unixfs.Options, error) {
	get := func(k string) (string, bool) {
		v, ok := q[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	profile, _ := get("profile")
	if profile == "" {
		profile = unixfs.ProfileV1_2025
	}
	o, err := unixfs.Profile(profile)
	if err != nil {
		return o, badRequest("%v", err)
	}
	atoi := func(k string) (int64, bool, error) {
		v, ok := get(k)
		if !ok {
			return 0, false, nil
		}
		v = strings.TrimPrefix(v, "size-")
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			if sz, err2 := ParseByteSize(v); err2 == nil {
				return sz, true, nil
			}
			return 0, false, badRequest("bad %s %q", k, v)
		}
		return i, true, nil
	}
	if v, ok, err := atoi("chunk-size"); err != nil {
		return o, err
	} else if ok {
		o.ChunkSize = v
	}
	if v, ok, err := atoi("max-links"); err != nil {
		return o, err
	} else if ok {
		o.MaxLinks = int(v)
	}
	hash, hashSet := get("hash")
	if hashSet {
		o.Hash = hash
	}
	v, cidSet, err := atoi("cid-version")
	if err != nil {
		return o, err
	}
	if cidSet {
		o.CIDVersion = int(v)
	} else if hashSet && hash != "sha2-256" {
		o.CIDVersion = 1
	}
	if s, ok := get("raw-leaves"); ok {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return o, badRequest("bad raw-leaves %q", s)
		}
		o.RawLeaves = b
	} else if cidSet {
		o.RawLeaves = o.CIDVersion == 1
	}
	if s, ok := get("hidden"); ok {
		o.Hidden = s == "true"
	}
	if err := o.Validate(); err != nil {
		return o, badRequest("%v", err)
	}
	return o, nil
}

// ndjson writes one JSON value per line and flushes, for streamed answers.
type ndjson struct {
	w   http.ResponseWriter
	enc *json.Encoder
}

// fencedBody lets a handler end every read of its request body before it
// returns (see handleAdd).
type fencedBody struct {
	mu     sync.Mutex
	r      io.ReadCloser
	fenced bool
}

func (b *fencedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fenced {
		return 0, errors.New("request body read after the request ended")
	}
	return b.r.Read(p)
}

func (b *fencedBody) Close() error { return b.r.Close() }

// fence cuts a Read that is waiting for the client short (a read deadline
// now), waits for it, fails every later Read and closes the body.
func (b *fencedBody) fence(rc *http.ResponseController) {
	if !b.mu.TryLock() {
		_ = rc.SetReadDeadline(time.Now())
		b.mu.Lock()
	}
	b.fenced = true
	b.mu.Unlock()
	_ = b.r.Close()
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush() // the client learns at once that the stream is live
	}
	return &ndjson{w: w, enc: json.NewEncoder(w)}
}

func (s *ndjson) send(v any) {
	_ = s.enc.Encode(v)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// handleAdd imports the request body: a raw file, or a multipart directory
// tree as written by boxo's MultiFileReader. The answer streams one
// api.AddEvent per added entry and ends with a "done" or "error" event.
func (n *Node) handleAdd(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts, err := importOptions(q)
	if err != nil {
		writeError(w, err)
		return
	}
	pin := q.Get("pin") != "false"
	// Events stream back while the body is still being read.
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	// With full duplex, a handler that returns before reading the body to
	// its end (a bad multipart body, an import that fails early) makes
	// net/http panic when it reads the connection's next request
	// ("invalid concurrent Body.Read call", golang/go#68560). So the body
	// is fenced on return: a Read still running is cut short and waited
	// for, later ones fail, and the body is closed, as the workaround for
	// that issue does.
	body := &fencedBody{r: r.Body}
	defer body.fence(rc)
	r.Body = body
	var nd files.Node
	mediatype, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if strings.HasPrefix(mediatype, "multipart/") {
		nd, err = files.NewFileFromPartReader(multipart.NewReader(r.Body, params["boundary"]), mediatype)
		if err != nil {
			writeError(w, badRequest("bad multipart body: %v", err))
			return
		}
	} else {
		nd = files.NewReaderFile(r.Body)
	}
	out := newNDJSON(w)
	root, err := n.Add(r.Context(), nd, opts, pin, q.Get("name"), func(ev unixfs.Event) {
		if ev.Kind == unixfs.EventAdded && ev.Path != "" {
			out.send(api.AddEvent{Event: "added", Path: ev.Path, CID: ev.CID.String(), Size: ev.Size, Type: string(ev.Type)})
		}
	})
	if err != nil {
		out.send(api.AddEvent{Event: "error", Error: errorText(err)})
		return
	}
	out.send(api.AddEvent{Event: "done", CID: root.String()})
}

// streamError reports a failure before any byte of a stream was written as
// a JSON error; after that, the stream is cut (the client sees a short read
// and the trailer).
type trackingWriter struct {
	w       http.ResponseWriter
	written bool
}

func (t *trackingWriter) Write(p []byte) (int, error) {
	t.written = true
	return t.w.Write(p)
}

func (n *Node) handleCat(w http.ResponseWriter, r *http.Request) {
	c, err := queryCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	var offset, length int64 = 0, -1
	if s := q.Get("offset"); s != "" {
		if offset, err = strconv.ParseInt(s, 10, 64); err != nil || offset < 0 {
			writeError(w, badRequest("bad offset %q", s))
			return
		}
	}
	if s := q.Get("length"); s != "" {
		if length, err = strconv.ParseInt(s, 10, 64); err != nil || length < 0 {
			writeError(w, badRequest("bad length %q", s))
			return
		}
	}
	w.Header().Set("Trailer", "X-Stream-Error")
	tw := &trackingWriter{w: w}
	err = n.Cat(r.Context(), c, offset, length, tw, func(size uint64) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Content-Length", strconv.FormatUint(size, 10))
	})
	if err != nil {
		if !tw.written {
			writeError(w, classifyContentErr(err))
			return
		}
		w.Header().Set("X-Stream-Error", oneLineErr(err))
	}
}

func oneLineErr(err error) string { return strings.ReplaceAll(errorText(err), "\n", "; ") }

// classifyContentErr maps content failures to HTTP statuses.
func classifyContentErr(err error) error {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return err
	case errors.Is(err, ErrFetchTimeout):
		return &httpError{http.StatusGatewayTimeout, err}
	case errors.Is(err, unixfs.ErrNotFile), errors.Is(err, unixfs.ErrNotDirectory), errors.Is(err, unixfs.ErrUnsupported),
		errors.Is(err, unixfs.ErrBadName), errors.Is(err, unixfs.ErrBadSymlink), errors.Is(err, unixfs.ErrNotSymlink):
		return &httpError{http.StatusBadRequest, err}
	case errors.Is(err, ErrTooManyEntries), errors.Is(err, ErrTooDeep):
		return &httpError{http.StatusUnprocessableEntity, err}
	case errors.Is(err, store.ErrNotPinned):
		return &httpError{http.StatusNotFound, err}
	case errors.Is(err, store.ErrStoreFull):
		return &httpError{http.StatusInsufficientStorage, err}
	}
	return err
}

// handleGet streams the DAG under cid as a tar archive (a file is one
// entry; a directory is its whole tree under its name).
func (n *Node) handleGet(w http.ResponseWriter, r *http.Request) {
	c, err := queryCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = c.String()
	}
	if err := unixfs.ValidName(name); err != nil { // it heads every tar path
		writeError(w, badRequest("bad name: %v", err))
		return
	}
	w.Header().Set("Trailer", "X-Stream-Error")
	tw := &trackingWriter{w: w}
	err = n.readOp(r.Context(), func(o *op) error {
		// Count before writing, so that a DAG that expands past the
		// limit is refused with a clear error rather than cut half-way.
		if err := n.checkTarSize(o, c, name); err != nil {
			return err
		}
		t := tar.NewWriter(tw)
		if err := n.writeTar(o, t, c, name); err != nil {
			return err
		}
		return t.Close()
	})
	if err != nil {
		if !tw.written {
			writeError(w, classifyContentErr(err))
			return
		}
		w.Header().Set("X-Stream-Error", oneLineErr(err))
	}
}

// maxGetDepth is the deepest directory nesting a get writes: each level
// adds at least two bytes to a path, and no system takes paths of more than
// 4096 (Linux's PATH_MAX). It also bounds the recursion below.
const maxGetDepth = 2048

// checkTarSize fails with ErrTooManyEntries when the tar of the DAG under c
// would hold more than content.max_get_entries entries, and with
// ErrTooDeep when its directories nest deeper than maxGetDepth. A directory
// linked from k places is written k times, so the count can be exponential
// in the DAG's size; this reads each distinct directory once (memo), and
// stops when the request ends. name heads the tar's paths: a directory it
// cannot list is named by the path where it first appears, as writeTar
// would name it.
func (n *Node) checkTarSize(o *op, root cid.Cid, name string) error {
	limit := n.cfg.Content.maxGetEntries()
	memo := map[cid.Cid]int64{}
	var count func(c cid.Cid, path string, depth int) (int64, error)
	count = func(c cid.Cid, path string, depth int) (int64, error) {
		if v, ok := memo[c]; ok {
			return v, nil
		}
		if err := o.ctx.Err(); err != nil {
			return 0, err
		}
		if depth > maxGetDepth {
			return 0, fmt.Errorf("get %s: %w: directories nest deeper than %d levels", root, ErrTooDeep, maxGetDepth)
		}
		entries, err := unixfs.Ls(o.ctx, o.dag, c)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", unixfs.QuoteName(path), err)
		}
		total := int64(1)
		for _, e := range entries {
			k := int64(1)
			if e.Type == unixfs.TypeDirectory {
				if k, err = count(e.CID, path+"/"+e.Name, depth+1); err != nil {
					return 0, err
				}
			}
			// Both terms are at most limit: no overflow.
			if total += k; total > limit {
				return 0, fmt.Errorf("get %s: %w: more than %d (content.max_get_entries); directories linked from several places count once per place",
					root, ErrTooManyEntries, limit)
			}
		}
		memo[c] = total
		return total, nil
	}
	st, err := unixfs.Stat(o.ctx, o.dag, root)
	if err != nil || st.Type != unixfs.TypeDirectory {
		return nil // writeTar reports what it cannot read or write
	}
	_, err = count(root, name, 0)
	return err
}

// writeTar writes the tree under c; checkTarSize has bounded its size.
func (n *Node) writeTar(o *op, t *tar.Writer, c cid.Cid, name string) error {
	if err := o.ctx.Err(); err != nil {
		return err // the client left
	}
	st, err := unixfs.Stat(o.ctx, o.dag, c)
	if err != nil {
		return fmt.Errorf("%s: %w", unixfs.QuoteName(name), err)
	}
	now := time.Unix(0, 0)
	switch st.Type {
	case unixfs.TypeDirectory:
		if err := t.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}); err != nil {
			return err
		}
		entries, err := unixfs.Ls(o.ctx, o.dag, c)
		if err != nil {
			return fmt.Errorf("%s: %w", unixfs.QuoteName(name), err)
		}
		for _, e := range entries {
			if err := n.writeTar(o, t, e.CID, name+"/"+e.Name); err != nil {
				return err
			}
		}
		return nil
	case unixfs.TypeFile:
		f, err := unixfs.Cat(o.ctx, o.dag, c)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := t.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(f.Size()), ModTime: now}); err != nil {
			return err
		}
		_, err = io.Copy(t, f)
		return err
	case unixfs.TypeSymlink:
		target, err := unixfs.Readlink(o.ctx, o.dag, c)
		if err != nil {
			return err
		}
		return t.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: now})
	default:
		return fmt.Errorf("%s: %w: %s entries cannot be exported", name, unixfs.ErrUnsupported, st.Type)
	}
}

func (n *Node) handleLs(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	entries, err := n.Ls(r.Context(), c)
	if err != nil {
		return nil, classifyContentErr(err)
	}
	out := []api.LsEntry{}
	for _, e := range entries {
		out = append(out, api.LsEntry{Name: e.Name, CID: e.CID.String(), Type: string(e.Type), Size: e.Size})
	}
	return out, nil
}

func (n *Node) handleStat(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	var out api.ObjectStat
	err = n.readOp(r.Context(), func(o *op) error {
		st, err := unixfs.Stat(o.ctx, o.dag, c)
		if err != nil {
			return err
		}
		local, _ := n.store.Blockstore().Has(r.Context(), c)
		out = api.ObjectStat{CID: c.String(), Type: string(st.Type), Size: st.Size, CumulativeSize: st.CumulativeSize,
			BlockSize: st.BlockSize, Links: st.Links, Sharded: st.Sharded, Local: local}
		return nil
	})
	if err != nil {
		return nil, classifyContentErr(err)
	}
	pinned, _ := n.store.Pins().IsPinned(r.Context(), c)
	out.Pinned = pinned
	return out, nil
}

func (n *Node) handlePinAdd(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	recursive := r.URL.Query().Get("recursive") != "false"
	if err := n.Pin(r.Context(), c, recursive, r.URL.Query().Get("name")); err != nil {
		return nil, classifyContentErr(err)
	}
	mode := "recursive"
	if !recursive {
		mode = "direct"
	}
	return api.PinEntry{CID: c.String(), Mode: mode, Name: r.URL.Query().Get("name")}, nil
}

func (n *Node) handlePinRm(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	if err := n.Unpin(r.Context(), c); err != nil {
		return nil, classifyContentErr(err)
	}
	return map[string]string{"unpinned": c.String()}, nil
}

func (n *Node) handlePinLs(w http.ResponseWriter, r *http.Request) (any, error) {
	pins, err := n.store.Pins().List(r.Context())
	if err != nil {
		return nil, err
	}
	out := []api.PinEntry{}
	for _, p := range pins {
		out = append(out, api.PinEntry{CID: p.Cid.String(), Mode: p.Mode.String(), Name: p.Name})
	}
	return out, nil
}

func (n *Node) handleProviders(w http.ResponseWriter, r *http.Request) (any, error) {
	c, err := queryCID(r)
	if err != nil {
		return nil, err
	}
	max := 20
	if s := r.URL.Query().Get("max"); s != "" {
		if max, err = strconv.Atoi(s); err != nil || max <= 0 {
			return nil, badRequest("bad max %q", s)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.Content.FetchTimeout.D())
	defer cancel()
	ais, err := n.Providers(ctx, c, max)
	if err != nil {
		return nil, err
	}
	out := []api.PeerInfo{}
	for _, ai := range ais {
		out = append(out, api.PeerInfo{ID: ai.ID.String(), Addrs: addrStrings(ai.Addrs)})
	}
	return out, nil
}

func (n *Node) handleGC(w http.ResponseWriter, r *http.Request) (any, error) {
	res, err := n.store.GC(r.Context())
	if err != nil {
		if errors.Is(err, store.ErrGCRunning) {
			return nil, &httpError{http.StatusConflict, err}
		}
		return nil, fmt.Errorf("gc: %w", err)
	}
	return api.GCResult{BlocksFreed: res.BlocksFreed, BytesFreed: res.BytesFreed, LiveBlocks: res.LiveBlocks,
		DiskBefore: res.DiskBefore, DiskAfter: res.DiskAfter, Seconds: res.Duration.Seconds()}, nil
}

// handleCarExport streams the DAG under cid as a CARv1, depth-first, each
// block once.
func (n *Node) handleCarExport(w http.ResponseWriter, r *http.Request) {
	c, err := queryCID(r)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Trailer", "X-Stream-Error")
	tw := &trackingWriter{w: w}
	err = n.readOp(r.Context(), func(o *op) error {
		// Make the DAG local first, so that a missing block fails the
		// export before anything is written.
		if err := n.fetch(o, c); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/vnd.ipld.car; version=1")
		car, err := carstorage.NewWritable(tw, []cid.Cid{c}, carv2.WriteAsCarV1(true))
		if err != nil {
			return fmt.Errorf("start CAR: %w", err)
		}
		// Each block once (the walk's visited set), and only while the
		// client is there: o.ctx ends with the request.
		var werr error
		err = walkOnce(o.ctx, o.dag, c, func(nd ipld.Node) error {
			if err := car.Put(o.ctx, nd.Cid().KeyString(), nd.RawData()); err != nil {
				werr = err
				return err
			}
			return nil
		})
		if werr != nil {
			return fmt.Errorf("write CAR: %w", werr)
		}
		if err != nil {
			return err
		}
		return car.Finalize()
	})
	if err != nil {
		if !tw.written {
			writeError(w, classifyContentErr(err))
			return
		}
		w.Header().Set("X-Stream-Error", oneLineErr(err))
	}
}

// handleCarImport stores every block of a CAR (v1 or v2), verifying each
// against its CID, and pins the roots recursively when the CAR holds their
// whole DAG (pin=false skips pinning).
//
// A CAR is refused with 422 and nothing pinned when a block's hash is one
// weft does not accept (boxo's verifcid allowlist: no md5, no short
// digests), a block is larger than any peer would send, a block's bytes do
// not match its CID (400), or a root's DAG lacks a block that neither the
// CAR nor the store holds. The bad block itself is never stored; the good
// blocks read before it stay unpinned, for the next gc, and nothing that
// was in the store before changes.
func (n *Node) handleCarImport(w http.ResponseWriter, r *http.Request) (any, error) {
	sess := n.store.NewSession()
	defer sess.Close()
	bs := sess.Blockstore()
	roots, count, err := readCAR(r.Body, func(batch []blocks.Block) error {
		if err := bs.PutMany(r.Context(), batch); err != nil {
			return n.explainStoreErr(fmt.Errorf("store CAR blocks: %w", err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := api.CarImportResult{Blocks: count, Roots: []string{}}
	pin := r.URL.Query().Get("pin") != "false"
	var added []cid.Cid // roots this import pinned, undone if a later one fails
	for _, root := range roots {
		res.Roots = append(res.Roots, root.String())
		if !pin {
			continue
		}
		_, err := n.store.Pins().Get(r.Context(), root)
		was := err == nil
		if err := n.store.Pins().Add(r.Context(), root, store.Recursive, ""); err != nil {
			for _, c := range added {
				_ = n.store.Pins().Remove(context.WithoutCancel(r.Context()), c)
			}
			return nil, carPinErr(root, err)
		}
		if !was {
			added = append(added, root)
		}
	}
	for _, root := range roots {
		if pin {
			n.content.provideAsync(r.Context(), root)
		}
	}
	return res, nil
}

// carPinErr explains why a CAR root could not be pinned: a block its DAG
// needs is missing, or has links the store cannot read, is the CAR's
// fault (422); anything else is the node's.
func carPinErr(root cid.Cid, err error) error {
	var nf ipld.ErrNotFound
	switch {
	case errors.As(err, &nf):
		return &httpError{http.StatusUnprocessableEntity,
			fmt.Errorf("CAR root %s is incomplete: block %s is in neither the CAR nor the store; nothing pinned", root, nf.Cid)}
	case errors.Is(err, store.ErrUnsupportedCodec):
		return &httpError{http.StatusUnprocessableEntity, fmt.Errorf("CAR root %s: %w; nothing pinned", root, err)}
	case errors.Is(err, store.ErrStoreFull):
		return &httpError{http.StatusInsufficientStorage, err}
	}
	return fmt.Errorf("pin CAR root %s: %w", root, err)
}
