package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
)

// session is one run of an admin command: its context, API client,
// printer and the name cache of its tables.
type session struct {
	cmd *cobra.Command
	ctx context.Context
	c   *client.Client
	p   *printer
	n   *names
}

// session connects an admin command to its server.
func (o *clientOptions) session(cmd *cobra.Command) (*session, error) {
	p, err := newPrinter(cmd.OutOrStdout(), cmd.ErrOrStderr(), o.output)
	if err != nil {
		return nil, err
	}
	c, err := client.New(o.server, o.token)
	if err != nil {
		return nil, usageError{err}
	}
	ctx := cmd.Context()
	return &session{cmd: cmd, ctx: ctx, c: c, p: p, n: newNames(ctx, c)}, nil
}

// changed reports whether flag was given (on the command line, or by the
// environment or a config file), for PATCH bodies that carry only what the
// user asked to change.
func (s *session) changed(flag string) bool { return s.cmd.Flags().Changed(flag) }

// resource describes one REST collection for the generic parts of the
// admin commands: paths, name lookup and table columns.
type resource struct {
	singular string // "workspace", in messages and command names
	plural   string // "workspaces", the API's collection segment
	// command is the `kiln COMMAND` group that manages the resource, when
	// it is not singular ("work" for work requests), so that messages
	// suggest commands that exist.
	command string
	// nameKey is the JSON field holding the object's name, used to find an
	// object by name; "" when objects are referred to by id only.
	nameKey string
	// cols returns the table columns; names turns references into names.
	cols func(*names) []column
}

// commandName is the `kiln …` group of the resource: "kiln " + this +
// " list" is a command that exists.
func (r *resource) commandName() string {
	if r.command != "" {
		return r.command
	}
	return r.singular
}

// withArticle puts "a" or "an" before noun, as it is pronounced: "an
// artifact", "a workspace", "a user" (a yoo-, as "a unique").
func withArticle(noun string) string {
	if noun != "" && strings.ContainsRune("aeio", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}

func (r *resource) path(segments ...string) string {
	return client.Path(append([]string{r.plural}, segments...)...)
}

// resolve turns a reference typed by a person — an id or a name — into the
// object's id. Names are looked up with the list filter on nameKey
// (narrowed by filter, e.g. the scope of a workspace) and compared again
// here, so that only an exact match counts.
func (r *resource) resolve(s *session, ref string, filter url.Values) (string, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return "", usageError{fmt.Errorf("empty %s reference", r.singular)}
	}
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && id > 0 {
		return ref, nil
	}
	if r.nameKey == "" {
		return "", usageError{fmt.Errorf("%s %q: refer to %s by its id (see 'kiln %s list')", r.singular, ref, withArticle(r.singular), r.commandName())}
	}
	q := url.Values{"limit": {"1000"}}
	for k, v := range filter {
		q[k] = v
	}
	q.Set(r.nameKey, ref)
	items, err := client.List[json.RawMessage](s.ctx, s.c, client.WithQuery(r.path(), q))
	if err != nil {
		return "", err
	}
	var ids []string
	for _, it := range items {
		o, err := decodeObject(it)
		if err != nil {
			return "", err
		}
		if name, _ := o[r.nameKey].(string); name == ref {
			ids = append(ids, format(o["id"]))
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no %s named %q (or you may not see it)", r.singular, ref)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d %ss are named %q (ids %s): use the id", len(ids), r.singular, ref, strings.Join(ids, ", "))
}

// byName resolves references by id or name without further filter.
func (r *resource) byName(s *session, ref string) (string, error) {
	return r.resolve(s, ref, nil)
}

// show prints one object.
func (r *resource) show(s *session, id string) error {
	var raw json.RawMessage
	if err := s.c.Do(s.ctx, http.MethodGet, r.path(id), nil, &raw); err != nil {
		return err
	}
	return r.print(s, raw)
}

// print shows an object the server returned: its JSON, or its fields.
func (r *resource) print(s *session, raw json.RawMessage) error {
	return printObject(s, raw, r.cols(s.n))
}

// printObject shows an object the server returned: its JSON, or the
// fields cols.
func printObject(s *session, raw json.RawMessage, cols []column) error {
	if s.p.json {
		return s.p.raw(raw)
	}
	o, err := decodeObject(raw)
	if err != nil {
		return err
	}
	return s.p.record(cols, o)
}

// list prints every object of the collection that matches q, across pages.
func (r *resource) list(s *session, q url.Values) error {
	return listAt(s, r.path(), q, r.cols(s.n))
}

// listAt prints every object of the collection at path matching q, across
// pages, in the columns cols.
func listAt(s *session, path string, q url.Values, cols []column) error {
	if q == nil {
		q = url.Values{}
	}
	q.Set("limit", "1000")
	items, err := client.List[json.RawMessage](s.ctx, s.c, client.WithQuery(path, q))
	if err != nil {
		return err
	}
	if s.p.json {
		return s.p.rawList(items)
	}
	objs := make([]object, 0, len(items))
	for _, it := range items {
		o, err := decodeObject(it)
		if err != nil {
			return err
		}
		objs = append(objs, o)
	}
	return s.p.table(cols, objs)
}

// create posts body and prints the new object.
func (r *resource) create(s *session, body any) (object, error) {
	return r.send(s, http.MethodPost, r.path(), body, "created")
}

// update patches the object with body and prints the result.
func (r *resource) update(s *session, id string, body map[string]any) (object, error) {
	if len(body) == 0 {
		return nil, usageError{fmt.Errorf("nothing to update: give at least one flag (see 'kiln %s update --help')", r.commandName())}
	}
	return r.send(s, http.MethodPatch, r.path(id), body, "updated")
}

// send makes a write request, notes what happened for the person and
// prints the object returned.
func (r *resource) send(s *session, method, path string, body any, verb string) (object, error) {
	var raw json.RawMessage
	if err := s.c.Do(s.ctx, method, path, body, &raw); err != nil {
		return nil, err
	}
	o, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	s.p.note("%s %s %s", r.singular, describe(o, r.nameKey), verb)
	return o, r.print(s, raw)
}

// deleteAt deletes the object at path, named ref on the command line.
func deleteAt(s *session, what, path, id, ref string) error {
	if err := s.c.Do(s.ctx, http.MethodDelete, path, nil, nil); err != nil {
		return err
	}
	return printDeleted(s, what, id, ref)
}

// printDeleted says that the object id, named ref on the command line, is
// gone.
func printDeleted(s *session, what, id, ref string) error {
	if s.p.json {
		n, _ := strconv.ParseInt(id, 10, 64)
		data, _ := json.Marshal(map[string]any{"deleted": what, "id": n})
		return s.p.raw(data)
	}
	if ref != id {
		fmt.Fprintf(s.p.out, "deleted %s %s (id %s)\n", what, ref, id)
	} else {
		fmt.Fprintf(s.p.out, "deleted %s %s\n", what, id)
	}
	return nil
}

// describe names an object in messages: "debian (id 3)" or "3".
func describe(o object, nameKey string) string {
	id := format(o["id"])
	if nameKey != "" {
		if name, _ := o[nameKey].(string); name != "" {
			return fmt.Sprintf("%s (id %s)", name, id)
		}
	}
	return id
}

// resolver finds the id of an object from what the user typed.
type resolver func(*session, string) (string, error)

// The standard subcommands, shared by most resources.

// showCommand is `kiln <resource> show REF`.
func (r *resource) showCommand(o *clientOptions, resolve resolver) *cobra.Command {
	return &cobra.Command{
		Use:   "show " + r.refName(),
		Short: "Show one " + r.singular,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			id, err := resolve(s, args[0])
			if err != nil {
				return err
			}
			return r.show(s, id)
		},
	}
}

