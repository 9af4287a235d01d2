package cli

import (
	"github.com/spf13/cobra"
)

var assets = &resource{
	singular: "asset", plural: "assets",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("CATEGORY", "category"), n.workspaceColumn("WORKSPACE", "workspace"),
			n.column("CREATED_BY", "created_by", "users", "username"), field("CREATED_AT", "created_at")}
	},
}

// newAssetCommand is `kiln asset`: long-lived typed objects that are not
// file bundles, such as signing key references.
func newAssetCommand() *cobra.Command {
	cmd, o := group("asset", "Manage assets")

	var workspace, category, data string
	create := &cobra.Command{
		Use:   "create --workspace WORKSPACE --category CATEGORY [--data JSON]",
		Short: "Create an asset (contributors and owners of the workspace)",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			ws, err := workspaceRef(s, workspace)
			if err != nil {
				return err
			}
			body := map[string]any{"workspace": ws, "category": category}
			if data != "" {
				d, err := jsonFlag("--data", data)
				if err != nil {
					return err
				}
				body["data"] = d
			}
			_, err = assets.create(s, body)
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&workspace, "workspace", "", "workspace, by id, scope/name or a unique name (required)")
	cf.StringVar(&category, "category", "", "category, e.g. debusine:signing-key (required)")
	cf.StringVar(&data, "data", "", "data as a JSON object, or @file.json")
	_ = create.MarkFlagRequired("workspace")
	_ = create.MarkFlagRequired("category")

	list := assets.workspaceListCommand(o, listFilter{"category", "category", "only assets of this category"})

	var newData string
	update := &cobra.Command{
		Use:   "update ID --data JSON",
		Short: "Replace an asset's data (contributors and owners of the workspace)",
		Long: `Replace an asset's data with a JSON object (or @file.json). Its category and
workspace are fixed once created: create a new asset instead.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := assets.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("data") {
				d, err := jsonFlag("--data", newData)
				if err != nil {
					return err
				}
				body["data"] = d
			}
			_, err = assets.update(s, id, body)
			return err
		}),
	}
	update.Flags().StringVar(&newData, "data", "", "the new data as a JSON object, or @file.json")

	cmd.AddCommand(create, list, assets.showCommand(o, assets.byName), update, assets.deleteCommand(o, assets.byName))
	return cmd
}
