package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node/api"
)

func newPubsubCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "pubsub", Short: "Publish and subscribe to gossipsub topics"}
	pub := &cobra.Command{
		Use:   "pub TOPIC [DATA|-]",
		Short: "Publish DATA (or stdin with - or no DATA) on TOPIC",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			if len(args) == 2 && args[1] != "-" {
				data = []byte(args[1])
			} else {
				var err error
				if data, err = io.ReadAll(cmd.InOrStdin()); err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
			}
			return o.call(func(ctx context.Context, c *api.Client) error {
				return c.Publish(ctx, args[0], data)
			})
		},
	}
	sub := &cobra.Command{
		Use:   "sub TOPIC",
		Short: "Print messages on TOPIC, one per line, until Ctrl-C (--json: sender, seqno, topic, data)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			return o.call(func(ctx context.Context, c *api.Client) error {
				return c.Subscribe(ctx, args[0], func(m api.PubsubMessage) bool {
					if o.json {
						_ = printJSONLine(out, m)
					} else {
						fmt.Fprintf(out, "%s\n", m.Data)
					}
					return true
				})
			})
		},
	}
	ls := clientCmd(o, "ls", "List subscribed topics", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.PubsubTopics(ctx) },
		func(w io.Writer, v any) {
			for _, t := range v.([]string) {
				fmt.Fprintln(w, t)
			}
		})
	peers := clientCmd(o, "peers TOPIC", "List peers seen on TOPIC", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.PubsubPeers(ctx, a[0]) },
		func(w io.Writer, v any) {
			for _, p := range v.([]string) {
				fmt.Fprintln(w, p)
			}
		})
	cmd.AddCommand(pub, sub, ls, peers)
	return cmd
}