// deleteCommand is `kiln <resource> delete REF`.
func (r *resource) deleteCommand(o *clientOptions, resolve resolver) *cobra.Command {
	return &cobra.Command{
		Use:     "delete " + r.refName(),
		Aliases: []string{"rm"},
		Short:   "Delete " + withArticle(r.singular),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.session(cmd)
			if err != nil {
				return err
			}
			id, err := resolve(s, args[0])
			if err != nil {
				return err
			}
			return deleteAt(s, r.singular, r.path(id), id, args[0])
		},
	}
}

// refName is the placeholder of a reference in usage lines.
func (r *resource) refName() string {
	if r.nameKey == "" {
		return "ID"
	}
	return strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(r.singular))
}

// group returns the command `kiln <use>` with the client flags.
func group(use, short string) (*cobra.Command, *clientOptions) {
	cmd := &cobra.Command{Use: use, Short: short, RunE: helpOnly}
	return cmd, addClientFlags(cmd)
}

// helpOnly is the action of command groups: without a subcommand they show
// their help (and fail on an unknown subcommand).
func helpOnly(cmd *cobra.Command, _ []string) error {
	return cmd.Help()
}

// run adapts an admin action to cobra: it connects, then runs fn.
func run(o *clientOptions, fn func(s *session, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := o.session(cmd)
		if err != nil {
			return err
		}
		return o.explain(fn(s, args))
	}
}

// explain adds what to do to an authentication failure when no token was
// configured at all, the usual first mistake.
func (o *clientOptions) explain(err error) error {
	var ae *client.Error
	if o.token == "" && errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		return fmt.Errorf("%w\nNo token given: set --token, KILN_TOKEN or token in the client config file; "+
			"a new server writes its admin token to <data-dir>/admin-token", err)
	}
	return err
}

// listFilter is an optional list flag passed to the API as a query
// parameter.
type listFilter struct {
	flag, param, help string
}

// workspaceListCommand is `kiln <resource> list` for workspace-owned
// resources: what the user can see, optionally narrowed to one workspace
// (by id, scope/name or unique name) and by further filters.
func (r *resource) workspaceListCommand(o *clientOptions, filters ...listFilter) *cobra.Command {
	var workspace string
	values := make([]string, len(filters))
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the " + r.plural + " you can see",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if workspace != "" {
				ws, err := workspaceRef(s, workspace)
				if err != nil {
					return err
				}
				q.Set("workspace", format(ws))
			}
			for i, f := range filters {
				if values[i] != "" {
					q.Set(f.param, values[i])
				}
			}
			return r.list(s, q)
		}),
	}
	cmd.Flags().StringVar(&workspace, "workspace", "", "only "+r.plural+" of this workspace")
	for i, f := range filters {
		cmd.Flags().StringVar(&values[i], f.flag, "", f.help)
	}
	return cmd
}
