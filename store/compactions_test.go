package store

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-datastore"
)

// compactors counts Badger's running compaction workers in this process.
func compactors() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "levelsController).runCompactor(")
}

// waitCompactors waits until want workers run (they stop and start
// synchronously, but other stores' tests may still be closing).
func waitCompactors(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for compactors() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d compaction workers running, want %d", compactors(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCompactionsPause: an idle store pauses Badger's compaction workers;
// writes far past what level 0 holds before it stalls resume them and
// complete; once the tree is compacted again they pause again; and a
// paused store closes and reopens with its data.
func TestCompactionsPause(t *testing.T) {
	waitCompactors(t, 0) // no other test's store open (none runs in parallel)
	s := openStore(t, Config{MemTableSize: 1 << 20})
	waitCompactors(t, 2)

	s.comp.check()
	waitCompactors(t, 2) // written just now: not idle yet
	s.comp.idle = 0
	s.comp.check()
	waitCompactors(t, 0)
	if s.comp.pauses.Load() != 1 {
		t.Fatalf("pauses = %d, want 1", s.comp.pauses.Load())
	}

	// 12 MiB of 900-byte records, kept in the LSM tree (under the value
	// threshold): a dozen 1 MiB memtables, half as many again as the
	// level-0 tables at which Badger stalls writes until compaction
	// catches up.
	ctx := context.Background()
	val := make([]byte, 900)
	const n = 12 << 20 / 900
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Datastore().Put(ctx, datastore.NewKey(fmt.Sprintf("k/%08d", i)), val); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("writes stalled with the compaction workers paused (%d running)", compactors())
	}
	if compactors() != 2 {
		t.Fatalf("%d compaction workers after writes, want 2", compactors())
	}

	// Paused again once the tree needs no compaction. A memtable flush
	// still under way can add a level-0 table just after a pause; the
	// next check then resumes, so wait for a pause with nothing to
	// compact.
	deadline := time.Now().Add(time.Minute)
	for !s.comp.paused.Load() || needsCompaction(s.db) {
		if time.Now().After(deadline) {
			t.Fatalf("never paused again with nothing to compact; paused %v, levels: %+v", s.comp.paused.Load(), s.db.Levels())
		}
		s.comp.check() // pauses when idle with nothing to compact, resumes when paused with something
		time.Sleep(20 * time.Millisecond)
	}
	waitCompactors(t, 0)

	s2 := reopen(t, s)
	if ok, err := s2.Datastore().Has(ctx, datastore.NewKey(fmt.Sprintf("k/%08d", n-1))); err != nil || !ok {
		t.Fatalf("last record after reopen: %v %v", ok, err)
	}
}

// TestCompactionsRace: pauses, resumes and writes from many goroutines at
// once (for the race detector), then Close.
func TestCompactionsRace(t *testing.T) {
	s := openStore(t, Config{MemTableSize: 1 << 20})
	s.comp.idle = 0
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				if err := s.Datastore().Put(ctx, datastore.NewKey(fmt.Sprintf("w%d/%d", w, i)), make([]byte, 500)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 300 {
			s.comp.check()
		}
	}()
	wg.Wait()
	if s.comp.pauses.Load() == 0 {
		t.Log("never paused while writing") // possible, not wrong
	}
}
