package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

var tokens = &resource{
	singular: "token", plural: "tokens",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("PREFIX", "prefix"), n.column("USER", "user", "users", "username"),
			n.column("SCOPE", "scope", "scopes", "name"), field("ENABLED", "enabled"), field("EXPIRES_AT", "expires_at"),
			field("LAST_SEEN_AT", "last_seen_at"), field("COMMENT", "comment")}
	},
}

// newTokenCommand is `kiln token`: API tokens. A token's secret is shown
// once, when it is created; kiln keeps only its hash.
func newTokenCommand() *cobra.Command {
	cmd, o := group("token", "Manage API tokens")

	var (
		user, scope, comment, expires string
		disabled                      bool
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print its secret, once",
		Long: `Create a token and print its secret on stdout, once: kiln keeps only its hash.

Without --user the token is yours; admins may create tokens for any user.
--scope restricts what the token can see and change to one scope. For scripts:

  TOKEN=$(kiln token create --user alice --comment ci)`,
		Args: cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			body := map[string]any{}
			if user != "" {
				body["user"] = refValue(user)
			}
			if scope != "" {
				body["scope"] = refValue(scope)
			}
			if comment != "" {
				body["comment"] = comment
			}
			if disabled {
				body["enabled"] = false
			}
			if expires != "" {
				at, err := expiresAt(expires)
				if err != nil {
					return err
				}
				body["expires_at"] = at
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodPost, tokens.path(), body, &raw); err != nil {
				return err
			}
			if s.p.json {
				return s.p.raw(raw)
			}
			var t struct {
				ID     int64  `json:"id"`
				Secret string `json:"secret"`
			}
			if err := json.Unmarshal(raw, &t); err != nil || t.Secret == "" {
				return fmt.Errorf("the server's answer holds no token secret")
			}
			s.p.note("token %d created; its secret is shown only now:", t.ID)
			_, err := fmt.Fprintln(s.p.out, t.Secret)
			return err
		}),
	}
	cf := create.Flags()
	cf.StringVar(&user, "user", "", "owner of the token, by username or id (default: you)")
	cf.StringVar(&scope, "scope", "", "restrict the token to this scope (name or id)")
	cf.StringVar(&comment, "comment", "", "what the token is for")
	cf.StringVar(&expires, "expires", "", "expire the token after this long, e.g. 720h or 90d (default: never)")
	cf.BoolVar(&disabled, "disabled", false, "create the token disabled")

	var listUser string
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (yours; all of them for admins)",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listUser != "" {
				q.Set("user", listUser)
			}
			return tokens.list(s, q)
		}),
	}
	list.Flags().StringVar(&listUser, "user", "", "only tokens of this user (username or id)")

	setEnabled := func(use, short string, enabled bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: run(o, func(s *session, args []string) error {
				id, err := tokens.byName(s, args[0])
				if err != nil {
					return err
				}
				_, err = tokens.update(s, id, map[string]any{"enabled": enabled})
				return err
			}),
		}
	}

	var (
		newComment, newExpires string
		neverExpires           bool
	)
	update := &cobra.Command{
		Use:   "update ID [--comment TEXT] [--expires DURATION | --no-expiry]",
		Short: "Change a token's comment or expiry (yours; any token for admins)",
		Long: `Change a token's comment or expiry. Who and what a token speaks for (its user,
worker and scope) is fixed: create a new token instead. To stop a token now,
use 'kiln token disable'.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			if s.changed("expires") && neverExpires {
				return usageError{fmt.Errorf("--expires and --no-expiry exclude each other")}
			}
			id, err := tokens.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if s.changed("comment") {
				body["comment"] = newComment
			}
			if s.changed("expires") {
				at, err := expiresAt(newExpires)
				if err != nil {
					return err
				}
				body["expires_at"] = at
			}
			if neverExpires {
				body["expires_at"] = nil
			}
			_, err = tokens.update(s, id, body)
			return err
		}),
	}
	uf := update.Flags()
	uf.StringVar(&newComment, "comment", "", "what the token is for")
	uf.StringVar(&newExpires, "expires", "", "expire the token this long from now, e.g. 720h or 90d")
	uf.BoolVar(&neverExpires, "no-expiry", false, "the token never expires")

	cmd.AddCommand(create, list, tokens.showCommand(o, tokens.byName), update,
		setEnabled("disable", "Disable a token: requests with it fail until it is enabled again", false),
		setEnabled("enable", "Enable a disabled token", true),
		tokens.deleteCommand(o, tokens.byName))
	return cmd
}

// expiresAt turns --expires (a duration from now, e.g. 90d) into the
// RFC 3339 time the API takes.
func expiresAt(flag string) (string, error) {
	d, err := parseDuration("--expires", flag)
	if err != nil {
		return "", err
	}
	dur, _ := time.ParseDuration(d)
	if dur <= 0 {
		return "", usageError{fmt.Errorf("--expires %q: must be more than zero", flag)}
	}
	return time.Now().Add(dur).UTC().Format(time.RFC3339), nil
}
