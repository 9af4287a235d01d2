package api

import (
	"strconv"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type identityInput struct {
	User    *ref    `json:"user"`
	Issuer  *string `json:"issuer"`
	Subject *string `json:"subject"`
}

func (in *identityInput) change(c *call) (func(*model.Identity) error, error) {
	var user *model.User
	if in.User != nil {
		var err error
		if user, err = c.userRef("user", *in.User); err != nil {
			return nil, err
		}
	}
	return func(i *model.Identity) error {
		if user != nil {
			i.UserID = user.ID
		}
		set(&i.Issuer, in.Issuer)
		set(&i.Subject, in.Subject)
		return nil
	}, nil
}

// ownOnly restricts a list with a "user" filter to the caller's own
// objects unless the caller is an admin.
func ownOnly(c *call, q *store.Query) error {
	if c.isAdmin() {
		return nil
	}
	self := strconv.FormatInt(c.user().ID, 10)
	if u, ok := q.Filter["user"]; ok && u != self {
		return forbidden("you may list only your own; drop the user filter or use your id %s", self)
	}
	q.Filter["user"] = self
	return nil
}

// identityRoutes: users read their own SSO identities, admins all of
// them; only admins link and unlink identities, since an identity is a way
// to log in as its user.
func (a *API) identityRoutes() []Route {
	return (&resource[model.Identity, identityInput]{
		a: a, name: "identity", path: "identities", table: a.st.Identities(),
		id: func(i *model.Identity) int64 { return i.ID },
		filters: map[string]filterFunc{
			"user":   refFilter((*call).userRef, func(u *model.User) int64 { return u.ID }),
			"issuer": textFilter,
		},
		read:    (*call).requireUser,
		narrow:  ownOnly,
		visible: func(c *call, i *model.Identity) bool { return c.isAdmin() || c.isSelf(&i.UserID) },
		write:   (*call).requireAdmin,
		create: func(c *call, in *identityInput) (*model.Identity, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			if in.User == nil {
				return nil, required("user")
			}
			change, err := in.change(c)
			if err != nil {
				return nil, err
			}
			i := &model.Identity{}
			return i, change(i)
		},
		allow:  func(c *call, _ *model.Identity) error { return c.unrestricted() },
		update: func(c *call, in *identityInput) (func(*model.Identity) error, error) { return in.change(c) },
	}).routes()
}
