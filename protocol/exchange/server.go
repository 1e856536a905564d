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

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"
)

// ServerConfig configures a Server. Optional fields' zero values are the
// defaults noted beside them.
type ServerConfig struct {
	// Blocks is where served blocks come from (required). If it also
	// implements BlockReader or Viewer, blocks are read through ReadInto or
	// View.
	Blocks Getter
	// MaxStreams bounds the streams served at once (0: 64); a stream over
	// the bound is answered with CodeBusy.
	MaxStreams int
	// MaxStreamsPerPeer bounds the streams one peer is served at once (0:
	// 8), so that one peer cannot take every slot of MaxStreams; a stream
	// over it is answered with CodeBusy.
	MaxStreamsPerPeer int
	// IdleTimeout resets a stream on which neither a request arrives nor a
	// frame can be written for this long (0: 30s).
	IdleTimeout time.Duration
	// WriteTimeout makes a minimum rate (0: 10s): writing to a stream may
	// take WriteTimeout per WriteChunk (64 KiB) written, plus WriteTimeout
	// of grace; a stream that falls further behind is reset. A requester
	// must so take its answers at 6.4 KiB/s or more (by default) whenever
	// it makes the Server wait: one that reads a trickle, enough to keep a
	// plain idle timer happy, holds its slot and buffers for about
	// WriteTimeout and no longer.
	WriteTimeout time.Duration
	// MaxPending bounds the blocks pending in one request's walk (0:
	// DefaultMaxPending).
	MaxPending int
	// ReadAheadBytes bounds the block bytes all streams together hold read
	// and waiting for their writes (0: 16 MiB), besides the few blocks (at
	// most readAheadBlocks) each stream's reader is reading.
	ReadAheadBytes int64
	// PeerReadAheadBytes is one peer's share of ReadAheadBytes (0: a
	// quarter of it), so that a peer whose streams stall cannot take the
	// whole budget and stall every other peer's streams too.
	PeerReadAheadBytes int64
	// Buffers gives the buffers blocks are read into through a
	// BlockReader (nil: pools on the Go heap).
	Buffers Buffers
	// Logger receives the package's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Tracer, if set, records a server span for every request that carries
	// a trace context (Request.Trace), as a child of the requester's span.
	Tracer trace.Tracer
}

// DefaultMaxPending is the default bound on the CIDs a walk holds pending:
// far above any UnixFS DAG (a 1 TiB file of 256 KiB chunks has at most a few
// thousand pending at once), far below what would hurt memory.
const DefaultMaxPending = 1 << 20

