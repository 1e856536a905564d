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

type kickWriter struct {
	w   io.Writer
	dog *watchdog
}

func (k *kickWriter) Write(p []byte) (int, error) {
	k.dog.kick()
	n, err := k.w.Write(p)
	if n > 0 {
		k.dog.kick()
	}
	return n, err
}
