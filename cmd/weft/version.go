package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
)

// versionString says which weft this binary is: the daemon version, the
// module version and the VCS revision it was built from (runtime/debug's
// build info; "unknown" when built without VCS stamping, e.g. with
// -buildvcs=false), and the Go release.
func versionString() string {
	module, rev := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			module = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && rev != "unknown" {
			rev += "+dirty"
		}
	}
	return fmt.Sprintf("weft %s (module %s, revision %s, %s)", node.Version, module, rev, runtime.Version())
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, module version and VCS revision of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), versionString())
			return nil
		},
	}
}