func (c *ServerConfig) setDefaults() {
	if c.MaxStreams == 0 {
		c.MaxStreams = 64
	}
	if c.MaxStreamsPerPeer == 0 {
		c.MaxStreamsPerPeer = 8
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.ReadAheadBytes == 0 {
		c.ReadAheadBytes = 16 << 20
	}
	if c.PeerReadAheadBytes == 0 {
		c.PeerReadAheadBytes = max(c.ReadAheadBytes/4, 1)
	}
	if c.Buffers == nil {
		c.Buffers = heapBuffers{}
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
	case c.MaxStreamsPerPeer < 0:
		return fmt.Errorf("%w: negative MaxStreamsPerPeer", ErrInvalidConfig)
	case c.IdleTimeout < 0:
		return fmt.Errorf("%w: negative IdleTimeout", ErrInvalidConfig)
	case c.WriteTimeout < 0:
		return fmt.Errorf("%w: negative WriteTimeout", ErrInvalidConfig)
	case c.MaxPending < 0:
		return fmt.Errorf("%w: negative MaxPending", ErrInvalidConfig)
	case c.ReadAheadBytes < 0 || c.PeerReadAheadBytes < 0:
		return fmt.Errorf("%w: negative ReadAheadBytes or PeerReadAheadBytes", ErrInvalidConfig)
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
	Busy     int64 // streams refused with CodeBusy (MaxStreams or MaxStreamsPerPeer)
	Slow     int64 // streams reset because a write outlasted WriteTimeout
	// Held is the memory the Server holds for its streams now: each
	// stream's read and write buffers and the blocks read ahead of their
	// writes (each counted by the buffer it sits in). MaxHeld is the most
	// it ever held at once. One peer's streams together hold at most
	// MaxStreamsPerPeer*StreamBuffers, PeerReadAheadBytes of blocks
	// waiting for (or in) their writes, and PeerReads blocks being read:
	// with the defaults and blocks in buffers of at most 1 MiB, 8*36 KiB +
	// 4 MiB + 8 MiB.
	Held, MaxHeld int64
}

// WriteChunk is the most a Server writes to a stream in one call, and the
// bytes that earn a stream ServerConfig.WriteTimeout of write time.
const WriteChunk = 64 << 10

// Per-stream buffers: requests are read through a reader of streamReadBuf
// bytes and frames written through a writer of streamWriteBuf bytes (a
// larger block is written past it, in WriteChunk pieces). StreamBuffers is
// what they hold together.
const (
	streamReadBuf  = 4 << 10
	streamWriteBuf = 32 << 10
	StreamBuffers  = streamReadBuf + streamWriteBuf
)

// Server answers exchange requests. Handle may be called from many
// goroutines at once (one per stream); Close stops all of them.
type Server struct {
	cfg    ServerConfig
	reader BlockReader
	viewer Viewer
	ahead  *semaphore.Weighted // ReadAheadBytes
	sizer  Sizer
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	streams map[Stream]struct{}
	perPeer map[peer.ID]*peerState // peers served now
	closed  bool
	wg      sync.WaitGroup

	nStreams, nRequests, nBlocks, nBytes, nMissing, nBusy, nSlow atomic.Int64
	held, maxHeld                                                atomic.Int64
}

// NewServer returns a Server over cfg.Blocks.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, streams: make(map[Stream]struct{}), perPeer: make(map[peer.ID]*peerState)}
	s.reader, _ = cfg.Blocks.(BlockReader)
	s.sizer, _ = cfg.Blocks.(Sizer)
	s.viewer, _ = cfg.Blocks.(Viewer)
	s.ahead = semaphore.NewWeighted(cfg.ReadAheadBytes)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Stats returns the Server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Streams: s.nStreams.Load(), Requests: s.nRequests.Load(), Blocks: s.nBlocks.Load(),
		Bytes: s.nBytes.Load(), Missing: s.nMissing.Load(), Busy: s.nBusy.Load(),
		Slow: s.nSlow.Load(), Held: s.held.Load(), MaxHeld: s.maxHeld.Load(),
	}
}

// peerState is what a Server keeps of a peer while it serves it.
type peerState struct {
	streams int                 // streams served now
	ahead   *semaphore.Weighted // PeerReadAheadBytes
	reads   *semaphore.Weighted // PeerReads
}

// PeerReads bounds the blocks being read, or read and waiting for the
// byte budget, for one peer's streams together.
const PeerReads = 2 * readAheadBlocks

