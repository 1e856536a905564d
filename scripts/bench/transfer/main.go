// Command transfer measures 256 MiB moving between two weft daemons through
// the CLI, each figure beside its baseline measured in the same iteration:
//
//	stream-tls, stream-noise  a plain libp2p stream of the same size between
//	                          two hosts in two processes (this one and a
//	                          child it starts), TCP on 127.0.0.1, yamux, one
//	                          with TLS and one with Noise; "best" is the
//	                          faster of the two in that iteration
//	sha256                    SHA-256 over the same bytes in this process
//	add                       `weft add --repo A -q -` of a fresh file (stdin)
//	cat                       `weft cat --repo B CID >/dev/null` of a fresh
//	                          file A added (untimed)
//	pin                       `weft pin add --repo B CID` of another fresh
//	                          file A added (fetch into B's store)
//	kubo-add                  with -kubo: `ipfs add -q --offline` of the
//	                          same bytes into an offline Kubo repo
//	kubo-cat                  with -kubo (as root): `ipfs cat CID >/dev/null`
//	                          on Kubo daemon B of a fresh file Kubo daemon A
//	                          added (untimed), the two connected on
//	                          127.0.0.1 in a loopback-only network namespace
//
// Every iteration measures all of them back to back, and it prints the
// median throughput of each, its median CPU time per MiB (this process, its
// finished children, the stream server and the daemons given with -pids:
// the work of every process involved, which a busy machine disturbs less
// than the wall time) and the medians of the per-iteration ratios
// (cat/best, pin/best, add/sha256, add/kubo-add, cat/kubo-cat). scripts/bench/transfer.sh
// starts the daemons and runs it.
//
//	transfer -weft BIN -a REPO_A -b REPO_B [-pids PID,PID] [-iters 5] [-size 268435456] [-kubo IPFS_BIN]
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/node/proc"
	"github.com/weft-p2p/weft/scripts/bench/internal/kubo"
)

const streamProto = "/weft-bench/transfer/1.0.0"

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		err = serve(os.Args[2:])
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "transfer:", err)
		os.Exit(1)
	}
}

// pattern yields size bytes of a random 1 MiB pattern, stamped every
// 64 KiB with a per-input nonce and the offset, so no two chunks of any
// size from 64 KiB up are alike, within or across inputs (as in
// node/bench_test.go).
type pattern struct {
	buf       []byte
	nonce     uint64
	left, off int64
}

var basePattern = func() []byte {
	p := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return p
}()

var nonce atomic.Uint64

func init() { nonce.Store(uint64(time.Now().UnixNano())) }

func newPattern(size int64) *pattern {
	return &pattern{buf: slices.Clone(basePattern), nonce: nonce.Add(1), left: size}
}

func (r *pattern) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	const stamp = 64 << 10
	at := r.off % int64(len(r.buf))
	end := min(int64(len(r.buf)), at+r.left, (at/stamp+1)*stamp)
	if at%stamp == 0 {
		binary.LittleEndian.PutUint64(r.buf[at:], r.nonce)
		binary.LittleEndian.PutUint64(r.buf[at+8:], uint64(r.off))
	}
	n := copy(b, r.buf[at:end])
	r.off += int64(n)
	r.left -= int64(n)
	return n, nil
}

// security names the two transports measured, each host offering only one.
var security = []struct {
	name string
	opt  libp2p.Option
}{
	{"tls", libp2p.Security(libp2ptls.ID, libp2ptls.New)},
	{"noise", libp2p.Security(noise.ID, noise.New)},
}

