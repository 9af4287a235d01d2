package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/model"
)

var fileStores = &resource{
	singular: "file-store", plural: "file-stores", nameKey: "name",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("BACKEND", "backend"), field("DEFAULT", "default"),
			sizeColumn("TOTAL_SIZE", "total_size"), sizeColumn("MAX_SIZE", "max_size"), field("CREATED_AT", "created_at")}
	},
}

// newFileStoreCommand is `kiln file-store`: where artifact files are kept
// (a local directory or an S3 bucket) and how much each may hold. Admins
// only. The server checks a new configuration against the store itself
// (it writes, reads back and deletes a small file) and says what is wrong;
// S3 credentials never pass through here: the server takes them from its
// environment or from a file named with --credentials-file.
func newFileStoreCommand() *cobra.Command {
	cmd, o := group("file-store", "Manage file stores (admins only)")

	var backend, maxSize, conf string
	var makeDefault bool
	var local localFlags
	var s3 s3Flags
	create := &cobra.Command{
		Use:   "create NAME --backend Local|S3 [--max-size 10GiB] [--default]",
		Short: "Create a file store",
		Long: `Create a file store: a directory of the server's (--backend Local
--base-directory DIR) or a bucket of an S3-compatible object store (--backend S3
--endpoint URL --bucket NAME …). The server checks that it can write there
before it saves the store, and names the setting to fix when it cannot
(unreachable endpoint, no such bucket, access denied, TLS failure).

S3 keys are never sent to kiln: the server reads them from its environment
(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or KILN_S3_ACCESS_KEY_ID and
KILN_S3_SECRET_ACCESS_KEY) or from the AWS credentials file that
--credentials-file names on the server's machine.

New uploads go to the default file store; --default makes this one the
default.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			b, err := parseBackend(backend)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "backend": b}
			if maxSize != "" {
				n, err := parseSize("--max-size", maxSize)
				if err != nil {
					return err
				}
				body["max_size"] = n
			}
			if makeDefault {
				body["default"] = true
			}
			configuration, err := storeConfiguration(s, b, conf, local, s3)
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
	cf.BoolVar(&makeDefault, "default", false, "make it the store that new uploads go to")
	cf.StringVar(&conf, "configuration", "", "backend configuration as a JSON object, or @file.json (instead of the backend's flags)")
	local.add(cf)
	s3.add(cf)

	var listBackend string
	list := &cobra.Command{
		Use:   "list",
		Short: "List file stores",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listBackend != "" {
				b, err := parseBackend(listBackend)
				if err != nil {
					return err
				}
				q.Set("backend", string(b))
			}
			return fileStores.list(s, q)
		}),
	}
	list.Flags().StringVar(&listBackend, "backend", "", "only file stores with this backend")

	var newName, newMax, newConf string
	var unlimited, newDefault bool
	update := &cobra.Command{
		Use:   "update FILE_STORE",
		Short: "Rename a file store, change its maximum size or configuration, or make it the default",
		Long: `Change a file store. A new --configuration is checked against the store
before it is saved. Changing where a store points does not move the files it
holds: copy them to the new place first.`,
		Args: cobra.ExactArgs(1),
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
			if newDefault {
				body["default"] = true
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
	uf.BoolVar(&newDefault, "default", false, "make it the store that new uploads go to")
	uf.StringVar(&newConf, "configuration", "", "new backend configuration as a JSON object, or @file.json")

	cmd.AddCommand(create, list, fileStores.showCommand(o, fileStores.byName), update,
		fileStores.deleteCommand(o, fileStores.byName))
	return cmd
}

// parseBackend accepts a backend's name in any case.
func parseBackend(s string) (model.FileStoreBackend, error) {
	for _, b := range []model.FileStoreBackend{model.BackendLocal, model.BackendS3} {
		if strings.EqualFold(s, string(b)) {
			return b, nil
		}
	}
	return "", usageError{fmt.Errorf("--backend %q: want Local or S3", s)}
}

// localFlags are the configuration of a Local store.
type localFlags struct{ baseDir string }

func (l *localFlags) add(f *pflag.FlagSet) {
	f.StringVar(&l.baseDir, "base-directory", "", "Local: absolute directory, on the server's machine, holding the files")
}

// s3Flags are the configuration of an S3 store, one flag per key of
// filestore.S3Config except the rarely changed ones (--configuration
// takes those).
type s3Flags struct {
	endpoint, bucket, region, prefix, caFile, credentialsFile, profile, expiry string
	pathStyle, presigned                                                       bool
}

func (f *s3Flags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoint, "endpoint", "", "S3: URL of the service, e.g. https://s3.eu-west-1.amazonaws.com or http://minio:9000")
	fs.StringVar(&f.bucket, "bucket", "", "S3: bucket")
	fs.StringVar(&f.region, "region", "", "S3: region (default: asked from the endpoint)")
	fs.StringVar(&f.prefix, "prefix", "", "S3: key prefix of kiln's objects, e.g. kiln/")
	fs.BoolVar(&f.pathStyle, "path-style", false, "S3: path-style addressing (https://host/bucket/key), which most self-hosted servers need")
	fs.StringVar(&f.caFile, "ca-file", "", "S3: PEM file, on the server's machine, of a CA to trust for the endpoint's certificate")
	fs.StringVar(&f.credentialsFile, "credentials-file", "", "S3: AWS credentials file on the server's machine (default: the server's environment)")
	fs.StringVar(&f.profile, "credentials-profile", "", "S3: section of --credentials-file (default: default)")
	fs.BoolVar(&f.presigned, "presigned-downloads", false, "S3: send downloaders to a presigned URL of the object instead of streaming it through the server")
	fs.StringVar(&f.expiry, "presigned-expiry", "", "S3: how long a presigned URL is valid, e.g. 15m (the default), at most 168h")
}

// storeConfiguration builds a file store's configuration from
// --configuration or from the backend's flags; flags of the other backend
// are refused, so that a typo does not create a store that ignores them.
func storeConfiguration(s *session, backend model.FileStoreBackend, conf string, local localFlags, s3 s3Flags) (json.RawMessage, error) {
	var given []string
	for _, name := range []string{"base-directory", "endpoint", "bucket", "region", "prefix", "path-style", "ca-file",
		"credentials-file", "credentials-profile", "presigned-downloads", "presigned-expiry"} {
		if s.changed(name) {
			given = append(given, "--"+name)
		}
	}
	if conf != "" {
		if len(given) > 0 {
			return nil, usageError{fmt.Errorf("--configuration and %s exclude each other", given[0])}
		}
		return jsonFlag("--configuration", conf)
	}
	for _, g := range given {
		if (g == "--base-directory") != (backend == model.BackendLocal) {
			return nil, usageError{fmt.Errorf("%s does not apply to a %s file store", g, backend)}
		}
	}
	if backend == model.BackendLocal {
		if local.baseDir == "" {
			return nil, nil
		}
		return json.Marshal(map[string]string{"base_directory": local.baseDir})
	}
	c := map[string]any{}
	for key, v := range map[string]string{"endpoint": s3.endpoint, "bucket": s3.bucket, "region": s3.region, "prefix": s3.prefix,
		"ca_file": s3.caFile, "credentials_file": s3.credentialsFile, "credentials_profile": s3.profile, "presigned_expiry": s3.expiry} {
		if v != "" {
			c[key] = v
		}
	}
	if s.changed("path-style") {
		c["path_style"] = s3.pathStyle
	}
	if s3.presigned {
		c["presigned_downloads"] = true
	}
	return json.Marshal(c)
}