// hold adds n (negative: gives back) to the memory held for streams.
func (s *Server) hold(n int64) {
	now := s.held.Add(n)
	for {
		peak := s.maxHeld.Load()
		if now <= peak || s.maxHeld.CompareAndSwap(peak, now) {
			return
		}
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
	busy := ""
	switch {
	case len(s.streams) >= s.cfg.MaxStreams:
		busy = "too many streams"
	case s.perPeer[from] != nil && s.perPeer[from].streams >= s.cfg.MaxStreamsPerPeer:
		busy = "too many streams from this peer"
	}
	if busy != "" {
		s.mu.Unlock()
		s.nBusy.Add(1)
		// The frame is small enough for any stream's send window; the
		// write cannot block on a requester that does not read.
		_, _ = st.Write(AppendFrame(nil, Frame{Type: FrameError, Code: CodeBusy, Message: busy}))
		_ = st.Close()
		return
	}
	s.streams[st] = struct{}{}
	ps := s.perPeer[from]
	if ps == nil {
		ps = &peerState{ahead: semaphore.NewWeighted(s.cfg.PeerReadAheadBytes), reads: semaphore.NewWeighted(PeerReads)}
		s.perPeer[from] = ps
	}
	ps.streams++
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		if ps.streams--; ps.streams == 0 {
			delete(s.perPeer, from)
		}
		s.mu.Unlock()
		s.wg.Done()
	}()
	s.nStreams.Add(1)

	dog := newWatchdog(s.cfg.IdleTimeout, func() { _ = st.Reset() })
	defer dog.stop()
	// The write watchdog's clock runs only while a write is under way
	// (chunkWriter).
	wdog := newWatchdog(s.cfg.WriteTimeout, func() { s.nSlow.Add(1); _ = st.Reset() })
	wdog.stopClock()
	defer wdog.stop()
	s.hold(StreamBuffers)
	defer s.hold(-StreamBuffers)
	err := s.serve(st, from, ps, dog, wdog)
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
func (s *Server) serve(st Stream, from peer.ID, ps *peerState, dog, wdog *watchdog) error {
	br := bufio.NewReaderSize(&kickReader{st, dog}, streamReadBuf)
	bw := bufio.NewWriterSize(&chunkWriter{w: st, dog: dog, wdog: wdog}, streamWriteBuf)
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
		if err := s.answerTraced(req, ps, bw, from); err != nil {
			return err
		}
	}
}

// answerTraced answers req and flushes, under a server span when req
// carries a trace context and the Server has a Tracer.
func (s *Server) answerTraced(req Request, ps *peerState, bw *bufio.Writer, from peer.ID) (err error) {
	if s.cfg.Tracer != nil && req.Trace != "" {
		ctx := remoteParent(context.Background(), req.Trace)
		if trace.SpanContextFromContext(ctx).IsValid() {
			_, span := s.cfg.Tracer.Start(ctx, "weft.exchange.serve", trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("peer", from.String()), attribute.Int("wants", len(req.Wants))))
			defer func() {
				if err != nil {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
				}
				span.End()
			}()
		}
	}
	if err := s.answer(req, ps, bw); err != nil {
		return err
	}
	return bw.Flush()
}

// answer walks req and writes its frames to bw, ending with End. A reader
// goroutine walks and reads the blocks ahead of the writes (bounded by
// ReadAheadBytes across the Server and PeerReadAheadBytes for ps), so
// reading the next blocks from disk overlaps sending this one; answer owns
// it and waits for it to end.
func (s *Server) answer(req Request, ps *peerState, bw *bufio.Writer) error {
	ctx, cancel := context.WithCancel(s.ctx)
	ahead := make(chan readBlock, readAheadBlocks)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.readBlocks(ctx, req, ps, ahead)
	}()
	defer func() {
		cancel()
		for rb := range ahead { // the reader stops at ctx's end; free what it read
			s.release(rb)
		}
		<-done
	}()
	var hdr [binary.MaxVarintLen64 + 1]byte
	for rb := range ahead {
		switch {
		case rb.err != nil && rb.code == 0:
			return rb.err
		case rb.err != nil:
			return s.fail(bw, rb.code, rb.err)
		case rb.data == nil:
			s.nMissing.Add(1)
			if _, err := bw.Write(AppendFrame(hdr[:0], Frame{Type: FrameMissing, Cid: rb.it.c})); err != nil {
				return err
			}
			continue
		}
		h := binary.AppendUvarint(hdr[:0], uint64(1+len(rb.data)))
		h = append(h, byte(FrameBlock))
		_, err := bw.Write(h)
		if err == nil {
			_, err = bw.Write(rb.data)
		}
		n := len(rb.data)
		s.release(rb)
		if err != nil {
			return err
		}
		// Send what is buffered once it is worth a write, rather than let
		// it wait for the next blocks: their reads may be slow.
		if bw.Buffered() >= flushAt {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		s.nBlocks.Add(1)
		s.nBytes.Add(int64(n))
	}
	_, err := bw.Write(AppendFrame(hdr[:0], Frame{Type: FrameEnd}))
	return err
}

