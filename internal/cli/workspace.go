package cli

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
)

var workspaces = &resource{
	singular: "workspace", plural: "workspaces", nameKey: "name",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), n.column("SCOPE", "scope", "scopes", "name"),
			field("PUBLIC", "public"), field("EXPIRATION_DELAY", "expiration_delay"), field("CREATED_AT", "created_at")}
	},
}

// resolveWorkspace accepts an id, "scope/name", or a name that is unique
// among the workspaces the caller sees.
func resolveWorkspace(s *session, ref string) (string, error) {
	if scope, name, ok := strings.Cut(ref, "/"); ok {
		return workspaces.resolve(s, name, url.Values{"scope": {scope}})
	}
	return workspaces.resolve(s, ref, nil)
}

// workspaceRef is a workspace reference for a request body: the API takes
// an id or "scope/name"; a bare name is resolved here first.
func workspaceRef(s *session, ref string) (any, error) {
	if strings.Contains(ref, "/") {
		return ref, nil
	}
	id, err := resolveWorkspace(s, ref)
	if err != nil {
		return nil, err
	}
	return refValue(id), nil
}

// newWorkspaceCommand is `kiln workspace`: workspaces hold artifacts,
// collections and work inside a scope; private ones are visible to their
// members only.
func newWorkspaceCommand() *cobra.Command {
	cmd, o := group("workspace", "Manage workspaces and their members")

	var (
		scope      string
		public     bool
		private    bool
		expiration string
	)
	create := &cobra.Command{
		Use:   "create NAME --scope SCOPE",
		Short: "Create a workspace (admins only); private unless --public is given",
		Long: `Create a workspace in a scope (admins only).

A workspace is private unless --public is given: its name and contents are then
visible only to its members and to admins. --expiration-delay (e.g. 72h, 30d)
sets how long its artifacts are kept.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			if public && private {
				return usageError{fmt.Errorf("--public and --private exclude each other")}
			}
			body := map[string]any{"name": args[0], "scope": refValue(scope), "public": public}
			if expiration != "" {
				d, err := parseDuration("--expiration-delay", expiration)
				if err != nil {
					return err
				}
				body["expiration_delay"] = d
			}
			_, err := workspaces.create(s, body)
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&scope, "scope", "", "scope of the workspace, by name or id (required)")
	cf.BoolVar(&public, "public", false, "make the workspace visible to everyone, anonymous visitors included")
	cf.BoolVar(&private, "private", false, "make the workspace visible to its members only (the default)")
	cf.StringVar(&expiration, "expiration-delay", "", "keep artifacts this long, e.g. 72h or 30d (default: forever)")
	_ = create.MarkFlagRequired("scope")

	var listScope string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the workspaces you can see",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listScope != "" {
				q.Set("scope", listScope)
			}
			return workspaces.list(s, q)
		}),
	}
	list.Flags().StringVar(&listScope, "scope", "", "only workspaces of this scope (name or id)")

	var (
		newName      string
		setPublic    bool
		setPrivate   bool
		newExpiry    string
		noExpiration bool
	)
	update := &cobra.Command{
		Use:   "update WORKSPACE",
		Short: "Rename a workspace, make it public or private, change its expiration delay (admins only)",
		Long: `Change a workspace (admins only). WORKSPACE is an id, scope/name, or a name
that is unique among the workspaces you can see.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			if setPublic && setPrivate {
				return usageError{fmt.Errorf("--public and --private exclude each other")}
			}
			if s.changed("expiration-delay") && noExpiration {
				return usageError{fmt.Errorf("--expiration-delay and --no-expiration exclude each other")}
			}
			id, err := resolveWorkspace(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("name") {
				body["name"] = newName
			}
			if s.changed("public") {
				body["public"] = setPublic
			}
			if s.changed("private") {
				body["public"] = !setPrivate
			}
			if s.changed("expiration-delay") {
				d, err := parseDuration("--expiration-delay", newExpiry)
				if err != nil {
					return err
				}
				body["expiration_delay"] = d
			}
			if noExpiration {
				body["expiration_delay"] = nil
			}
			_, err = workspaces.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newName, "name", "", "new name")
	uf.BoolVar(&setPublic, "public", false, "make the workspace public")
	uf.BoolVar(&setPrivate, "private", false, "make the workspace private")
	uf.StringVar(&newExpiry, "expiration-delay", "", "new expiration delay, e.g. 72h or 30d")
	uf.BoolVar(&noExpiration, "no-expiration", false, "keep artifacts forever")

	cmd.AddCommand(create, list, workspaces.showCommand(o, resolveWorkspace), update,
		workspaces.deleteCommand(o, resolveWorkspace), newMemberCommand(o))
	return cmd
}

// members of a workspace, under /workspaces/{id}/members/.
func memberColumns(n *names) []column {
	return []column{field("ID", "id"), n.workspaceColumn("WORKSPACE", "workspace"), n.column("USER", "user", "users", "username"),
		n.column("GROUP", "group", "groups", "name"), field("ROLE", "role")}
}

// newMemberCommand is `kiln workspace member`: who holds which role
// (viewer, contributor, owner) in a workspace.
func newMemberCommand(o *clientOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "Grant and revoke roles in a workspace", RunE: helpOnly}

	var user, grp, role string
	add := &cobra.Command{
		Use:   "add WORKSPACE (--user USER | --group GROUP) --role viewer|contributor|owner",
		Short: "Give a user or a group a role in a workspace (owners and admins)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			if (user == "") == (grp == "") {
				return usageError{fmt.Errorf("give exactly one of --user and --group")}
			}
			ws, err := resolveWorkspace(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{"role": role}
			if user != "" {
				body["user"] = refValue(user)
			} else {
				g, err := groupRef(s, grp)
				if err != nil {
					return err
				}
				body["group"] = g
			}
			res := &resource{singular: "member", cols: memberColumns}
			_, err = res.send(s, "POST", client.Path("workspaces", ws, "members"), body, "added")
			return err
		}),
	}
	add.Flags().StringVar(&user, "user", "", "user, by username or id")
	add.Flags().StringVar(&grp, "group", "", "group, by id, scope/name or a unique name")
	add.Flags().StringVar(&role, "role", "", "viewer, contributor or owner (required)")
	_ = add.MarkFlagRequired("role")

	list := &cobra.Command{
		Use:   "list WORKSPACE",
		Short: "List the members of a workspace",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			ws, err := resolveWorkspace(s, args[0])
			if err != nil {
				return err
			}
			return listAt(s, client.Path("workspaces", ws, "members"), nil, memberColumns(s.n))
		}),
	}

	var rmUser, rmGroup string
	remove := &cobra.Command{
		Use:     "remove WORKSPACE (MEMBER_ID | --user USER | --group GROUP)",
		Aliases: []string{"rm"},
		Short:   "Revoke a role in a workspace (owners and admins)",
		Args:    cobra.RangeArgs(1, 2),
		RunE: run(o, func(s *session, args []string) error {
			given := 0
			for _, b := range []bool{len(args) == 2, rmUser != "", rmGroup != ""} {
				if b {
					given++
				}
			}
			if given != 1 {
				return usageError{fmt.Errorf("give exactly one of MEMBER_ID, --user and --group")}
			}
			ws, err := resolveWorkspace(s, args[0])
			if err != nil {
				return err
			}
			var member, what string
			switch {
			case len(args) == 2:
				member, what = args[1], args[1]
			case rmUser != "":
				id, err := users.byName(s, rmUser)
				if err != nil {
					return err
				}
				member, what, err = findMember(s, ws, "user", id)
				if err != nil {
					return err
				}
			default:
				id, err := resolveGroup(s, rmGroup)
				if err != nil {
					return err
				}
				member, what, err = findMember(s, ws, "group", id)
				if err != nil {
					return err
				}
			}
			return deleteAt(s, "member", client.Path("workspaces", ws, "members", member), member, what)
		}),
	}
	remove.Flags().StringVar(&rmUser, "user", "", "revoke the role of this user")
	remove.Flags().StringVar(&rmGroup, "group", "", "revoke the role of this group")

	cmd.AddCommand(add, list, remove)
	return cmd
}

// findMember returns the id of the membership of a user or group (kind) in
// a workspace.
func findMember(s *session, ws, kind, id string) (string, string, error) {
	q := url.Values{kind: {id}, "limit": {"1000"}}
	items, err := client.List[map[string]any](s.ctx, s.c, client.WithQuery(client.Path("workspaces", ws, "members"), q))
	if err != nil {
		return "", "", err
	}
	for _, m := range items {
		if format(m[kind]) == id {
			return format(m["id"]), fmt.Sprintf("%s %s", kind, id), nil
		}
	}
	return "", "", fmt.Errorf("%s %s is not a member of workspace %s", kind, id, ws)
}
