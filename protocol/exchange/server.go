package exchange

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ServerConfig configures a Server. Optional fields' zero values are the
// defaults noted beside them.
type ServerConfig struct {
	// Blocks is where served blocks come from (required). If it also
	// implements Viewer, blocks are read through View.
	Blocks Getter
	// MaxStreams bounds the streams served at once (0: 64); a stream over
	// the bound is answered with CodeBusy.
	MaxStreams int
	// IdleTimeout resets a stream on which neither a request arrives nor a
	// frame can be written for this long (0: 30s).
	IdleTimeout time.Duration
	// MaxPending bounds the blocks pending in one request's walk (0:
	// DefaultMaxPending).
	MaxPending int
	// Logger receives the package's logs (nil: slog.Default()).
	Logger *slog.Logger
}

// DefaultMaxPending is the default bound on the CIDs a walk holds pending:
// far above any UnixFS DAG (a 1 TiB file of 256 KiB chunks has at most a few
// thousand pending at once), far below what would hurt memory.
const DefaultMaxPending = 1 << 20

func (c *ServerConfig) setDefaults() {
	if c.MaxStreams == 0 {
		c.MaxStreams = 64
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *ServerConfig) validate() error {
	switch {
	case c.Blocks == nil:
		return fmt.Errorf("%w: Blocks is required", ErrInvalidConfig)
	case c.MaxStreams < 0:
		return fmt.Errorf("%w: negative MaxStreams", ErrInvalidConfig)
	case c.IdleTimeout < 0:
		return fmt.Errorf("%w: negative IdleTimeout", ErrInvalidConfig)
	case c.MaxPending < 0:
		return fmt.Errorf("%w: negative MaxPending", ErrInvalidConfig)
	}
	return nil
}

// ServerStats counts what a Server has served since it started.
type ServerStats struct {
	Streams  int64 // streams handled
	Requests int64 // requests answered
	Blocks   int64 // blocks sent
	Bytes    int64 // block bytes sent
	Missing  int64 // Missing frames sent
	Busy     int64 // streams refused with CodeBusy
}

// Server answers exchange requests. Handle may be called from many
// goroutines at once (one per stream); Close stops all of them.
type Server struct {
	cfg    ServerConfig
	viewer Viewer
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	streams map[Stream]struct{}
	closed  bool
	wg      sync.WaitGroup

	nStreams, nRequests, nBlocks, nBytes, nMissing, nBusy atomic.Int64
}

// NewServer returns a Server over cfg.Blocks.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, streams: make(map[Stream]struct{})}
	s.viewer, _ = cfg.Blocks.(Viewer)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Stats returns the Server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Streams: s.nStreams.Load(), Requests: s.nRequests.Load(), Blocks: s.nBlocks.Load(),
		Bytes: s.nBytes.Load(), Missing: s.nMissing.Load(), Busy: s.nBusy.Load(),
	}
}

// Close resets every stream being served, waits for their handlers to
// return, and makes later Handle calls reset their stream at once. It is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	for st := range s.streams {
		_ = st.Reset()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Handle serves one stream from peer from: it answers requests in order
// until the requester closes its side, then closes the stream (or resets it
// after an error). It owns st and returns when done; a libp2p stream
// handler can be just a call to it.
func (s *Server) Handle(st Stream, from peer.ID) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = st.Reset()
		return
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		s.mu.Unlock()
		s.nBusy.Add(1)
		_, _ = st.Write(AppendFrame(nil, Frame{Type: FrameError, Code: CodeBusy, Message: "too many streams"}))
		_ = st.Close()
		return
	}
	s.streams[st] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
		s.wg.Done()
	}()
	s.nStreams.Add(1)

	dog := newWatchdog(s.cfg.IdleTimeout, func() { _ = st.Reset() })
	defer dog.stop()
	err := s.serve(st, dog)
	if err != nil && !errors.Is(err, io.EOF) {
		if s.ctx.Err() == nil {
			s.cfg.Logger.Debug("exchange: serving stream failed", "peer", from, "err", err)
		}
		_ = st.Reset()
		return
	}
	_ = st.Close()
}

