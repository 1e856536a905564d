package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/ipfs/boxo/files"
)

// Add uploads a file (a plain reader) or a directory tree (a files.Node,
// sent as multipart) and calls onEvent for each streamed event. It returns
// the root CID. onSent, if set, is told how many body bytes were sent.
func (c *Client) Add(ctx context.Context, nd files.Node, params url.Values, onEvent func(AddEvent), onSent func(int64)) (string, error) {
	var body io.Reader
	ctype := "application/octet-stream"
	switch f := nd.(type) {
	case files.File:
		body = f
	case files.Directory:
		mfr := files.NewMultiFileReader(f, true, false)
		body = mfr
		ctype = "multipart/form-data; boundary=" + mfr.Boundary()
	default:
		return "", fmt.Errorf("add: unsupported node type %T", nd)
	}
	if onSent != nil {
		body = &countingReader{r: body, fn: onSent}
	}
	resp, err := c.Raw(ctx, http.MethodPost, "/api/v1/add", params, bigChunks{body}, ctype)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev AddEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return "", fmt.Errorf("add: bad event %q: %w", sc.Text(), err)
		}
		switch ev.Event {
		case "error":
			return "", errors.New(ev.Error)
		case "done":
			return ev.CID, nil
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("add: %w", err)
	}
	return "", errors.New("add: the daemon closed the stream before the end")
}

// streamReader turns a cut stream (error in the trailer) into an error.
type streamReader struct {
	resp *http.Response
}

func (s *streamReader) Read(p []byte) (int, error) {
	n, err := s.resp.Body.Read(p)
	if err == io.EOF {
		if msg := s.resp.Trailer.Get("X-Stream-Error"); msg != "" {
			return n, errors.New(msg)
		}
	}
	return n, err
}

func (s *streamReader) Close() error { return s.resp.Body.Close() }

func (c *Client) stream(ctx context.Context, path string, q url.Values) (io.ReadCloser, *http.Response, error) {
	resp, err := c.Raw(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return nil, nil, err
	}
	return &streamReader{resp}, resp, nil
}

// Cat streams a file's bytes. length < 0 reads to the end.
func (c *Client) Cat(ctx context.Context, cid string, offset, length int64) (io.ReadCloser, error) {
	q := url.Values{"cid": {cid}}
	if offset > 0 {
		q.Set("offset", fmt.Sprint(offset))
	}
	if length >= 0 {
		q.Set("length", fmt.Sprint(length))
	}
	r, _, err := c.stream(ctx, "/api/v1/cat", q)
	return r, err
}

// Get streams a tar archive of the DAG under cid, its top entry named name.
func (c *Client) Get(ctx context.Context, cid, name string) (io.ReadCloser, error) {
	r, _, err := c.stream(ctx, "/api/v1/get", url.Values{"cid": {cid}, "name": {name}})
	return r, err
}

// CarExport streams a CARv1 of the DAG under cid.
func (c *Client) CarExport(ctx context.Context, cid string) (io.ReadCloser, error) {
	r, _, err := c.stream(ctx, "/api/v1/car/export", url.Values{"cid": {cid}})
	return r, err
}

// CarImport uploads a CAR and pins its roots.
func (c *Client) CarImport(ctx context.Context, r io.Reader, pin bool) (CarImportResult, error) {
	var out CarImportResult
	resp, err := c.Raw(ctx, http.MethodPost, "/api/v1/car/import", url.Values{"pin": {fmt.Sprint(pin)}}, r, "application/vnd.ipld.car")
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// Ls lists a directory.
func (c *Client) Ls(ctx context.Context, cid string) ([]LsEntry, error) {
	var out []LsEntry
	return out, c.Do(ctx, http.MethodGet, "/api/v1/ls", url.Values{"cid": {cid}}, nil, &out)
}

// Stat describes an object.
func (c *Client) Stat(ctx context.Context, cid string) (ObjectStat, error) {
	var out ObjectStat
	return out, c.Do(ctx, http.MethodGet, "/api/v1/stat", url.Values{"cid": {cid}}, nil, &out)
}

// PinAdd fetches and pins cid.
func (c *Client) PinAdd(ctx context.Context, cid string, recursive bool, name string) (PinEntry, error) {
	var out PinEntry
	q := url.Values{"cid": {cid}, "recursive": {fmt.Sprint(recursive)}}
	if name != "" {
		q.Set("name", name)
	}
	return out, c.Do(ctx, http.MethodPost, "/api/v1/pin/add", q, nil, &out)
}

// PinRm unpins cid.
func (c *Client) PinRm(ctx context.Context, cid string) error {
	return c.Do(ctx, http.MethodPost, "/api/v1/pin/rm", url.Values{"cid": {cid}}, nil, nil)
}

// PinLs lists pins.
func (c *Client) PinLs(ctx context.Context) ([]PinEntry, error) {
	var out []PinEntry
	return out, c.Do(ctx, http.MethodGet, "/api/v1/pin/ls", nil, nil, &out)
}

// Providers finds providers of cid in the DHT.
func (c *Client) Providers(ctx context.Context, cid string, max int) ([]PeerInfo, error) {
	var out []PeerInfo
	return out, c.Do(ctx, http.MethodGet, "/api/v1/providers", url.Values{"cid": {cid}, "max": {fmt.Sprint(max)}}, nil, &out)
}

// GC collects unpinned blocks.
func (c *Client) GC(ctx context.Context) (GCResult, error) {
	var out GCResult
	return out, c.Do(ctx, http.MethodPost, "/api/v1/gc", nil, nil, &out)
}

// bigChunks sends a request body in writes of up to uploadChunk bytes, so
// the HTTP transport sends chunks of that size: its own copy would read
// and send 32 KiB at a time, and the daemon would make a read for each
// chunk (measured: a quarter of an add's CPU went to those reads).
type bigChunks struct{ r io.Reader }

const uploadChunk = 1 << 20

func (b bigChunks) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b bigChunks) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, uploadChunk)
	var total int64
	for {
		n, err := io.ReadFull(b.r, buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}

type countingReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.fn(c.n)
	return n, err
}
