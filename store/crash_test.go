package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-datastore"
)

const crashChildEnv = "WEFT_STORE_CRASH_CHILD"

// TestCrashChild is the process TestReopenAfterKill kills: it writes
// batches forever and prints the number of each batch once stored.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestReopenAfterKill")
	}
	s, err := Open(Config{Path: dir, ValueLogFileSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := 0; ; i++ {
		blks := crashBatch(t, i)
		ss := s.NewSession()
		if err := ss.Blockstore().PutMany(ctx, blks); err != nil {
			t.Fatal(err)
		}
		if err := s.Pins().Add(ctx, blks[0].Cid(), Direct, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		ss.Close()
		if err := s.Datastore().Put(ctx, datastore.NewKey(fmt.Sprintf("/batch/%d", i)), []byte("done")); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("stored %d\n", i)
	}
}

func crashBatch(t testing.TB, i int) []blocks.Block {
	return distinctBlocks(t, uint64(i)+1, 8, 64<<10)
}

// TestReopenAfterKill kills a process in the middle of writing, then opens
// the same directory: everything acknowledged is there and the store works.
func TestReopenAfterKill(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	ctx := t.Context()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const wantBatches = 40
	acked := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "stored "); ok {
			acked, _ = strconv.Atoi(n)
			if acked+1 >= wantBatches {
				break
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if acked+1 < wantBatches {
		t.Fatalf("child stored only %d batches before it stopped", acked+1)
	}

	s := openStore(t, Config{Path: dir, ValueLogFileSize: 4 << 20})
	for i := 0; i <= acked; i++ {
		blks := crashBatch(t, i)
		mustHave(t, s, true, blks...)
		if p, err := s.Pins().Get(ctx, blks[0].Cid()); err != nil || p.Name != strconv.Itoa(i) {
			t.Fatalf("pin of batch %d: %+v, %v", i, p, err)
		}
		if ok, _ := s.Datastore().Has(ctx, datastore.NewKey(fmt.Sprintf("/batch/%d", i))); !ok {
			t.Fatalf("datastore lost /batch/%d", i)
		}
	}
	// The counters were rebuilt from what is on disk.
	ch, err := s.Blockstore().AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for range ch {
		n++
	}
	if st := s.Stat(); st.Blocks != n || st.BlockBytes != n*(64<<10) {
		t.Fatalf("Stat = %+v, but %d blocks of 64 KiB are stored", st, n)
	}
	// And the store works: GC keeps the pinned blocks and drops the rest.
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stat(); st.Blocks < int64(acked+1) {
		t.Fatalf("after GC (%+v) only %d blocks left, %d are pinned", res, st.Blocks, acked+1)
	}
	putAll(t, s, distinctBlocks(t, 9999, 4, 1000)...)
}
