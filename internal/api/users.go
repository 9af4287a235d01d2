package api

import (
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type userInput struct {
	Username *string `json:"username"`
	Email    *string `json:"email"`
	Active   *bool   `json:"active"`
	IsAdmin  *bool   `json:"is_admin"`
}

func (in *userInput) apply(u *model.User) error {
	set(&u.Username, in.Username)
	set(&u.Email, in.Email)
	set(&u.Active, in.Active)
	set(&u.IsAdmin, in.IsAdmin)
	return nil
}

// userRoutes: admins list and write users; a user may read only their own
// user. The internal system user is shown to admins but never changed or
// deleted through the API: kiln owns it.
func (a *API) userRoutes() []Route {
	return (&resource[model.User, userInput]{
		a: a, name: "user", path: "users", table: a.st.Users(),
		id:      func(u *model.User) int64 { return u.ID },
		filters: map[string]filterFunc{"username": textFilter, "active": boolFilter},
		read:    (*call).requireUser,
		narrow: func(c *call, _ *store.Query) error {
			if !c.isAdmin() {
				return forbidden("only admins may list users; read your own user at %susers/%d/", Prefix, c.user().ID)
			}
			return nil
		},
		visible: func(c *call, u *model.User) bool { return c.isAdmin() || c.isSelf(&u.ID) },
		write:   (*call).requireAdmin,
		create: func(c *call, in *userInput) (*model.User, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			u := &model.User{Active: true}
			return u, in.apply(u)
		},
		allow: func(c *call, u *model.User) error {
			if u.System {
				return forbidden("user %q is kiln's internal system user and cannot be changed or deleted", u.Username)
			}
			return c.unrestricted()
		},
		update: func(c *call, in *userInput) (func(*model.User) error, error) { return in.apply, nil },
	}).routes()
}
