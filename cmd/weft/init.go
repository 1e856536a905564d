package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
)

func repoFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "repo", "", "repo directory (default $WEFT_PATH, else ~/.weft)")
}

func repoPath(p string) string {
	if p == "" {
		return node.DefaultRepoPath()
	}
	return p
}

func newInitCmd() *cobra.Command {
	var (
		repo, profile, apiAddr, gatewayAddr, swarmKeyFile string
		listen, bootstrap                                 []string
		newSwarmKey                                       bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repo: identity, API token, config (and a swarm key for a private swarm)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := repoPath(repo)
			opts := node.InitOptions{Profile: profile, Listen: listen, API: apiAddr, Gateway: gatewayAddr, Bootstrap: bootstrap, NewSwarmKey: newSwarmKey}
			if swarmKeyFile != "" {
				b, err := os.ReadFile(swarmKeyFile)
				if err != nil {
					return fmt.Errorf("read swarm key: %w", err)
				}
				opts.SwarmKey = b
			}
			cfg, err := node.InitRepo(dir, opts)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "initialised weft repo at %s\n", dir)
			fmt.Fprintf(out, "peer ID:  %s\n", cfg.PeerID)
			fmt.Fprintf(out, "profile:  %s\n", cfg.Profile)
			if newSwarmKey || swarmKeyFile != "" {
				fmt.Fprintf(out, "private swarm: key in %s (copy it to every member's repo)\n", filepath.Join(dir, node.SwarmKeyFile))
			}
			fmt.Fprintf(out, "start it with: weft daemon --repo %s\n", dir)
			return nil
		},
	}
	repoFlag(cmd, &repo)
	f := cmd.Flags()
	f.StringVar(&profile, "profile", node.ProfileLocal, "local (own DHT, no bootstrap, loopback) or public (IPFS Amino DHT and bootstrap list)")
	f.StringArrayVar(&listen, "listen", nil, "swarm listen multiaddr (repeatable; default per profile)")
	f.StringVar(&apiAddr, "api", "", "HTTP API host:port (default 127.0.0.1:5101)")
	f.StringVar(&gatewayAddr, "gateway", "", "HTTP gateway host:port, or off (default 127.0.0.1:8080; port 0 when --api has port 0)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "bootstrap peer multiaddr with /p2p/ID (repeatable)")
	f.StringVar(&swarmKeyFile, "swarm-key", "", "make the swarm private with this swarm.key (Kubo format)")
	f.BoolVar(&newSwarmKey, "new-swarm-key", false, "make the swarm private with a freshly generated key")
	return cmd
}