// serve answers requests until the requester closes its side (io.EOF) or
// something fails.
func (s *Server) serve(st Stream, dog *watchdog) error {
	br := bufio.NewReaderSize(&kickReader{st, dog}, 4<<10)
	bw := bufio.NewWriterSize(&kickWriter{st, dog}, 128<<10)
	for {
		req, err := ReadRequest(br)
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				_, _ = bw.Write(AppendFrame(nil, Frame{Type: FrameError, Code: CodeBadRequest, Message: err.Error()}))
				_ = bw.Flush()
			}
			return err
		}
		s.nRequests.Add(1)
		if err := s.answer(req, bw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}

// answer walks req and writes its frames to bw, ending with End.
func (s *Server) answer(req Request, bw *bufio.Writer) error {
	wants := make([]item, len(req.Wants))
	for i, w := range req.Wants {
		wants[i] = item{c: w.Cid, scope: w.Scope}
	}
	wk := newWalk(wants, s.cfg.MaxPending)
	var sent uint64
	var hdr [binary.MaxVarintLen64 + 1]byte
	var buf *[]byte
	defer func() {
		if buf != nil {
			bufPool.Put(buf)
		}
	}()
	for req.Limit == 0 || sent < req.Limit {
		it, ok, err := wk.next()
		if err != nil {
			return s.fail(bw, CodeInternal, err)
		}
		if !ok {
			break
		}
		// Read the block before writing it: a View holds store locks that
		// must not wait on the network.
		var data []byte
		if s.viewer != nil {
			if buf == nil {
				buf = bufPool.Get().(*[]byte)
			}
			err = s.viewer.View(s.ctx, it.c, func(b []byte) error {
				*buf = append((*buf)[:0], b...)
				return nil
			})
			data = *buf
		} else {
			var blk blocks.Block
			if blk, err = s.cfg.Blocks.Get(s.ctx, it.c); err == nil {
				data = blk.RawData()
			}
		}
		switch {
		case ipld.IsNotFound(err):
			s.nMissing.Add(1)
			if _, err := bw.Write(AppendFrame(hdr[:0], Frame{Type: FrameMissing, Cid: it.c})); err != nil {
				return err
			}
			continue
		case err != nil:
			if s.ctx.Err() != nil {
				return err
			}
			return s.fail(bw, CodeInternal, fmt.Errorf("read block %s: %w", it.c, err))
		case len(data) > MaxBlockSize:
			return s.fail(bw, CodeInternal, fmt.Errorf("block %s of %d bytes exceeds %d", it.c, len(data), MaxBlockSize))
		}
		h := binary.AppendUvarint(hdr[:0], uint64(1+len(data)))
		h = append(h, byte(FrameBlock))
		if _, err := bw.Write(h); err != nil {
			return err
		}
		if _, err := bw.Write(data); err != nil {
			return err
		}
		// Send what is buffered once it is worth a write, rather than let
		// it wait for the next blocks: their reads may be slow.
		if bw.Buffered() >= flushAt {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		sent += uint64(len(data))
		s.nBlocks.Add(1)
		s.nBytes.Add(int64(len(data)))
		if err := wk.expand(it, data); err != nil {
			return s.fail(bw, CodeInternal, err)
		}
	}
	_, err := bw.Write(AppendFrame(hdr[:0], Frame{Type: FrameEnd}))
	return err
}

// flushAt is how many buffered bytes make the Server flush after a block:
// small blocks share writes, larger ones go out at once.
const flushAt = 16 << 10

// bufPool holds the buffers blocks are read into through a Viewer.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// fail sends an Error frame and returns err.
func (s *Server) fail(bw *bufio.Writer, code ErrorCode, err error) error {
	_, _ = bw.Write(AppendFrame(nil, Frame{Type: FrameError, Code: code, Message: err.Error()}))
	_ = bw.Flush()
	return err
}
