package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
)

func newConfigCmd() *cobra.Command {
	var repo string
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show, read or change the repo's configuration",
	}
	cmd.PersistentFlags().StringVar(&repo, "repo", "", "repo directory (default $WEFT_PATH, else ~/.weft)")
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the whole config file with its documentation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := node.ReadConfig(repoPath(repo))
			if err != nil {
				return err
			}
			b, err := node.MarshalConfig(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print one value (the keys are listed by 'weft config get --help')",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return node.ConfigKeys(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := node.ReadConfig(repoPath(repo))
			if err != nil {
				return err
			}
			v, err := cfg.Get(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), v)
			return nil
		},
	}
	set := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change one value; it is validated before the file is written",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := repoPath(repo)
			cfg, err := node.ReadConfig(dir)
			if err != nil {
				return err
			}
			if err := cfg.Set(args[0], args[1]); err != nil {
				return err
			}
			if err := node.SaveConfigFile(dir, cfg); err != nil {
				return err
			}
			v, _ := cfg.Get(args[0])
			fmt.Fprintf(cmd.OutOrStdout(), "%s = %s (a running daemon picks this up on restart)\n", args[0], v)
			return nil
		},
	}
	// The key list is built when help is shown, not every time the command
	// tree is (that is, on every command).
	get.SetHelpFunc(func(c *cobra.Command, args []string) {
		c.Long = "Print one value. Keys: " + strings.Join(node.ConfigKeys(), ", ")
		c.Parent().HelpFunc()(c, args)
	})
	cmd.AddCommand(show, get, set)
	return cmd
}
