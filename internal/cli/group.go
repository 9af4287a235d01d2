package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

var groups = &resource{
	singular: "group", plural: "groups", nameKey: "name",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), n.column("SCOPE", "scope", "scopes", "name"),
			field("EPHEMERAL", "ephemeral"), n.column("MEMBERS", "members", "users", "username"), field("CREATED_AT", "created_at")}
	},
}

// resolveGroup accepts an id, "scope/name", or a name unique among the
// groups the caller sees.
func resolveGroup(s *session, ref string) (string, error) {
	if scope, name, ok := strings.Cut(ref, "/"); ok {
		return groups.resolve(s, name, url.Values{"scope": {scope}})
	}
	return groups.resolve(s, ref, nil)
}

// groupRef is a group reference for a request body (id or "scope/name").
func groupRef(s *session, ref string) (any, error) {
	if strings.Contains(ref, "/") {
		return ref, nil
	}
	id, err := resolveGroup(s, ref)
	if err != nil {
		return nil, err
	}
	return refValue(id), nil
}

// newGroupCommand is `kiln group`: sets of users inside a scope, to whom
// workspace roles can be granted at once.
func newGroupCommand() *cobra.Command {
	cmd, o := group("group", "Manage groups of users (admins write, users read)")

	var (
		scope     string
		members   []string
		ephemeral bool
	)
	create := &cobra.Command{
		Use:   "create NAME --scope SCOPE",
		Short: "Create a group",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			refs := make([]any, 0, len(members))
			for _, m := range members {
				refs = append(refs, refValue(m))
			}
			_, err := groups.create(s, map[string]any{"name": args[0], "scope": refValue(scope),
				"ephemeral": ephemeral, "members": refs})
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&scope, "scope", "", "scope of the group, by name or id (required)")
	cf.StringSliceVar(&members, "member", nil, "member, by username or id; repeat or separate with commas")
	cf.BoolVar(&ephemeral, "ephemeral", false, "mark the group as created by automation, to expire with it")
	_ = create.MarkFlagRequired("scope")

	var listScope string
	list := &cobra.Command{
		Use:   "list",
		Short: "List groups",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listScope != "" {
				q.Set("scope", listScope)
			}
			return groups.list(s, q)
		}),
	}
	list.Flags().StringVar(&listScope, "scope", "", "only groups of this scope (name or id)")

	addMember := &cobra.Command{
		Use:   "add-member GROUP USER...",
		Short: "Add users to a group",
		Args:  cobra.MinimumNArgs(2),
		RunE: run(o, func(s *session, args []string) error {
			return changeMembers(s, args[0], args[1:], true)
		}),
	}
	removeMember := &cobra.Command{
		Use:   "remove-member GROUP USER...",
		Short: "Remove users from a group",
		Args:  cobra.MinimumNArgs(2),
		RunE: run(o, func(s *session, args []string) error {
			return changeMembers(s, args[0], args[1:], false)
		}),
	}

	var (
		newName      string
		newMembers   []string
		setEphemeral bool
	)
	update := &cobra.Command{
		Use:   "update GROUP [--name NAME] [--ephemeral=true|false] [--members USER,...]",
		Short: "Rename a group, mark it ephemeral or not, or replace its members",
		Long: `Change a group (admins only). GROUP is an id, scope/name, or a name that is
unique among the groups you can see. --members replaces the whole member list
(--members '' empties it); add-member and remove-member change it one user at
a time. A group stays in its scope.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := resolveGroup(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("name") {
				body["name"] = newName
			}
			if s.changed("ephemeral") {
				body["ephemeral"] = setEphemeral
			}
			if s.changed("members") {
				refs := make([]any, 0, len(newMembers))
				for _, m := range newMembers {
					if m = strings.TrimSpace(m); m != "" {
						refs = append(refs, refValue(m))
					}
				}
				body["members"] = refs
			}
			_, err = groups.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newName, "name", "", "new name")
	uf.BoolVar(&setEphemeral, "ephemeral", false, "--ephemeral marks the group as created by automation, --ephemeral=false as kept by people")
	uf.StringSliceVar(&newMembers, "members", nil, "the new member list, by username or id, separated by commas")

	cmd.AddCommand(create, list, groups.showCommand(o, resolveGroup), update, addMember, removeMember,
		groups.deleteCommand(o, resolveGroup))
	return cmd
}

// changeMembers adds users to a group or removes them. The API replaces a
// group's member list as a whole, so this reads the list and writes it
// back changed; a concurrent change made between the two is overwritten.
func changeMembers(s *session, groupRefText string, userRefs []string, add bool) error {
	id, err := resolveGroup(s, groupRefText)
	if err != nil {
		return err
	}
	var g struct {
		Members []int64 `json:"members"`
	}
	if err := s.c.Do(s.ctx, http.MethodGet, groups.path(id), nil, &g); err != nil {
		return err
	}
	current := map[string]bool{}
	var next []any
	for _, m := range g.Members {
		current[fmt.Sprint(m)] = true
	}
	ids := make([]string, len(userRefs))
	for i, u := range userRefs {
		if ids[i], err = users.byName(s, u); err != nil {
			return err
		}
	}
	drop := map[string]bool{}
	for i, uid := range ids {
		if add {
			if current[uid] {
				return fmt.Errorf("user %s is already a member of group %s", userRefs[i], groupRefText)
			}
			current[uid] = true
			next = append(next, refValue(uid))
		} else {
			if !current[uid] {
				return fmt.Errorf("user %s is not a member of group %s", userRefs[i], groupRefText)
			}
			drop[uid] = true
		}
	}
	members := make([]any, 0, len(g.Members)+len(next))
	for _, m := range g.Members {
		if !drop[fmt.Sprint(m)] {
			members = append(members, m)
		}
	}
	members = append(members, next...)
	_, err = groups.update(s, id, map[string]any{"members": members})
	return err
}
