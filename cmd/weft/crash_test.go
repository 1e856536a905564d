package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
	"github.com/weft-p2p/weft/node/nodetest"
	"github.com/weft-p2p/weft/protocol/unixfs/unixfstest"
)

// buildWeft builds the weft binary into a temporary directory and returns
// its path.
func buildWeft(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "weft")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemonProc is a `weft daemon` subprocess.
type daemonProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error
}

// startDaemon runs `weft daemon --repo dir` and waits until it says it is
// ready, the API file names the address it announced, and the API answers.
// The process is killed by PID on cleanup if it is still running.
func startDaemon(t *testing.T, bin, dir string) *daemonProc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{logPath: logf.Name(), done: make(chan struct{})}
	d.cmd = exec.Command(bin, "daemon", "--repo", dir, "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start daemon: %v", err)
	}
	logf.Close() // the child has its own descriptor
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("daemon %d log:\n%s", d.cmd.Process.Pid, d.log())
		}
	})

	var addr string
	nodetest.WaitFor(t, 30*time.Second, "daemon says it is ready", func() bool {
		select {
		case <-d.done:
			t.Fatalf("daemon exited before it was ready (%v):\n%s", d.waitErr, d.log())
		default:
		}
		_, rest, ok := strings.Cut(d.log(), "ready; API on ")
		if !ok {
			return false
		}
		addr, _, ok = strings.Cut(rest, "\n")
		return ok
	})
	nodetest.WaitFor(t, 10*time.Second, "REPO/api names the new daemon's address and the API answers", func() bool {
		a, err := node.ReadAPIAddr(dir)
		if err != nil || a != addr {
			return false
		}
		code, _, _ := weftQuiet("id", "--repo", dir)
		return code == 0
	})
	return d
}

