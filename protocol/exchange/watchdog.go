package exchange

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// watchdog calls fire once if kick is not called for d while it is not
// paused. kick is cheap (an atomic store), so it can run on every read.
type watchdog struct {
	d      time.Duration
	fire   func()
	last   atomic.Int64 // unix nanos of the last kick
	spent  atomic.Int64 // nanos used when stopClock stopped the clock
	paused atomic.Int32
	fired  atomic.Bool

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func newWatchdog(d time.Duration, fire func()) *watchdog {
	w := &watchdog{d: d, fire: fire}
	w.kick()
	w.t = time.AfterFunc(d, w.check)
	return w
}

func (w *watchdog) kick() { w.last.Store(time.Now().UnixNano()) }

// pause stops the clock until resume: the wait is ours, not the peer's.
func (w *watchdog) pause() { w.paused.Add(1) }

func (w *watchdog) resume() {
	w.kick()
	w.paused.Add(-1)
}

// stopClock and startClock pause and resume the clock keeping the time
// already used, where pause and resume give a fresh start; credit gives
// back d of it (never more than it used). Together they make a watchdog
// that fires when the time spent between startClock and stopClock runs
// more than its d ahead of the credit earned.
func (w *watchdog) stopClock() {
	w.spent.Store(time.Now().UnixNano() - w.last.Load())
	w.paused.Add(1)
}

func (w *watchdog) startClock() {
	w.last.Store(time.Now().UnixNano() - w.spent.Load())
	w.paused.Add(-1)
}

func (w *watchdog) credit(d time.Duration) {
	now := time.Now().UnixNano()
	w.last.Store(min(now, w.last.Load()+int64(d)))
}

// check runs on the timer's goroutine; fire runs there too.
func (w *watchdog) check() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	idle := time.Duration(time.Now().UnixNano() - w.last.Load())
	if w.paused.Load() > 0 || idle < w.d {
		w.t.Reset(max(w.d-idle, w.d/8))
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.fired.Store(true)
	w.mu.Unlock()
	w.fire()
}

// stop disarms the watchdog; it reports whether it had fired.
func (w *watchdog) stop() bool {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
	return w.fired.Load()
}

// kickReader and kickWriter kick a watchdog on every call that moves bytes.
type kickReader struct {
	r   io.Reader
	dog *watchdog
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.dog.kick()
	}
	return n, err
}

// chunkWriter writes in pieces of at most WriteChunk bytes, and kicks the
// idle watchdog dog whenever bytes move. The write watchdog wdog's clock
// runs only while a piece is being written, and each byte written earns
// back wdog.d/WriteChunk of it: wdog fires once writing has taken d longer
// than the bytes written earned, so a requester that takes its answer
// slower than WriteChunk per d is cut off however often it takes a few
// bytes, and one that keeps up never is.
type chunkWriter struct {
	w         io.Writer
	dog, wdog *watchdog
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		piece := p[done:min(len(p), done+WriteChunk)]
		c.dog.kick()
		c.wdog.startClock()
		n, err := c.w.Write(piece)
		c.wdog.credit(time.Duration(int64(c.wdog.d) * int64(n) / WriteChunk))
		c.wdog.stopClock()
		done += n
		if n > 0 {
			c.dog.kick()
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