func newHost(sec libp2p.Option, listen bool) (host.Host, error) {
	opts := []libp2p.Option{sec, libp2p.Transport(tcp.NewTCPTransport), libp2p.DefaultMuxers, libp2p.DisableRelay(),
		libp2p.ResourceManager(&network.NullResourceManager{})}
	if listen {
		opts = append(opts, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	return libp2p.New(opts...)
}

// serve is the child: one host per security transport, each writing size
// bytes on every stream of streamProto. It prints "NAME MULTIADDR" per host
// and runs until its stdin closes.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	size := fs.Int64("size", 256<<20, "bytes per stream")
	fs.Parse(args)
	for _, s := range security {
		h, err := newHost(s.opt, true)
		if err != nil {
			return fmt.Errorf("%s host: %w", s.name, err)
		}
		defer h.Close()
		h.SetStreamHandler(streamProto, func(st network.Stream) {
			// 1 MiB writes, as weft's exchange writes 1 MiB blocks.
			buf := make([]byte, 1<<20)
			src := newPattern(*size)
			for {
				n, err := io.ReadFull(src, buf)
				if n > 0 {
					if _, err := st.Write(buf[:n]); err != nil {
						st.Reset()
						return
					}
				}
				if err != nil {
					break
				}
			}
			st.CloseWrite()
			io.Copy(io.Discard, st) // until the reader closes
			st.Close()
		})
		fmt.Printf("%s %s/p2p/%s\n", s.name, h.Addrs()[0], h.ID())
	}
	io.Copy(io.Discard, os.Stdin)
	return nil
}

type result struct {
	names []string
	secs  map[string][]float64
	cpu   map[string][]float64 // CPU seconds of all the processes involved
}

func (r *result) add(name string, d time.Duration) {
	if r.secs[name] == nil {
		r.names = append(r.names, name)
	}
	r.secs[name] = append(r.secs[name], d.Seconds())
}

// procCPU returns the user+system CPU time of process pid so far, from
// /proc/PID/stat (0 if it cannot be read).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(b), ") ") // the name may hold spaces
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// cpuMeter sums the CPU time of this process, its finished children (the
// weft commands), the stream server and the daemons.
type cpuMeter struct{ pids []int }

func (m cpuMeter) now() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	t := time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
	for _, p := range m.pids {
		t += procCPU(p)
	}
	return t
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func run() error {
	weft := flag.String("weft", "", "weft binary")
	repoA := flag.String("a", "", "repo of daemon A (adds)")
	repoB := flag.String("b", "", "repo of daemon B (cat, pin add), connected to A")
	iters := flag.Int("iters", 5, "iterations (at least 3)")
	size := flag.Int64("size", 256<<20, "bytes per transfer")
	kubo := flag.String("kubo", "", "Kubo binary (ipfs): baselines for add (offline) and, as root, for cat (two Kubo daemons)")
	pids := flag.String("pids", "", "comma-separated PIDs of the daemons, for their CPU time")
	flag.Parse()
	if *weft == "" || *repoA == "" || *repoB == "" || *iters < 3 {
		return errors.New("usage: transfer -weft BIN -a REPO_A -b REPO_B [-iters N>=3] [-size BYTES] [-kubo IPFS_BIN]")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// The stream server, in its own process as daemon A is.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, self, "serve", "-size", strconv.FormatInt(*size, 10))
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return fmt.Errorf("start stream server: %w", err)
	}
	defer func() { stdin.Close(); child.Wait() }()
	meter := cpuMeter{pids: []int{child.Process.Pid}}
	for _, p := range strings.Split(*pids, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil {
			meter.pids = append(meter.pids, n)
		}
	}
	clients := map[string]host.Host{}
	servers := map[string]peer.ID{}
	sc := bufio.NewScanner(out)
	for range security {
		if !sc.Scan() {
			return fmt.Errorf("stream server: no address: %v", sc.Err())
		}
		name, addr, _ := strings.Cut(sc.Text(), " ")
		m, err := ma.NewMultiaddr(addr)
		if err != nil {
			return err
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return err
		}
		for _, s := range security {
			if s.name != name {
				continue
			}
			h, err := newHost(s.opt, false)
			if err != nil {
				return err
			}
			defer h.Close()
			if err := h.Connect(ctx, *ai); err != nil {
				return fmt.Errorf("connect %s: %w", name, err)
			}
			clients[name], servers[name] = h, ai.ID
		}
	}
	stream := func(name string) (time.Duration, error) {
		h := clients[name]
		buf := make([]byte, 1<<20)
		t0 := time.Now()
		s, err := h.NewStream(ctx, servers[name], streamProto)
		if err != nil {
			return 0, err
		}
		defer s.Close()
		n, err := io.CopyBuffer(io.Discard, s, buf)
		if err == nil && n != *size {
			err = fmt.Errorf("stream %s: %d bytes", name, n)
		}
		return time.Since(t0), err
	}

	weftCmd := func(stdin io.Reader, stdout io.Writer, args ...string) (time.Duration, string, error) {
		cmd := exec.CommandContext(ctx, *weft, args...)
		cmd.Stdin = stdin
		var so strings.Builder
		if stdout == nil {
			cmd.Stdout = &so
		} else {
			cmd.Stdout = stdout
		}
		var se strings.Builder
		cmd.Stderr = &se
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return 0, "", fmt.Errorf("weft %s: %w: %s", strings.Join(args, " "), err, se.String())
		}
		return d, strings.TrimSpace(so.String()), nil
	}
	// addA adds a fresh file to A through the CLI, as a user would.
	addA := func() (time.Duration, string, error) {
		return weftCmd(newPattern(*size), nil, "add", "--repo", *repoA, "-q", "-")
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()

	var kuboRepo string
	if *kubo != "" {
		kuboRepo, err = os.MkdirTemp("", "weft-bench-kubo.")
		if err != nil {
			return err
		}
		defer os.RemoveAll(kuboRepo)
		kuboRepo = filepath.Join(kuboRepo, "repo")
		init := exec.CommandContext(ctx, *kubo, "init", "--profile", "test")
		init.Env = append(os.Environ(), "IPFS_PATH="+kuboRepo)
		if b, err := init.CombinedOutput(); err != nil {
			return fmt.Errorf("kubo init: %w: %s", err, b)
		}
	}

	var kuboCat func() (time.Duration, error) // nil: no Kubo cat baseline
	if *kubo != "" {
		if os.Geteuid() != 0 {
			fmt.Println("Kubo cat baseline skipped: it runs Kubo in a loopback-only network namespace, which needs root")
		} else {
			cat, stop, err := kuboPair(ctx, *kubo, filepath.Dir(kuboRepo), *size)
			if err != nil {
				return err
			}
			defer stop()
			kuboCat = cat
		}
	}

	res := &result{secs: map[string][]float64{}, cpu: map[string][]float64{}}
	// timed runs fn as step name, recording its wall and CPU time.
	timed := func(name string, fn func() error) (time.Duration, error) {
		c0, t0 := meter.now(), time.Now()
		err := fn()
		d := time.Since(t0)
		res.add(name, d)
		res.cpu[name] = append(res.cpu[name], (meter.now() - c0).Seconds())
		return d, err
	}
	var catBest, pinBest, addSha, addKubo, catKubo []float64
	fmt.Printf("%d iterations of %d MiB each\n", *iters, *size>>20)
	for i := range *iters {
		var best time.Duration
		for _, s := range security {
			d, err := timed("stream-"+s.name, func() error { _, err := stream(s.name); return err })
			if err != nil {
				return err
			}
			if best == 0 || d < best {
				best = d
			}
		}
		res.add("stream-best", best)

		sha, _ := timed("sha256", func() error {
			h := sha256.New()
			_, err := io.CopyBuffer(h, newPattern(*size), make([]byte, 1<<20))
			h.Sum(nil)
			return err
		})
		var catCID, pinCID string
		dAdd, err := timed("add", func() (err error) { _, catCID, err = addA(); return err })
		if err != nil {
			return err
		}
		addSha = append(addSha, sha.Seconds()/dAdd.Seconds())
		if *kubo != "" {
			d, err := timed("kubo-add", func() error {
				cmd := exec.CommandContext(ctx, *kubo, "add", "-q", "--offline", "--cid-version=1", "--raw-leaves", "--chunker=size-1048576", "-")
				cmd.Env = append(os.Environ(), "IPFS_PATH="+kuboRepo)
				cmd.Stdin = newPattern(*size)
				if b, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("kubo add: %w: %s", err, b)
				}
				return nil
			})
			if err != nil {
				return err
			}
			addKubo = append(addKubo, d.Seconds()/dAdd.Seconds())
		}

		dCat, err := timed("cat", func() error {
			_, _, err := weftCmd(nil, devnull, "cat", "--repo", *repoB, catCID)
			return err
		})
		if err != nil {
			return err
		}
		catBest = append(catBest, best.Seconds()/dCat.Seconds())
		if kuboCat != nil {
			var d time.Duration
			if _, err := timed("kubo-cat", func() (err error) { d, err = kuboCat(); return err }); err != nil {
				return err
			}
			catKubo = append(catKubo, d.Seconds()/dCat.Seconds())
		}

		if _, pinCID, err = addA(); err != nil {
			return err
		}
		dPin, err := timed("pin", func() error {
			_, _, err := weftCmd(nil, nil, "pin", "add", "--repo", *repoB, pinCID)
			return err
		})
		if err != nil {
			return err
		}
		pinBest = append(pinBest, best.Seconds()/dPin.Seconds())
		fmt.Printf("  iteration %d: best stream %.0f MB/s, cat %.0f MB/s, pin %.0f MB/s, add %.0f MB/s, sha256 %.0f MB/s\n",
			i+1, float64(*size)/best.Seconds()/1e6, float64(*size)/dCat.Seconds()/1e6, float64(*size)/dPin.Seconds()/1e6,
			float64(*size)/dAdd.Seconds()/1e6, float64(*size)/sha.Seconds()/1e6)
	}

	fmt.Printf("\nmedians of %d iterations:\n  %-13s %8s %12s\n", *iters, "", "MB/s", "CPU ms/MiB")
	for _, n := range res.names {
		var rates []float64
		for _, s := range res.secs[n] {
			rates = append(rates, float64(*size)/s/1e6)
		}
		cpu := "-"
		if c := res.cpu[n]; len(c) > 0 {
			cpu = fmt.Sprintf("%.2f", median(c)*1e3/float64(*size>>20))
		}
		fmt.Printf("  %-13s %8.1f %12s\n", n, median(rates), cpu)
	}
	tls, noi := res.secs["stream-tls"], res.secs["stream-noise"]
	var tlsOverNoise []float64
	for i := range tls {
		tlsOverNoise = append(tlsOverNoise, noi[i]/tls[i])
	}
	fmt.Printf("\nratios (medians of per-iteration ratios, throughput):\n")
	fmt.Printf("  stream tls / noise   %.2f\n", median(tlsOverNoise))
	fmt.Printf("  cat / best stream    %.2f\n", median(catBest))
	fmt.Printf("  pin / best stream    %.2f\n", median(pinBest))
	fmt.Printf("  add / sha256         %.2f\n", median(addSha))
	if len(addKubo) > 0 {
		fmt.Printf("  add / kubo add       %.2f\n", median(addKubo))
	}
	if len(catKubo) > 0 {
		fmt.Printf("  cat / kubo cat       %.2f\n", median(catKubo))
	}
	return nil
}

