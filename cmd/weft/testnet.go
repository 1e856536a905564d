package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/testnet"
)

// defaultTestnetDir is where `weft testnet up` puts a testnet unless told:
// $WEFT_TESTNET_DIR, else TMPDIR/weft-testnet.
func defaultTestnetDir() string {
	if d := os.Getenv("WEFT_TESTNET_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "weft-testnet")
}

func newTestnetCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Run many weft daemons on this machine (namespaces and link shaping as root), scenarios with reports, containers",
		Long: `A testnet is N real weft daemons, each its own process with its own repo and
ports. As root on Linux each node gets a network namespace on a private bridge
(10.77.K.0/24) with shaped links; otherwise every node runs on 127.0.0.1.
'weft testnet run FILE' runs a scenario end to end and writes a report folder.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "testnet directory: state, repos, logs (default $WEFT_TESTNET_DIR, else TMPDIR/weft-testnet)")
	getDir := func() string {
		if dir == "" {
			return defaultTestnetDir()
		}
		return dir
	}
	cmd.AddCommand(
		newTestnetUpCmd(getDir),
		newTestnetDownCmd(getDir),
		newTestnetStatusCmd(getDir),
		newTestnetLogsCmd(getDir),
		newTestnetExecCmd(getDir),
		newTestnetRunCmd(&dir),
		newTestnetComposeCmd(),
		newTestnetActCmd(getDir, "kill NODE...", "SIGKILL nodes (by PID)", func(ctx context.Context, t *testnet.Testnet, a []string) error { return t.Kill(ctx, a) }),
		newTestnetActCmd(getDir, "start NODE...", "Start nodes that are down", func(ctx context.Context, t *testnet.Testnet, a []string) error { return t.Start(ctx, a) }),
		newTestnetActCmd(getDir, "restart NODE...", "Stop nodes gracefully and start them again on the same repo", func(ctx context.Context, t *testnet.Testnet, a []string) error { return t.Restart(ctx, a) }),
		newTestnetActCmd(getDir, "partition GROUP GROUP...", "Cut the testnet into groups (each a comma-separated list of nodes)", func(ctx context.Context, t *testnet.Testnet, a []string) error {
			var groups [][]string
			for _, g := range a {
				groups = append(groups, strings.Split(g, ","))
			}
			if len(groups) < 2 {
				return errors.New("give at least two groups, e.g. n1,n2 n3,n4")
			}
			return t.Partition(ctx, groups)
		}),
		newTestnetActCmd(getDir, "heal", "End the partition", func(ctx context.Context, t *testnet.Testnet, _ []string) error { return t.Heal(ctx) }),
		newTestnetShapeCmd(getDir),
		newTestnetContainerCmd(),
		newTestnetProbeCmd(),
		newTestnetShaperCmd(getDir),
	)
	return cmd
}

func addShapeFlags(cmd *cobra.Command, s *testnet.Shape) {
	f := cmd.Flags()
	f.Var((*durationFlag)(&s.Latency), "latency", "one-way latency of every link, e.g. 20ms (tc netem, or the userspace delay line where the kernel has no netem)")
	f.Var((*durationFlag)(&s.Jitter), "jitter", "latency jitter, e.g. 5ms")
	f.StringVar(&s.Loss, "loss", "", "packet loss, e.g. 0.1%")
	f.StringVar(&s.Bandwidth, "bandwidth", "", "bandwidth of every link, e.g. 100mbit")
}

type durationFlag testnet.Duration

func (d *durationFlag) String() string { return testnet.Duration(*d).String() }
func (d *durationFlag) Set(s string) error {
	return (*testnet.Duration)(d).UnmarshalText([]byte(s))
}
func (d *durationFlag) Type() string { return "duration" }

func newTestnetUpCmd(getDir func() string) *cobra.Command {
	var (
		nodes    int
		topology string
		mode     string
		bin      string
		seed     int64
		shape    testnet.Shape
		shaper   string
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a testnet of N daemons and leave it running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc := testnet.QuickScenario(nodes, topology, shape)
			sc.Seed = seed
			if sc.Seed == 0 {
				sc.Seed = time.Now().UnixNano() & 0x7fffffff
			}
			if err := sc.Validate(); err != nil {
				return err
			}
			ctx, cancel := cmdContext()
			defer cancel()
			began := time.Now()
			t, err := testnet.Up(ctx, sc, testnet.Options{Dir: getDir(), Bin: bin, Mode: mode, Shaper: shaper, Progress: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			st := t.State()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "testnet %s up: %d nodes in %.1fs (%s)\n", st.ID, len(st.Nodes), time.Since(began).Seconds(), describeMode(st))
			fmt.Fprintf(out, "dir %s\n", st.Dir)
			fmt.Fprintf(out, "try: weft testnet status --dir %s; weft testnet exec --dir %s %s -- weft peers; weft testnet down --dir %s\n",
				st.Dir, st.Dir, st.Nodes[0].Name, st.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&nodes, "nodes", 5, "number of daemons")
	f.StringVar(&topology, "topology", "star", "who each node knows at start: star, ring or random")
	f.StringVar(&mode, "mode", "", "auto (namespaces when root), netns or loopback")
	f.StringVar(&bin, "bin", "", "weft binary the daemons run (default: this one)")
	f.Int64Var(&seed, "seed", 0, "seed of the random choices (default: from the clock)")
	addShaperFlag(cmd, &shaper)
	addShapeFlags(cmd, &shape)
	return cmd
}

func addShaperFlag(cmd *cobra.Command, s *string) {
	cmd.Flags().StringVar(s, "shaper", "", "how links get latency, jitter and loss: auto (tc netem, else the userspace delay line when asked for), delayline or tc")
}

func describeMode(st *testnet.State) string {
	if st.Mode == testnet.ModeNetns {
		return fmt.Sprintf("network namespaces on %s; shaping: %s", st.Subnet, st.ShapingNote())
	}
	return "127.0.0.1, no namespaces and no link shaping: " + st.Why
}

func newTestnetDownCmd(getDir func() string) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop every daemon of the testnet and remove its namespaces, links and directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := getDir()
			st, err := testnet.LoadState(dir)
			if err != nil {
				return err
			}
			if err := testnet.Down(context.Background(), dir, !keep); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "testnet %s down: %d nodes stopped", st.ID, len(st.Nodes))
			if st.Mode == testnet.ModeNetns {
				fmt.Fprintf(cmd.OutOrStdout(), ", %d namespaces and their links removed", len(st.Namespaces))
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().BoolVar(&keep, "keep-files", false, "keep the repos and logs (the directory)")
	return cmd
}

func newTestnetStatusCmd(getDir func() string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the testnet's nodes: running, peers, RSS, CPU",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := testnet.Open(getDir())
			if err != nil {
				return err
			}
			ctx, cancel := cmdContext()
			defer cancel()
			ss := t.Status(ctx)
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, map[string]any{"testnet": t.State(), "nodes": ss})
			}
			st := t.State()
			fmt.Fprintf(out, "testnet %s: %d nodes, %s\n", st.ID, len(st.Nodes), describeMode(st))
			if st.Shaping == testnet.ShapingDelayLine {
				state := "running"
				if !st.ShaperRunning() {
					state = "NOT running: links are down"
				} else if stats, err := t.ShaperStats(ctx); err == nil {
					var sum testnet.LineStats
					for _, s := range stats {
						sum.Sent += s.Sent
						sum.Lost += s.Lost
						sum.Overflow += s.Overflow
					}
					state += fmt.Sprintf("; frames sent %d, lost %d, dropped by full queues %d", sum.Sent, sum.Lost, sum.Overflow)
				}
				fmt.Fprintf(out, "shaper: pid %d, %s\n", st.ShaperPID, state)
			}
			if st.Partition != nil {
				fmt.Fprintf(out, "partitioned: %v\n", st.Partition)
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "NODE\tSTATE\tPID\tADDRESS\tPEERS\tRSS\tCPU\tSTARTS\tSHAPE")
			running := 0
			var rss int64
			for _, s := range ss {
				state := "down"
				if s.Running {
					state = "running"
					running++
					rss += s.RSSBytes
				}
				if s.Error != "" {
					state += " (API: " + s.Error + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%.1fs\t%d\t%s\n", s.Name, state, s.PID, s.API, s.Peers, humanBytes(s.RSSBytes), s.CPUSecs, s.Starts, s.Shape)
			}
			tw.Flush()
			fmt.Fprintf(out, "%d/%d running, %s RSS in all\n", running, len(ss), humanBytes(rss))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTestnetLogsCmd(getDir func() string) *cobra.Command {
	var lines int
	cmd := &cobra.Command{
		Use:   "logs NODE",
		Short: "Print a node's log (every start of it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			st, err := testnet.LoadState(getDir())
			if err != nil {
				return err
			}
			n, err := st.Node(a[0])
			if err != nil {
				return err
			}
			b, err := os.ReadFile(n.Log)
			if err != nil {
				return err
			}
			if lines > 0 {
				ls := strings.SplitAfter(string(b), "\n")
				if len(ls) > lines+1 {
					b = []byte(strings.Join(ls[len(ls)-lines-1:], ""))
				}
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().IntVarP(&lines, "tail", "n", 0, "only the last N lines")
	return cmd
}

func newTestnetExecCmd(getDir func() string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec NODE -- COMMAND [ARGS...]",
		Short: "Run a command as a node: inside its namespace, with WEFT_PATH and WEFT_API_TOKEN set ('weft' means the testnet's binary)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			t, err := testnet.Open(getDir())
			if err != nil {
				return err
			}
			c, err := t.Command(a[0], a[1:])
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := c.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return &exitError{code: ee.ExitCode(), err: fmt.Errorf("%s exited with %d", a[1], ee.ExitCode())}
				}
				return err
			}
			return nil
		},
	}
	return cmd
}

func newTestnetActCmd(getDir func() string, use, short string, act func(context.Context, *testnet.Testnet, []string) error) *cobra.Command {
	args := cobra.MinimumNArgs(1)
	if use == "heal" {
		args = cobra.NoArgs
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, a []string) error {
			t, err := testnet.Open(getDir())
			if err != nil {
				return err
			}
			ctx, cancel := cmdContext()
			defer cancel()
			if err := act(ctx, t, a); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: done\n", strings.Fields(use)[0])
			return nil
		},
	}
}

func newTestnetShapeCmd(getDir func() string) *cobra.Command {
	var shape testnet.Shape
	cmd := &cobra.Command{
		Use:   "shape [NODE...]",
		Short: "Change the link shape of nodes (default all) on a running testnet",
		RunE: func(cmd *cobra.Command, a []string) error {
			t, err := testnet.Open(getDir())
			if err != nil {
				return err
			}
			if len(a) == 0 {
				for _, n := range t.State().Nodes {
					a = append(a, n.Name)
				}
			}
			ctx, cancel := cmdContext()
			defer cancel()
			if err := t.Shape(ctx, a, shape); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d nodes shaped: %s (%s)\n", len(a), shape, t.State().ShapingNote())
			return nil
		},
	}
	addShapeFlags(cmd, &shape)
	return cmd
}

func newTestnetRunCmd(dir *string) *cobra.Command {
	var (
		report        string
		mode          string
		bin           string
		seed          int64
		keepOnFailure bool
		keep          bool
		shaper        string
		simBin        string
	)
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a scenario end to end; exit non-zero naming the assertion that failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			sc, text, err := testnet.LoadScenario(a[0])
			if err != nil {
				return err
			}
			if seed != 0 {
				sc.Seed = seed
			}
			if sc.Seed == 0 {
				sc.Seed = time.Now().UnixNano() & 0x7fffffff
			}
			d := *dir
			if d == "" {
				if d, err = os.MkdirTemp("", "weft-testnet-run-"); err != nil {
					return err
				}
				if err := os.Remove(d); err != nil { // Up makes it
					return err
				}
			}
			if report == "" {
				report = fmt.Sprintf("testnet-report-%s-%s", sc.Name, time.Now().Format("20060102-150405"))
			}
			if report, err = filepath.Abs(report); err != nil {
				return err
			}
			path, _ := filepath.Abs(a[0])
			if mode == testnet.ModeSim || (mode == "" && sc.Network.Mode == testnet.ModeSim) {
				return runSimulated(cmd, simBin, path, sc, report, *dir)
			}
			// Ctrl-C tears the testnet down rather than leaving it behind.
			ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			rep, err := testnet.Run(ctx, sc, testnet.RunOptions{
				Options:      testnet.Options{Dir: d, Bin: bin, Mode: mode, Shaper: shaper, Progress: cmd.ErrOrStderr()},
				ReportDir:    report,
				ScenarioPath: path, ScenarioText: text,
				KeepOnFailure: keepOnFailure, Keep: keep,
			})
			out := cmd.OutOrStdout()
			if rep != nil {
				fmt.Fprint(out, rep.Summary())
				svgs := "latency.svg, delivery.svg"
				if rep.Traces != nil {
					svgs += ", trace-fetch.svg, trace-feed.svg"
				}
				fmt.Fprintf(out, "\nreport: %s (report.json, summary.txt, %s)\n", report, svgs)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&report, "report", "", "report folder (default ./testnet-report-NAME-TIME)")
	f.StringVar(&mode, "mode", "", "override network.mode: auto, netns, loopback or sim (every node in one process on simulated links, in virtual time)")
	f.StringVar(&simBin, "sim-bin", "", "the simulation driver for --mode sim (default: weft-testnet-sim beside this binary, then on PATH)")
	f.StringVar(&bin, "bin", "", "weft binary the daemons run (default: this one)")
	f.Int64Var(&seed, "seed", 0, "override the scenario's seed")
	f.BoolVar(&keepOnFailure, "keep-on-failure", false, "leave a failed testnet up for inspection ('weft testnet down --dir DIR' removes it)")
	f.BoolVar(&keep, "keep", false, "leave the testnet up after the run")
	addShaperFlag(cmd, &shaper)
	return cmd
}

// newTestnetShaperCmd is the shaper process a testnet starts when its
// links go through the userspace delay line; `weft testnet down` stops it.
func newTestnetShaperCmd(getDir func() string) *cobra.Command {
	return &cobra.Command{
		Use:    "shaper",
		Short:  "Carry a testnet's links through userspace delay lines (started by 'weft testnet up')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return testnet.RunShaper(ctx, getDir(), log)
		},
	}
}

func newTestnetComposeCmd() *cobra.Command {
	var o testnet.ComposeOptions
	cmd := &cobra.Command{
		Use:   "compose",
		Short: "Print a docker-compose file for a containerized testnet (image from deploy/Dockerfile)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := testnet.Compose(o)
			if err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), s)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "number of containers")
	f.StringVar(&o.Image, "image", "weft:latest", "image to run")
	f.StringVar(&o.Subnet, "subnet", "10.78.0.0/24", "subnet of the compose network (a /24)")
	f.StringVar(&o.Project, "name", "weft", "container name prefix")
	f.StringVar(&o.Seed, "seed", "", "identity seed (default: random; $WEFT_TESTNET_SEED overrides it at 'up')")
	return cmd
}

// newTestnetContainerCmd is the entry point of a testnet container or
// Kubernetes pod: it makes the repo on first start, with an identity
// derived from the testnet seed and the node's index, so every node knows
// the bootstrap peers' IDs in advance; then it runs the daemon.
func newTestnetContainerCmd() *cobra.Command {
	var (
		repo, listen, apiAddr string
		index                 int
		bootstrap             []string
	)
	cmd := &cobra.Command{
		Use:    "container",
		Short:  "Entry point of a testnet container: init the repo (derived identity) if needed, then run the daemon",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			seed := os.Getenv("WEFT_TESTNET_SEED")
			if index < 0 {
				host, _ := os.Hostname()
				m := regexp.MustCompile(`-(\d+)$`).FindStringSubmatch(host)
				if m == nil {
					return fmt.Errorf("--index not given and hostname %q does not end in -N (a StatefulSet pod)", host)
				}
				index, _ = strconv.Atoi(m[1])
			}
			dir := repoPath(repo)
			if _, err := os.Stat(filepath.Join(dir, node.ConfigFile)); err != nil {
				var boot []string
				for _, b := range bootstrap {
					is, hostport, ok := strings.Cut(b, "@")
					bi, err := strconv.Atoi(is)
					if !ok || err != nil {
						return fmt.Errorf("--bootstrap %q: want INDEX@HOST:PORT", b)
					}
					if bi == index {
						continue
					}
					host, port, err := net.SplitHostPort(hostport)
					if err != nil {
						return fmt.Errorf("--bootstrap %q: %w", b, err)
					}
					_, id, err := testnet.DeriveIdentity(seed, bi)
					if err != nil {
						return err
					}
					proto := "dns4"
					if ip := net.ParseIP(host); ip != nil {
						proto = "ip4"
					}
					boot = append(boot, fmt.Sprintf("/%s/%s/tcp/%s/p2p/%s", proto, host, port, id))
				}
				if _, err := node.InitRepo(dir, node.InitOptions{Listen: []string{listen}, API: apiAddr, Bootstrap: boot}); err != nil {
					return err
				}
				sk, _, err := testnet.DeriveIdentity(seed, index)
				if err != nil {
					return err
				}
				id, err := testnet.SetIdentity(dir, sk)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "testnet node %d: peer ID %s, bootstrap %v\n", index, id, boot)
			}
			return runDaemon(cmd, dir)
		},
	}
	f := cmd.Flags()
	f.StringVar(&repo, "repo", "/data", "repo directory")
	f.StringVar(&listen, "listen", "/ip4/0.0.0.0/tcp/4001", "swarm listen multiaddr")
	f.StringVar(&apiAddr, "api", "0.0.0.0:5001", "API address (not loopback: the token in REPO/api.token is required)")
	f.IntVar(&index, "index", -1, "this node's index (default: the -N suffix of the hostname, as in a StatefulSet)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "bootstrap peer as INDEX@HOST:PORT (its ID is derived from the seed)")
	return cmd
}

// newTestnetProbeCmd is a health check for images without curl: it exits 0
// when the URL answers 2xx.
func newTestnetProbeCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "probe URL",
		Short:  "Exit 0 if URL answers 2xx within 2s (container health checks)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, a[0], nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s: %s", a[0], resp.Status)
			}
			return nil
		},
	}
}

// runDaemon runs `weft daemon --repo dir` in this process.
func runDaemon(cmd *cobra.Command, dir string) error {
	d := newDaemonCmd()
	d.SetArgs([]string{"--repo", dir})
	d.SetOut(cmd.OutOrStdout())
	d.SetErr(cmd.ErrOrStderr())
	d.SilenceUsage, d.SilenceErrors = true, true
	return d.Execute()
}

// runSimulated runs a scenario in simulation: the weft-testnet-sim test
// binary (node/testnet/simrun) does it, since virtual time needs a
// testing/synctest bubble and only a test can make one. Its wall time is
// bounded by the scenario's timeout plus five minutes.
func runSimulated(cmd *cobra.Command, bin, path string, sc *testnet.Scenario, report, dir string) error {
	if bin == "" {
		if self, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(self), "weft-testnet-sim"); fileExists(p) {
				bin = p
			}
		}
	}
	if bin == "" {
		p, err := exec.LookPath("weft-testnet-sim")
		if err != nil {
			return errors.New("--mode sim needs the simulation driver weft-testnet-sim beside weft or on PATH; build it with: go test -c -o \"$(dirname \"$(command -v weft)\")/weft-testnet-sim\" ./node/testnet/simrun (or pass --sim-bin)")
		}
		bin = p
	}
	args := []string{"-test.run", "^TestRun$", "-test.count", "1",
		"-test.timeout", (sc.Timeout.D() + 5*time.Minute).String(),
		"-sim.scenario", path, "-sim.seed", fmt.Sprint(sc.Seed), "-sim.report", report}
	if dir != "" {
		args = append(args, "-sim.dir", dir)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Stdout, c.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
	if err := c.Run(); err != nil {
		return fmt.Errorf("simulated run of %s failed (see the summary above and %s): %w", sc.Name, report, err)
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
