package cli

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
)

var collections = &resource{
	singular: "collection", plural: "collections", nameKey: "name",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("CATEGORY", "category"),
			n.workspaceColumn("WORKSPACE", "workspace"), field("ITEM_COUNT", "item_count"), field("CREATED_AT", "created_at")}
	},
}

// itemColumns are the columns of a collection's items.
func itemColumns(*names) []column {
	return []column{field("ID", "id"), field("NAME", "name"), field("CATEGORY", "category"),
		field("ARTIFACT", "artifact"), field("CREATED_AT", "created_at")}
}

// newCollectionCommand is `kiln collection`: named, typed sets of items
// (artifacts or bare data), such as the suites of a distribution.
func newCollectionCommand() *cobra.Command {
	cmd, o := group("collection", "Manage collections and their items")

	var workspace, category, data string
	create := &cobra.Command{
		Use:   "create NAME --workspace WORKSPACE --category CATEGORY [--data JSON]",
		Short: "Create a collection (contributors and owners of the workspace)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			ws, err := workspaceRef(s, workspace)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "workspace": ws, "category": category}
			if data != "" {
				d, err := jsonFlag("--data", data)
				if err != nil {
					return err
				}
				body["data"] = d
			}
			_, err = collections.create(s, body)
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&workspace, "workspace", "", "workspace, by id, scope/name or a unique name (required)")
	cf.StringVar(&category, "category", "", "category, e.g. debian:suite (required)")
	cf.StringVar(&data, "data", "", "data as a JSON object, or @file.json")
	_ = create.MarkFlagRequired("workspace")
	_ = create.MarkFlagRequired("category")

	list := collections.workspaceListCommand(o, listFilter{"category", "category", "only collections of this category"})

	var newName, newData string
	update := &cobra.Command{
		Use:   "update COLLECTION [--name NAME] [--data JSON]",
		Short: "Rename a collection or replace its data (contributors and owners of the workspace)",
		Long: `Rename a collection or replace its data with a JSON object (or @file.json).
Its category and workspace are fixed once created; its items change with
'kiln collection item'.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := collections.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("name") {
				body["name"] = newName
			}
			if s.changed("data") {
				d, err := jsonFlag("--data", newData)
				if err != nil {
					return err
				}
				body["data"] = d
			}
			_, err = collections.update(s, id, body)
			return err
		}),
	}
	update.Flags().StringVar(&newName, "name", "", "new name")
	update.Flags().StringVar(&newData, "data", "", "the new data as a JSON object, or @file.json")

	cmd.AddCommand(create, list, collections.showCommand(o, collections.byName), update,
		collections.deleteCommand(o, collections.byName), newItemCommand(o))
	return cmd
}

// newItemCommand is `kiln collection item`: the members of a collection.
func newItemCommand(o *clientOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "item", Short: "Add, list and remove the items of a collection", RunE: helpOnly}
	items := &resource{singular: "item", nameKey: "name", cols: itemColumns}

	var name, category, artifact, data string
	add := &cobra.Command{
		Use:   "add COLLECTION --name NAME --category CATEGORY [--artifact ID] [--data JSON]",
		Short: "Add an item to a collection",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			coll, err := collections.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{"name": name}
			if category != "" {
				body["category"] = category
			}
			if artifact != "" {
				body["artifact"] = refValue(artifact)
			}
			if data != "" {
				d, err := jsonFlag("--data", data)
				if err != nil {
					return err
				}
				body["data"] = d
			}
			_, err = items.send(s, "POST", client.Path("collections", coll, "items"), body, "added")
			return err
		}),
	}
	af := add.Flags()
	af.StringVar(&name, "name", "", "name of the item in the collection (required)")
	af.StringVar(&category, "category", "", "category of the item, e.g. debian:source-package (required)")
	af.StringVar(&artifact, "artifact", "", "id of the artifact the item points to")
	af.StringVar(&data, "data", "", "data as a JSON object, or @file.json")
	_ = add.MarkFlagRequired("name")
	_ = add.MarkFlagRequired("category")

	list := &cobra.Command{
		Use:   "list COLLECTION",
		Short: "List the items of a collection",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			coll, err := collections.byName(s, args[0])
			if err != nil {
				return err
			}
			return listAt(s, client.Path("collections", coll, "items"), nil, itemColumns(s.n))
		}),
	}

	remove := &cobra.Command{
		Use:     "remove COLLECTION ITEM",
		Aliases: []string{"rm"},
		Short:   "Remove an item (by id or name) from a collection",
		Args:    cobra.ExactArgs(2),
		RunE: run(o, func(s *session, args []string) error {
			coll, err := collections.byName(s, args[0])
			if err != nil {
				return err
			}
			id, err := findItem(s, coll, args[1])
			if err != nil {
				return err
			}
			return deleteAt(s, "item", client.Path("collections", coll, "items", id), id, args[1])
		}),
	}

	cmd.AddCommand(add, list, remove)
	return cmd
}

// findItem resolves an item of a collection by id or name. The items list
// has no name filter, so names are matched here.
func findItem(s *session, coll, ref string) (string, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		return ref, nil
	}
	list, err := client.List[map[string]any](s.ctx, s.c, client.WithQuery(client.Path("collections", coll, "items"), url.Values{"limit": {"1000"}}))
	if err != nil {
		return "", err
	}
	var ids []string
	for _, it := range list {
		if it["name"] == ref {
			ids = append(ids, format(it["id"]))
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("collection %s has no item named %q", coll, ref)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d items of collection %s are named %q: use the id", len(ids), coll, ref)
}