// kuboPair starts two Kubo daemons under dir, B bootstrapped to A, in a
// loopback-only network namespace. cat adds a fresh file of size bytes on A
// (untimed) and returns how long `ipfs cat` of it on B took, its output
// discarded. stop stops both daemons and removes the namespace.
func kuboPair(ctx context.Context, bin, dir string, size int64) (cat func() (time.Duration, error), stop func(), err error) {
	k, err := kubo.NewNet(ctx, bin)
	if err != nil {
		return nil, nil, err
	}
	var ps []*proc.Process
	stop = func() {
		for _, p := range ps {
			p.Stop(10 * time.Second)
		}
		k.Close()
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	var seed string
	repos := []string{filepath.Join(dir, "kubo-a"), filepath.Join(dir, "kubo-b")}
	for _, repo := range repos {
		if err := k.Init(ctx, repo, seed); err != nil {
			return nil, nil, err
		}
		p, err := k.StartDaemon(repo, nil)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, p)
		if err := k.WaitReady(ctx, repo, p); err != nil {
			return nil, nil, err
		}
		if seed == "" {
			if seed, err = k.Addr(ctx, repo); err != nil {
				return nil, nil, err
			}
		}
	}
	if _, err := k.Run(ctx, repos[1], "swarm", "connect", seed); err != nil {
		return nil, nil, err
	}
	cat = func() (time.Duration, error) {
		add := k.Command(ctx, repos[0], "add", "-q", "--cid-version=1", "--raw-leaves", "--chunker=size-1048576", "--pin=false", "-")
		add.Stdin = newPattern(size)
		out, err := add.Output()
		if err != nil {
			return 0, fmt.Errorf("kubo add on A: %w", err)
		}
		c := strings.TrimSpace(string(out))
		catCmd := k.Command(ctx, repos[1], "cat", c)
		var se strings.Builder
		catCmd.Stderr = &se
		t0 := time.Now()
		n, err := countOutput(catCmd)
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("kubo cat on B: %w: %s", err, se.String())
		}
		if n != size {
			return 0, fmt.Errorf("kubo cat on B: %d bytes, want %d", n, size)
		}
		return d, nil
	}
	return cat, stop, nil
}

// countOutput runs cmd and returns how many bytes it wrote to stdout.
func countOutput(cmd *exec.Cmd) (int64, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n, cerr := io.CopyBuffer(io.Discard, out, make([]byte, 1<<20))
	if err := cmd.Wait(); err != nil {
		return n, err
	}
	return n, cerr
}
