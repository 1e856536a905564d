package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/api"
)

// clientOpts are the flags every client command takes.
type clientOpts struct {
	repo  string
	api   string
	token string
	json  bool
}

func (o *clientOpts) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.repo, "repo", "", "repo of the daemon to talk to (reads REPO/api; default $WEFT_PATH, else ~/.weft)")
	f.StringVar(&o.api, "api", "", "API address HOST:PORT of the daemon (instead of --repo)")
	f.StringVar(&o.token, "token", "", "API bearer token (default: $WEFT_API_TOKEN, else REPO/api.token)")
	f.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

func (o *clientOpts) client() (*api.Client, error) {
	tok := o.token
	if tok == "" {
		tok = os.Getenv("WEFT_API_TOKEN")
	}
	addr := o.api
	if addr == "" {
		dir := repoPath(o.repo)
		a, err := node.ReadAPIAddr(dir)
		if err != nil {
			return nil, err
		}
		addr = a
		if tok == "" {
			tok = node.ReadToken(dir)
		}
	} else if tok == "" {
		// The daemon needs its token also on loopback. With --repo, or
		// when --api names the address the default repo's daemon
		// listens on, that repo's token is the one; it is never sent to
		// any other address.
		dir := repoPath(o.repo)
		if a, err := node.ReadAPIAddr(dir); o.repo != "" || (err == nil && a == addr) {
			tok = node.ReadToken(dir)
		}
	}
	return api.NewOneShotClient(addr, tok), nil
}

// call runs fn with a client and a context that Ctrl-C cancels, and turns
// API errors into what the user should do.
func (o *clientOpts) call(fn func(ctx context.Context, c *api.Client) error) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := o.cmdContext("")
	defer cancel()
	return explainAPIError(fn(ctx, c))
}

// copyStream copies a streamed answer to w, closing it.
func copyStream(w io.Writer, r io.ReadCloser, what string) error {
	defer r.Close()
	// 1 MiB at a time, not io.Copy's 32 KiB (which os.File's ReadFrom
	// would use): a 256 MiB cat makes 256 reads and writes, not 8,192.
	if _, err := io.CopyBuffer(struct{ io.Writer }{w}, r, make([]byte, 1<<20)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// cmdContext is cancelled by Ctrl-C, so a long client call stops cleanly.
func cmdContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// cmdContext is cmdContext for a client command: it also carries the
// command's trace (see cliTrace), whose file, with the file exporter, is
// in the repo the command talks to. name names the span ("weft pin
// add"; "": taken from the command line).
func (o *clientOpts) cmdContext(name string) (context.Context, context.CancelFunc) {
	ctx, cancel := cmdContext()
	ctx, end := cliTrace(ctx, name, repoPath(o.repo))
	return ctx, func() {
		end()
		cancel()
	}
}

// clientCmd builds a command that calls the API and prints the result as
// JSON (--json) or with the given table printer.
func clientCmd(o *clientOpts, use, short string, args cobra.PositionalArgs,
	call func(ctx context.Context, c *api.Client, args []string) (any, error),
	table func(w io.Writer, v any)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			ctx, cancel := o.cmdContext(cmd.CommandPath())
			defer cancel()
			v, err := call(ctx, c, a)
			if err != nil {
				return explainAPIError(err)
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, v)
			}
			if table != nil {
				table(out, v)
			}
			return nil
		},
	}
}