// readBlock is one step of a request's walk, read ahead of its write: a
// block (data, held in buf if buf is not nil, and counted in the Server's
// read-ahead budget as held), a want the store lacks (data nil), or the
// error that ends the answer (with an Error frame of code, or none if code
// is 0).
type readBlock struct {
	it    item
	data  []byte
	buf   []byte
	held  int64               // read-ahead budget taken from the Server's
	pheld int64               // and from the peer's,
	peer  *semaphore.Weighted // which is this
	slot  *semaphore.Weighted // the peer's read slot it holds, if not nil
	mem   int64               // memory counted in the Server's Held
	err   error
	code  ErrorCode
}

// readAheadBlocks bounds the blocks one stream reads ahead of its writes.
const readAheadBlocks = 4

// release gives back rb's buffer and read-ahead budget.
func (s *Server) release(rb readBlock) {
	if rb.buf != nil {
		s.cfg.Buffers.Put(rb.buf)
	}
	if rb.held > 0 {
		s.ahead.Release(rb.held)
	}
	if rb.pheld > 0 {
		rb.peer.Release(rb.pheld)
	}
	if rb.slot != nil {
		rb.slot.Release(1)
	}
	if rb.mem > 0 {
		s.hold(-rb.mem)
	}
}

// load reads rb's block into rb, counting what it holds in Held.
func (s *Server) load(rb *readBlock) {
	rb.data, rb.buf, rb.err = s.read(rb.it)
	rb.mem = int64(max(len(rb.data), cap(rb.buf)))
	s.hold(rb.mem)
}

// readBlocks walks req, reading each block, and passes the steps to out in
// walk order; it closes out when the walk ends, fails, or ctx ends.
//
// Leaves (blocks the walk does not descend into: raw blocks, and any block
// under ScopeBlock) are read up to readAheadBlocks at a time, each on a
// goroutine of its own, so a disk serves several reads at once; an inner
// node is read before the walk goes on, since its links decide what comes
// next. Blocks read past a request's Limit are dropped unsent.
func (s *Server) readBlocks(ctx context.Context, req Request, ps *peerState, out chan<- readBlock) {
	defer close(out)
	type future struct {
		rb   readBlock
		done chan struct{}
	}
	var window []*future
	defer func() { // reads still running end on their own; free what they read
		for _, f := range window {
			<-f.done
			s.release(f.rb)
		}
	}()
	wants := make([]item, len(req.Wants))
	for i, w := range req.Wants {
		wants[i] = item{c: w.Cid, scope: w.Scope}
	}
	wk := newWalk(wants, s.cfg.MaxPending)
	var walkErr error
	walked := false
	fill := func() {
		for !walked && walkErr == nil && len(window) < readAheadBlocks {
			// A read takes one of the peer's read slots, which it gives
			// back once its block has the byte budget. It waits for one
			// only with an empty window: a reader that holds no slot
			// keeps none from anyone while it waits.
			if len(window) == 0 {
				if err := ps.reads.Acquire(ctx, 1); err != nil {
					walkErr = err
					return
				}
			} else if !ps.reads.TryAcquire(1) {
				return
			}
			it, ok, err := wk.next()
			if err != nil || !ok {
				ps.reads.Release(1)
				walkErr, walked = err, err == nil
				return
			}
			f := &future{rb: readBlock{it: it, slot: ps.reads}, done: make(chan struct{})}
			window = append(window, f)
			leaf := it.scope.Kind == ScopeBlock || it.c.Type() != cid.DagProtobuf
			if est := int64(it.est); leaf && len(window) > 1 && est > 0 && est <= MaxBlockSize {
				go func() {
					defer close(f.done)
					s.load(&f.rb)
				}()
				continue
			}
			s.load(&f.rb)
			close(f.done)
			if !leaf && f.rb.err == nil && len(f.rb.data) <= MaxBlockSize {
				f.rb.err = wk.expand(it, f.rb.data)
				if f.rb.err != nil {
					f.rb.code = CodeInternal
				}
			}
		}
	}
	send := func(rb readBlock) bool {
		select {
		case out <- rb:
			return true
		case <-ctx.Done():
			s.release(rb)
			return false
		}
	}
	var sent uint64
	for req.Limit == 0 || sent < req.Limit {
		fill()
		if len(window) == 0 {
			if walkErr != nil {
				send(readBlock{err: walkErr, code: CodeInternal})
			}
			return
		}
		f := window[0]
		window[0] = nil
		window = window[1:]
		<-f.done
		rb := f.rb
		switch {
		case ipld.IsNotFound(rb.err):
			s.release(rb)
			if !send(readBlock{it: rb.it}) {
				return
			}
			continue
		case rb.err != nil && rb.code != 0: // the walk failed on this block
		case rb.err != nil:
			if s.ctx.Err() == nil {
				rb.err, rb.code = fmt.Errorf("read block %s: %w", rb.it.c, rb.err), CodeInternal
			}
		case len(rb.data) > MaxBlockSize:
			rb.err, rb.code = fmt.Errorf("block %s of %d bytes exceeds %d", rb.it.c, len(rb.data), MaxBlockSize), CodeInternal
		}
		if rb.err != nil {
			s.release(rb)
			send(readBlock{err: rb.err, code: rb.code})
			return
		}
		// The budget is taken here, for blocks on their way to the writer
		// only: what holds it is always drained by writes (or freed when a
		// stalled stream is cut off), never by this reader, so waiting for
		// it cannot deadlock. The peer's share first: a peer whose streams
		// stall waits on its own share, and leaves the rest to others.
		pheld := min(rb.mem, s.cfg.PeerReadAheadBytes)
		if err := ps.ahead.Acquire(ctx, pheld); err != nil {
			s.release(rb)
			return
		}
		rb.pheld, rb.peer = pheld, ps.ahead
		held := min(rb.mem, s.cfg.ReadAheadBytes)
		if err := s.ahead.Acquire(ctx, held); err != nil {
			s.release(rb)
			return
		}
		rb.held = held
		rb.slot.Release(1) // the budget holds it now
		rb.slot = nil
		sent += uint64(len(rb.data))
		if !send(rb) {
			return
		}
	}
}

