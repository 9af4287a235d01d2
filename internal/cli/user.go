package cli

import (
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

var users = &resource{
	singular: "user", plural: "users", nameKey: "username",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("USERNAME", "username"), field("EMAIL", "email"),
			field("ACTIVE", "active"), field("IS_ADMIN", "is_admin"), field("CREATED_AT", "created_at")}
	},
}

// newUserCommand is `kiln user`: the people (and the internal system
// user) who own tokens and create work. Admins only, except that users may
// show themselves.
func newUserCommand() *cobra.Command {
	cmd, o := group("user", "Manage users (admins only)")

	var email string
	var admin, inactive bool
	create := &cobra.Command{
		Use:   "create USERNAME",
		Short: "Create a user",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			body := map[string]any{"username": args[0], "is_admin": admin, "active": !inactive}
			if email != "" {
				body["email"] = email
			}
			_, err := users.create(s, body)
			return err
		}),
	}
	create.Flags().StringVar(&email, "email", "", "e-mail address")
	create.Flags().BoolVar(&admin, "admin", false, "make the user an admin, who may do everything")
	create.Flags().BoolVar(&inactive, "inactive", false, "create the user inactive: its tokens do not work until it is activated")

	var active string
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if active != "" {
				b, err := strconv.ParseBool(active)
				if err != nil {
					return usageError{err}
				}
				q.Set("active", strconv.FormatBool(b))
			}
			return users.list(s, q)
		}),
	}
	list.Flags().StringVar(&active, "active", "", "only active (true) or inactive (false) users")

	var (
		newName, newEmail string
		setActive, setAdm bool
	)
	update := &cobra.Command{
		Use:   "update USER",
		Short: "Change a user: --active=false deactivates it, --admin grants admin rights",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := users.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("username") {
				body["username"] = newName
			}
			if s.changed("email") {
				body["email"] = newEmail
			}
			if s.changed("active") {
				body["active"] = setActive
			}
			if s.changed("admin") {
				body["is_admin"] = setAdm
			}
			_, err = users.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newName, "username", "", "new username")
	uf.StringVar(&newEmail, "email", "", "new e-mail address")
	uf.BoolVar(&setActive, "active", true, "--active=false deactivates the user (its tokens stop working); --active reactivates it")
	uf.BoolVar(&setAdm, "admin", false, "--admin grants admin rights, --admin=false revokes them")

	cmd.AddCommand(create, list, users.showCommand(o, users.byName), update, users.deleteCommand(o, users.byName))
	return cmd
}
