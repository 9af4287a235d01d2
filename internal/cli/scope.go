package cli

import (
	"net/url"

	"github.com/spf13/cobra"
)

var scopes = &resource{
	singular: "scope", plural: "scopes", nameKey: "name",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("LABEL", "label"), field("CREATED_AT", "created_at")}
	},
}

// newScopeCommand is `kiln scope`: the top-level namespaces (a
// distribution, a team). Scope names are public: they label the public
// metrics.
func newScopeCommand() *cobra.Command {
	cmd, o := group("scope", "Manage scopes, the top-level namespaces")

	var label string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a scope (admins only)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			body := map[string]any{"name": args[0]}
			if label != "" {
				body["label"] = label
			}
			_, err := scopes.create(s, body)
			return err
		}),
	}
	create.Flags().StringVar(&label, "label", "", "human-readable label")

	var name string
	list := &cobra.Command{
		Use:   "list",
		Short: "List scopes",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if name != "" {
				q.Set("name", name)
			}
			return scopes.list(s, q)
		}),
	}
	list.Flags().StringVar(&name, "name", "", "only the scope with this name")

	var newName, newLabel string
	update := &cobra.Command{
		Use:   "update SCOPE",
		Short: "Rename a scope or change its label (admins only)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := scopes.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("name") {
				body["name"] = newName
			}
			if s.changed("label") {
				body["label"] = newLabel
			}
			_, err = scopes.update(s, id, body)
			return err
		}),
	}
	update.Flags().StringVar(&newName, "name", "", "new name")
	update.Flags().StringVar(&newLabel, "label", "", "new label")

	cmd.AddCommand(create, list, scopes.showCommand(o, scopes.byName), update, scopes.deleteCommand(o, scopes.byName))
	return cmd
}