func (d *daemonProc) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// kill sends SIGKILL to the daemon's PID, unless it has exited, and waits.
func (d *daemonProc) kill() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// weftQuiet runs the CLI in-process, for polling.
func weftQuiet(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// gate is a reader of a generated stream that stops after limit bytes and
// blocks until release, so a stream can be cut off mid-add.
type gate struct {
	r       io.Reader
	limit   int64
	n       int64
	release chan struct{}
	once    sync.Once
}

func (g *gate) Read(p []byte) (int, error) {
	if g.n >= g.limit {
		<-g.release
		return 0, errors.New("stream cut by the test")
	}
	if left := g.limit - g.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// TestDaemonKilledMidAdd kills a daemon with SIGKILL while it imports a
// 200 MiB stream, then starts a new daemon on the same repo. The stale API
// file and lock the killed process left must not stop it, and the repo
// must work: the file pinned before the crash is listed and readable, a
// new add works, and gc collects what the cut add wrote.
func TestDaemonKilledMidAdd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the weft binary and streams up to 128 MiB")
	}
	bin := buildWeft(t)
	dir := initRepo(t)
	d := startDaemon(t, bin, dir)

	// A small file, pinned, before the crash.
	inputs := t.TempDir()
	smallPath := filepath.Join(inputs, "small")
	writeGen(t, smallPath, "crash-small", 300_000)
	smallWant, _ := os.ReadFile(smallPath)
	code, out, stderr := weft(t, "add", "--repo", dir, "--name", "before-crash", smallPath)
	if code != 0 {
		t.Fatalf("add small: exit %d: %s", code, stderr)
	}
	small := strings.TrimSpace(out)

	// A 200 MiB stream into the API; the test lets at most 128 MiB through,
	// so the add cannot finish before the kill.
	addr, err := node.ReadAPIAddr(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(addr, node.ReadToken(dir))
	status := func() api.Status {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return s
	}
	base := status().Store
	g := &gate{r: unixfstest.NewInput("crash-big", 200<<20), limit: 128 << 20, release: make(chan struct{})}
	t.Cleanup(g.open)
	addDone := make(chan error, 1)
	go func() {
		_, err := c.Add(context.Background(), files.NewReaderFile(g), nil, nil, nil)
		addDone <- err
	}()
	nodetest.WaitFor(t, 60*time.Second, "the daemon stores 32 MiB of the stream", func() bool {
		select {
		case err := <-addDone:
			t.Fatalf("the add ended before the kill: %v", err)
		default:
		}
		return status().Store.Bytes-base.Bytes >= 32<<20
	})
	pid := d.cmd.Process.Pid
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	<-d.done
	g.open()
	select {
	case err := <-addDone:
		if err == nil {
			t.Fatal("the add reported success although its daemon was killed")
		}
		t.Logf("add cut by the kill: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the add did not return after its daemon was killed")
	}

	// The killed daemon left its API file and lock file behind.
	for _, f := range []string{node.APIFile, node.LockFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("expected a stale %s after SIGKILL: %v", f, err)
		}
	}
	if code, _, stderr := weft(t, "id", "--repo", dir); code == 0 {
		t.Fatal("weft id succeeded with the daemon killed")
	} else {
		t.Logf("with the daemon killed, weft id says: %s", strings.TrimSpace(stderr))
	}

	d2 := startDaemon(t, bin, dir)

	// The pin made before the crash is intact and its file readable.
	code, out, stderr = weft(t, "pin", "ls", "--repo", dir)
	if code != 0 || !strings.Contains(out, small) || !strings.Contains(out, "before-crash") {
		t.Fatalf("pin ls after restart: exit %d, %q, %s; want %s before-crash", code, out, stderr, small)
	}
	code, out, stderr = weft(t, "cat", "--repo", dir, small)
	if code != 0 || out != string(smallWant) {
		t.Fatalf("cat %s after restart: exit %d, %d bytes (want %d): %s", small, code, len(out), len(smallWant), stderr)
	}

	// A new add works.
	newPath := filepath.Join(inputs, "after")
	writeGen(t, newPath, "crash-after", 5<<20)
	newWant, _ := os.ReadFile(newPath)
	code, out, stderr = weft(t, "add", "--repo", dir, newPath)
	if code != 0 {
		t.Fatalf("add after restart: exit %d: %s", code, stderr)
	}
	after := strings.TrimSpace(out)

	// gc runs, collects what the cut add wrote, and keeps both pins.
	code, out, stderr = weft(t, "gc", "--repo", dir, "--json")
	if code != 0 {
		t.Fatalf("gc after restart: exit %d: %s", code, stderr)
	}
	var gc api.GCResult
	if err := json.Unmarshal([]byte(out), &gc); err != nil {
		t.Fatalf("gc --json: %v: %q", err, out)
	}
	t.Logf("gc after restart: freed %d blocks (%d MiB); %d live; disk %d MiB -> %d MiB",
		gc.BlocksFreed, gc.BytesFreed>>20, gc.LiveBlocks, gc.DiskBefore>>20, gc.DiskAfter>>20)
	if gc.BlocksFreed == 0 || gc.BytesFreed < 16<<20 {
		t.Errorf("gc freed %d blocks, %d bytes; the cut add had stored over 32 MiB", gc.BlocksFreed, gc.BytesFreed)
	}
	for _, f := range []struct {
		cid  string
		want []byte
	}{{small, smallWant}, {after, newWant}} {
		code, out, stderr = weft(t, "cat", "--repo", dir, f.cid)
		if code != 0 || out != string(f.want) {
			t.Fatalf("cat %s after gc: exit %d, %d bytes (want %d): %s", f.cid, code, len(out), len(f.want), stderr)
		}
	}

	// And the daemon stops cleanly when asked.
	if code, _, stderr := weft(t, "shutdown", "--repo", dir); code != 0 {
		t.Fatalf("shutdown: exit %d: %s", code, stderr)
	}
	select {
	case <-d2.done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running 30s after shutdown")
	}
	if d2.waitErr != nil || !strings.Contains(d2.log(), "stopped cleanly") {
		t.Fatalf("daemon exit after shutdown: %v", d2.waitErr)
	}
}