func explainAPIError(err error) error {
	var se *api.StatusError
	if errors.As(err, &se) && se.Code == 401 {
		return fmt.Errorf("%s (pass --token, set WEFT_API_TOKEN, or use --repo on the daemon's machine)", se.Message)
	}
	return err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

func addClientCommands(root *cobra.Command) {
	o := &clientOpts{}
	// Client flags are registered on each client command so that init,
	// daemon and config keep their own --repo.
	cmds := []*cobra.Command{
		clientCmd(o, "id", "Print this node's peer ID and addresses", cobra.NoArgs,
			func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.ID(ctx) },
			func(w io.Writer, v any) {
				id := v.(api.ID)
				fmt.Fprintln(w, id.ID)
				for _, a := range id.Addrs {
					fmt.Fprintln(w, "  "+a)
				}
			}),
		clientCmd(o, "status", "Summarise the node: peers, DHT, transports, store", cobra.NoArgs,
			func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.Status(ctx) },
			func(w io.Writer, v any) {
				s := v.(api.Status)
				t := newTable(w)
				fmt.Fprintf(t, "peer ID\t%s\n", s.ID)
				fmt.Fprintf(t, "version\t%s\n", s.Version)
				fmt.Fprintf(t, "uptime\t%.0fs\n", s.UptimeSeconds)
				fmt.Fprintf(t, "profile\t%s\n", s.Profile)
				swarm := "open (no swarm key)"
				if s.Private {
					swarm = "private (pre-shared key)"
				}
				fmt.Fprintf(t, "swarm\t%s\n", swarm)
				tr := strings.Join(s.Transports, ", ")
				if s.TransportNote != "" {
					tr += " — " + s.TransportNote
				}
				fmt.Fprintf(t, "transports\t%s\n", tr)
				if s.AllowPeers > 0 {
					fmt.Fprintf(t, "allowlist\t%d peers\n", s.AllowPeers)
				}
				fmt.Fprintf(t, "peers\t%d\n", s.Peers)
				fmt.Fprintf(t, "dht\t%s, %s, %d in routing table\n", s.DHT.Mode, s.DHT.Protocol, s.DHT.RoutingTable)
				lim := "unlimited"
				if s.Store.MaxBytes > 0 {
					lim = humanBytes(s.Store.MaxBytes)
				}
				fmt.Fprintf(t, "store\t%d blocks, %s (limit %s)\n", s.Store.Blocks, humanBytes(s.Store.Bytes), lim)
				printNAT(t, s.NAT)
				for i, a := range s.Addrs {
					label := ""
					if i == 0 {
						label = "addrs"
					}
					fmt.Fprintf(t, "%s\t%s\n", label, a)
				}
				t.Flush()
			}),
		clientCmd(o, "peers", "List connected peers", cobra.NoArgs,
			func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.Peers(ctx) },
			func(w io.Writer, v any) {
				t := newTable(w)
				fmt.Fprintln(t, "PEER\tADDR\tDIR\tLATENCY\tSTREAMS\tVIA\tTRANSPORT")
				for _, p := range v.([]api.Peer) {
					via := "direct"
					if p.Relayed {
						via = "relayed"
						if p.Limited {
							via += " (limited)"
						}
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%.2fms\t%d\t%s\t%s\n", p.ID, p.Addr, p.Direction, p.LatencyMS, p.Streams, via, p.Transport)
				}
				t.Flush()
			}),
		clientCmd(o, "connect MULTIADDR", "Connect to a peer (multiaddr ending in /p2p/ID)", cobra.ExactArgs(1),
			func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.Connect(ctx, a[0]) },
			func(w io.Writer, v any) { fmt.Fprintf(w, "connected to %s\n", v.(api.ConnectResult).ID) }),
		clientCmd(o, "disconnect PEER", "Close all connections to a peer", cobra.ExactArgs(1),
			func(ctx context.Context, c *api.Client, a []string) (any, error) {
				return map[string]string{"disconnected": a[0]}, c.Disconnect(ctx, a[0])
			},
			func(w io.Writer, v any) { fmt.Fprintf(w, "disconnected %s\n", v.(map[string]string)["disconnected"]) }),
		clientCmd(o, "shutdown", "Stop the daemon gracefully", cobra.NoArgs,
			func(ctx context.Context, c *api.Client, _ []string) (any, error) {
				return map[string]bool{"shutdown": true}, c.Shutdown(ctx)
			},
			func(w io.Writer, v any) { fmt.Fprintln(w, "daemon is shutting down") }),
	}
	dhtCmd := &cobra.Command{Use: "dht", Short: "Query the Kademlia DHT"}
	dhtCmd.AddCommand(
		clientCmd(o, "find-peer PEER", "Find a peer's addresses through the DHT", cobra.ExactArgs(1),
			func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.FindPeer(ctx, a[0]) },
			func(w io.Writer, v any) {
				pi := v.(api.PeerInfo)
				fmt.Fprintln(w, pi.ID)
				for _, a := range pi.Addrs {
					fmt.Fprintln(w, "  "+a)
				}
			}),
		clientCmd(o, "table", "List the DHT routing table", cobra.NoArgs,
			func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.RoutingTable(ctx) },
			func(w io.Writer, v any) {
				rt := v.(api.RoutingTable)
				t := newTable(w)
				fmt.Fprintf(t, "BUCKET\tPEER\tCONNECTED\n")
				for _, p := range rt.Peers {
					fmt.Fprintf(t, "%d\t%s\t%v\n", p.Bucket, p.ID, p.Connected)
				}
				t.Flush()
				fmt.Fprintf(w, "%d peers\n", rt.Size)
			}),
	)
	cmds = append(cmds, dhtCmd)
	cmds = append(cmds, addContentCommands(root, o)...)
	cmds = append(cmds, newPubsubCmd(o), newFeedCmd(o), newKeyCmd(o))
	cmds = append(cmds, newCollectionCmd(o))
	for _, c := range cmds {
		o.register(c)
		root.AddCommand(c)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printNAT adds the reachability lines to `weft status`.
func printNAT(w io.Writer, s api.NATStatus) {
	reach := s.Reachability
	if len(s.Transports) > 0 {
		var per []string
		for _, tr := range slices.Sorted(maps.Keys(s.Transports)) {
			per = append(per, tr+" "+s.Transports[tr])
		}
		reach += " (" + strings.Join(per, ", ") + ")"
	}
	fmt.Fprintf(w, "reachability\t%s\n", reach)
	svc := "off"
	if s.RelayService {
		svc = "on (relaying for others)"
	}
	fmt.Fprintf(w, "relay service\t%s\n", svc)
	list := func(label string, items []string) {
		for i, a := range items {
			if i > 0 {
				label = ""
			}
			fmt.Fprintf(w, "%s\t%s\n", label, a)
		}
	}
	if len(s.Relays) == 0 {
		fmt.Fprintf(w, "relays\tnone (no reservation)\n")
	}
	list("relays", s.Relays)
	list("observed", s.Observed)
}