// readBufSize is the buffer a Server reads a block into when its Getter
// cannot tell the block's size: enough for the leaves of the usual
// chunkings (a larger block comes in a buffer of the reader's own).
const readBufSize = 1 << 20

// read returns c's data: read through the BlockReader or the Viewer into a
// buffer from Buffers (returned too, to give back; nil if the data is in
// another), or as Get returns it.
func (s *Server) read(it item) ([]byte, []byte, error) {
	if s.reader == nil && s.viewer == nil {
		blk, err := s.cfg.Blocks.Get(s.ctx, it.c)
		if err != nil {
			return nil, nil, err
		}
		return blk.RawData(), nil, nil
	}
	n := readBufSize
	if s.sizer != nil {
		// A buffer of the block's size: large blocks get one for direct
		// I/O, small ones do not tie one up. (An error here is the read's
		// to report.)
		if size, err := s.sizer.GetSize(s.ctx, it.c); err == nil && size >= 0 && size <= MaxBlockSize {
			n = size
		}
	}
	buf := s.cfg.Buffers.Get(n)
	var data []byte
	var err error
	if s.reader != nil {
		data, err = s.reader.ReadInto(s.ctx, it.c, buf[:0])
	} else {
		err = s.viewer.View(s.ctx, it.c, func(b []byte) error {
			data = append(buf[:0], b...)
			return nil
		})
	}
	if err != nil || (cap(data) > 0 && cap(buf) > 0 && &data[:1][0] != &buf[:1][0]) {
		s.cfg.Buffers.Put(buf) // unused: the data is elsewhere
		buf = nil
	}
	if err != nil {
		return nil, nil, err
	}
	return data, buf, nil
}

// flushAt is how many buffered bytes make the Server flush after a block:
// small blocks share writes, larger ones go out at once.
const flushAt = 16 << 10

// fail sends an Error frame and returns err.
func (s *Server) fail(bw *bufio.Writer, code ErrorCode, err error) error {
	_, _ = bw.Write(AppendFrame(nil, Frame{Type: FrameError, Code: code, Message: err.Error()}))
	_ = bw.Flush()
	return err
}
