package cli

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

var fileStores = &resource{
	singular: "file-store", plural: "file-stores", nameKey: "name",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("BACKEND", "backend"),
			sizeColumn("TOTAL_SIZE", "total_size"), sizeColumn("MAX_SIZE", "max_size"), field("CREATED_AT", "created_at")}
	},
}

// newFileStoreCommand is `kiln file-store`: where artifact files are kept
// (a local directory or an S3 bucket) and how much each may hold. Admins
// only, since a configuration holds the backend's credentials.
func newFileStoreCommand() *cobra.Command {
	cmd, o := group("file-store", "Manage file stores (admins only)")

	var backend, maxSize, conf, baseDir string
	create := &cobra.Command{
		Use:   "create NAME --backend Local|S3 [--max-size 10GiB]",
		Short: "Create a file store",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			body := map[string]any{"name": args[0], "backend": backend}
			if maxSize != "" {
				n, err := parseSize("--max-size", maxSize)
				if err != nil {
					return err
				}
				body["max_size"] = n
			}
			configuration, err := storeConfiguration(conf, baseDir)
			if err != nil {
				return err
			}
			if configuration != nil {
				body["configuration"] = configuration
			}
			_, err = fileStores.create(s, body)
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&backend, "backend", "Local", "Local or S3")
	cf.StringVar(&maxSize, "max-size", "", "refuse uploads beyond this total, e.g. 10GiB or 500MB (default: unlimited)")
	cf.StringVar(&conf, "configuration", "", "backend configuration as a JSON object, or @file.json")
	cf.StringVar(&baseDir, "base-directory", "", "Local backend: directory holding the files (sets configuration.base_directory)")

	var listBackend string
	list := &cobra.Command{
		Use:   "list",
		Short: "List file stores",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listBackend != "" {
				q.Set("backend", listBackend)
			}
			return fileStores.list(s, q)
		}),
	}
	list.Flags().StringVar(&listBackend, "backend", "", "only file stores with this backend")

	var newName, newMax, newConf string
	var unlimited bool
	update := &cobra.Command{
		Use:   "update FILE_STORE",
		Short: "Rename a file store, change its maximum size or configuration",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			if s.changed("max-size") && unlimited {
				return usageError{fmt.Errorf("--max-size and --unlimited exclude each other")}
			}
			id, err := fileStores.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("name") {
				body["name"] = newName
			}
			if s.changed("max-size") {
				n, err := parseSize("--max-size", newMax)
				if err != nil {
					return err
				}
				body["max_size"] = n
			}
			if unlimited {
				body["max_size"] = nil
			}
			if s.changed("configuration") {
				c, err := jsonFlag("--configuration", newConf)
				if err != nil {
					return err
				}
				body["configuration"] = c
			}
			_, err = fileStores.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newName, "name", "", "new name")
	uf.StringVar(&newMax, "max-size", "", "new maximum total size, e.g. 20GiB")
	uf.BoolVar(&unlimited, "unlimited", false, "remove the maximum size")
	uf.StringVar(&newConf, "configuration", "", "new backend configuration as a JSON object, or @file.json")

	cmd.AddCommand(create, list, fileStores.showCommand(o, fileStores.byName), update,
		fileStores.deleteCommand(o, fileStores.byName))
	return cmd
}

// storeConfiguration builds a file store's configuration from
// --configuration and the --base-directory shortcut.
func storeConfiguration(conf, baseDir string) (json.RawMessage, error) {
	if conf != "" && baseDir != "" {
		return nil, usageError{fmt.Errorf("--configuration and --base-directory exclude each other")}
	}
	if conf != "" {
		return jsonFlag("--configuration", conf)
	}
	if baseDir != "" {
		return json.Marshal(map[string]string{"base_directory": baseDir})
	}
	return nil, nil
}
