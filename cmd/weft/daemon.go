package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/weft-p2p/weft/node"
)

func newDaemonCmd() *cobra.Command {
	var repo, logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node: libp2p host, DHT, gossipsub, store and HTTP API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := repoPath(repo)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := node.Options{OwnsProcess: true, Tune: func(c *node.Config) {
				if logLevel != "" {
					c.Log.Level = logLevel
				}
				if logFormat != "" {
					c.Log.Format = logFormat
				}
			}}
			n, err := node.Start(ctx, dir, opts)
			if err != nil {
				return err
			}
			if n.Tracing() {
				// The DHT's and Bitswap's own spans go to the global
				// provider: make it the node's, so they are recorded too.
				otel.SetTracerProvider(n.TracerProvider())
				otel.SetTextMapPropagator(propagation.TraceContext{})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "weft daemon %s ready; API on %s\n", n.ID(), n.APIAddr())
			if gw := n.GatewayAddr(); gw != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "gateway on http://%s/ipfs/\n", gw)
			}
			select {
			case <-ctx.Done():
				fmt.Fprintln(cmd.OutOrStdout(), "signal received, shutting down")
			case <-n.ShutdownRequested():
				fmt.Fprintln(cmd.OutOrStdout(), "shutdown requested, shutting down")
			}
			stop() // a second signal now kills the process the default way
			if err := n.Close(); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "stopped cleanly")
			return nil
		},
	}
	repoFlag(cmd, &repo)
	cmd.Flags().StringVar(&logLevel, "log-level", "", "override log.level (debug, info, warn, error)")
	cmd.Flags().StringVar(&logFormat, "log-format", "", "override log.format (text, json)")
	return cmd
}
