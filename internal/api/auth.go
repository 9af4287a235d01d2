package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Who may do what (admins may do everything, within a scope-restricted
// token's scope):
//
//   - Anonymous callers (no Authorization header) may read scopes and
//     workspace-owned resources (workspaces, members, assets, collections,
//     items) of public workspaces. Everything else answers 401.
//   - A bad token — unknown, disabled, expired, or of an inactive user — is
//     always 401, even where anonymous access would do: a client that
//     thinks it is authenticated must learn that it is not.
//   - Worker-only tokens (no user) get 403 on every route of this package;
//     runners have their own routes.
//   - Users read scopes, groups, themselves, their own identities and
//     tokens, and workspace-owned resources of the workspaces they see
//     (public ones and those they are members of). They write assets,
//     collections and items where they are contributor or owner, manage the
//     members of workspaces they own, and create (for themselves only),
//     change and delete their own tokens. Scopes, workspaces, users,
//     identities, groups and file stores are written by admins only; users
//     and file stores are listed by admins only (file store configurations
//     hold credentials).
//   - A scope-restricted token sees only its scope and gets 403 on writes
//     outside it, including writes of global objects (users, identities,
//     file stores, new scopes).
//
// Objects the caller cannot see answer 404, exactly as if they did not
// exist; objects the caller sees but may not change answer 403.

// unknownToken is the detail of every refused token: it does not say which
// check failed, so that probing tokens teaches nothing.
const unknownToken = "the token is unknown, disabled or expired, or its user is inactive"

// call is one request being served: the writer, the request and who is
// asking (p is nil for anonymous callers).
type call struct {
	a *API
	w http.ResponseWriter
	r *http.Request
	p *store.Principal
}

func (c *call) ctx() context.Context { return c.r.Context() }

// endpoint turns an operation into a complete handler: authentication,
// the operation, and the problem answer when it fails.
func (a *API) endpoint(op func(*call) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{a: a, w: w, r: r}
		err := c.authenticate()
		if err == nil {
			err = checkParams(r)
		}
		if err == nil {
			err = op(c)
		}
		if err != nil {
			a.fail(w, r, err)
		}
	})
}

// authenticate resolves the Authorization header, if any. A request the
// webhook receiver makes internally carries its principal in its context
// instead (see dispatchHook); no client can set that.
func (c *call) authenticate() error {
	if p, ok := c.r.Context().Value(principalKey{}).(*store.Principal); ok {
		c.p = p
		return nil
	}
	values := c.r.Header.Values("Authorization")
	if len(values) == 0 {
		return nil
	}
	scheme, secret, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	secret = strings.TrimSpace(secret)
	if len(values) > 1 || !strings.EqualFold(scheme, "Token") || secret == "" {
		return errorf(http.StatusUnauthorized, "", `send exactly one header "Authorization: Token <secret>"`)
	}
	p, err := c.a.st.Authenticate(c.ctx(), secret)
	if err != nil {
		return err
	}
	c.p = p
	return nil
}

// user is the authenticated user, or nil.
func (c *call) user() *model.User {
	if c.p == nil {
		return nil
	}
	return c.p.User
}

func (c *call) isAdmin() bool { return c.user() != nil && c.user().IsAdmin }

// isSelf reports whether id is the caller's user id.
func (c *call) isSelf(id *int64) bool { return id != nil && c.user() != nil && *id == c.user().ID }

// anyone lets anonymous callers and users through, and stops runners.
func (c *call) anyone() error {
	if c.p != nil && c.p.User == nil {
		return forbidden("this token belongs to a runner, not to a user; these routes are for users")
	}
	return nil
}

// requireUser stops anonymous callers (401) and runners (403).
func (c *call) requireUser() error {
	if c.p == nil {
		return errorf(http.StatusUnauthorized, "", `this needs authentication: send "Authorization: Token <secret>"`)
	}
	return c.anyone()
}

// requireAdmin lets only admins through.
func (c *call) requireAdmin() error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if !c.isAdmin() {
		return forbidden("only admins may do this")
	}
	return nil
}

// viewer is what the store shows the caller.
func (c *call) viewer() *store.Viewer { return ViewerOf(c.p) }

// ViewerOf is what the store shows p — nil for anonymous callers — on
// every route of the API, and on every page of the dashboard, which asks
// the store with the same viewer. Anonymous callers get a viewer that
// matches no membership: a nil viewer would see everything.
func ViewerOf(p *store.Principal) *store.Viewer {
	if p == nil {
		return &store.Viewer{UserID: -1}
	}
	return p.Viewer()
}

// restriction is the scope the caller's token is restricted to, or nil.
func (c *call) restriction() *int64 {
	if c.p == nil {
		return nil
	}
	return c.p.Token.ScopeID
}

// seesScope reports whether a scope-restricted token lets the caller see
// objects of scope id.
func (c *call) seesScope(id int64) bool { return c.viewer().SeesScope(id) }

// inScope refuses writes outside a scope-restricted token's scope.
func (c *call) inScope(id int64) error {
	if !c.seesScope(id) {
		return forbidden("this token is restricted to scope %d and cannot write in scope %d", *c.restriction(), id)
	}
	return nil
}

// unrestricted refuses writes of global objects with a scope-restricted
// token.
func (c *call) unrestricted() error {
	if r := c.restriction(); r != nil {
		return forbidden("this token is restricted to scope %d and cannot write objects outside it", *r)
	}
	return nil
}

var roleRank = map[model.WorkspaceRole]int{model.RoleViewer: 1, model.RoleContributor: 2, model.RoleOwner: 3}

// requireRole lets through admins and users holding at least role min in
// ws, within the token's scope.
func (c *call) requireRole(ws *model.Workspace, min model.WorkspaceRole) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.inScope(ws.ScopeID); err != nil {
		return err
	}
	if c.isAdmin() {
		return nil
	}
	role, ok, err := c.a.st.WorkspaceRole(c.ctx(), c.user().ID, ws.ID)
	if err != nil {
		return err
	}
	if !ok || roleRank[role] < roleRank[min] {
		return forbidden("this needs the %s role in workspace %d (%s)", min, ws.ID, ws.Name)
	}
	return nil
}

// workspaceOf reads the workspace of an object the caller already sees.
func (c *call) workspaceOf(id int64) (*model.Workspace, error) {
	ws, err := c.a.st.Workspaces().Get(c.ctx(), id, nil)
	if err != nil {
		return nil, fmt.Errorf("workspace %d of a visible object: %w", id, err)
	}
	return ws, nil
}

// reply answers v as JSON with status.
func (c *call) reply(status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	_, err = c.w.Write(append(body, '\n'))
	if err != nil {
		// the client went away; nothing left to answer
		c.a.log.DebugContext(c.ctx(), "writing response", "err", err)
	}
	return nil
}

// created answers 201 with the object and its Location.
func (c *call) created(location string, v any) error {
	c.w.Header().Set("Location", location)
	return c.reply(http.StatusCreated, v)
}

// notFound is the 404 of an item path.
func notFound(what string, id int64) error {
	return errorf(http.StatusNotFound, "", "no %s with id %d (or it is not visible to you)", what, id)
}

// isNotFound reports a store ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
