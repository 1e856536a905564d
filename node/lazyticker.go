package node

import "time"

// lazyTicker ticks only while its owner has something to tick for, so an
// idle node does not wake for it. A loop calls C on each pass with whether
// it has work and selects on the result: nil while idle, which never fires.
// It belongs to that one loop (not safe for concurrent use).
type lazyTicker struct {
	every time.Duration
	t     *time.Ticker
}

// C returns the ticker's channel while active, starting it if need be, and
// stops it and returns nil otherwise.
func (l *lazyTicker) C(active bool) <-chan time.Time {
	if !active {
		l.Stop()
		return nil
	}
	if l.t == nil {
		l.t = time.NewTicker(l.every)
	}
	return l.t.C
}

// Stop stops the ticker if it runs.
func (l *lazyTicker) Stop() {
	if l.t != nil {
		l.t.Stop()
		l.t = nil
	}
}
