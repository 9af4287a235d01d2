package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/telemetry"
)

// newVersionCommand is `kiln version`: the build information that the
// server's info metric also carries, so that what an operator runs can be
// matched with what Prometheus sees.
func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and build information of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := telemetry.ReadBuildInfo()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]string{
					"version": bi.Version, "revision": bi.Revision, "branch": bi.Branch,
					"go_version": bi.GoVersion, "os": bi.OS, "architecture": bi.Architecture, "built_at": bi.BuiltAt,
				})
			}
			fmt.Fprintf(out, "kiln %s\n", bi.Version)
			fmt.Fprintf(out, "  revision:  %s\n", bi.Revision)
			fmt.Fprintf(out, "  branch:    %s\n", bi.Branch)
			fmt.Fprintf(out, "  built at:  %s\n", bi.BuiltAt)
			fmt.Fprintf(out, "  go:        %s %s/%s\n", bi.GoVersion, bi.OS, bi.Architecture)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
