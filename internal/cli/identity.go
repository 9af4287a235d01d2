package cli

import (
	"net/url"

	"github.com/spf13/cobra"
)

var identities = &resource{
	singular: "identity", plural: "identities",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), n.column("USER", "user", "users", "username"), field("ISSUER", "issuer"),
			field("SUBJECT", "subject"), field("CREATED_AT", "created_at")}
	},
}

// newIdentityCommand is `kiln identity`: links between users and their
// accounts at SSO issuers. Only admins link and unlink them, since an
// identity is a way to log in as its user.
func newIdentityCommand() *cobra.Command {
	cmd, o := group("identity", "Link users to SSO identities (admins only)")

	var user, issuer, subject string
	create := &cobra.Command{
		Use:   "create --user USER --issuer ISSUER --subject SUBJECT",
		Short: "Link a user to an account at an SSO issuer",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			_, err := identities.create(s, map[string]any{"user": refValue(user), "issuer": issuer, "subject": subject})
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&user, "user", "", "user, by username or id (required)")
	cf.StringVar(&issuer, "issuer", "", "issuer, e.g. https://accounts.example.org (required)")
	cf.StringVar(&subject, "subject", "", "the user's subject at the issuer (required)")
	for _, f := range []string{"user", "issuer", "subject"} {
		_ = create.MarkFlagRequired(f)
	}

	var listUser, listIssuer string
	list := &cobra.Command{
		Use:   "list",
		Short: "List identities",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listUser != "" {
				q.Set("user", listUser)
			}
			if listIssuer != "" {
				q.Set("issuer", listIssuer)
			}
			return identities.list(s, q)
		}),
	}
	list.Flags().StringVar(&listUser, "user", "", "only identities of this user (username or id)")
	list.Flags().StringVar(&listIssuer, "issuer", "", "only identities at this issuer")

	var newUser, newIssuer, newSubject string
	update := &cobra.Command{
		Use:   "update ID [--user USER] [--issuer ISSUER] [--subject SUBJECT]",
		Short: "Change which user an identity logs in as, or its issuer and subject",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := identities.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("user") {
				body["user"] = refValue(newUser)
			}
			if s.changed("issuer") {
				body["issuer"] = newIssuer
			}
			if s.changed("subject") {
				body["subject"] = newSubject
			}
			_, err = identities.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newUser, "user", "", "link the identity to this user instead, by username or id")
	uf.StringVar(&newIssuer, "issuer", "", "new issuer")
	uf.StringVar(&newSubject, "subject", "", "new subject at the issuer")

	cmd.AddCommand(create, list, identities.showCommand(o, identities.byName), update, identities.deleteCommand(o, identities.byName))
	return cmd
}
