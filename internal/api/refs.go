package api

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// ref refers to another object: by id (a JSON number, or digits in a
// query string) or by name (a JSON string) where names are unique — scope
// names, usernames, file store and worker names, and "scope/name" for
// workspaces and groups, whose names are unique within their scope.
type ref struct {
	id   int64
	name string
}

var errRef = errors.New("must be an id (a positive integer) or a name (a non-empty string)")

// UnmarshalJSON reads a number as an id and a string as a name. A string
// of digits is a name: a scope may be called "2024".
func (r *ref) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil || s == "" {
			return errRef
		}
		*r = ref{name: s}
		return nil
	}
	var id int64
	if err := json.Unmarshal(b, &id); err != nil || id <= 0 {
		return errRef
	}
	*r = ref{id: id}
	return nil
}

// parseRef reads a reference from a query string, where digits mean an id.
func parseRef(s string) ref {
	if id, err := strconv.ParseInt(s, 10, 64); err == nil && id > 0 {
		return ref{id: id}
	}
	return ref{name: s}
}

// resolve finds the object r refers to in tb, as v sees it; byName turns a
// name into list filters (nil when the table has no unique names). An
// unknown or invisible object is a 400 naming field.
func resolve[T any](c *call, field, what string, tb store.Table[T], r ref, v *store.Viewer,
	byName func(string) (map[string]string, error)) (*T, error) {
	if r.name == "" {
		obj, err := tb.Get(c.ctx(), r.id, v)
		if isNotFound(err) {
			return nil, invalidField(field, "no %s with id %d", what, r.id)
		}
		return obj, err
	}
	if byName == nil {
		return nil, invalidField(field, "refer to the %s by its numeric id", what)
	}
	filter, err := byName(r.name)
	if err != nil {
		return nil, err
	}
	var list []T
	if filter != nil {
		list, err = tb.List(c.ctx(), store.Query{Limit: 1, Filter: filter, Viewer: v})
		if err != nil {
			return nil, err
		}
	}
	if len(list) == 0 {
		return nil, invalidField(field, "no %s named %q", what, r.name)
	}
	return &list[0], nil
}

func byFilter(name string) func(string) (map[string]string, error) {
	return func(v string) (map[string]string, error) { return map[string]string{name: v}, nil }
}

func (c *call) scopeRef(field string, r ref) (*model.Scope, error) {
	return resolve(c, field, "scope", c.a.st.Scopes(), r, nil, byFilter("name"))
}

// writableScope resolves an optional "scope" reference of a request body
// and checks that the token's scope restriction allows writing there; nil
// when the body gives no scope.
func (c *call) writableScope(r *ref) (*model.Scope, error) {
	if r == nil {
		return nil, nil
	}
	scope, err := c.scopeRef("scope", *r)
	if err != nil {
		return nil, err
	}
	if err := c.inScope(scope.ID); err != nil {
		return nil, err
	}
	return scope, nil
}

func (c *call) userRef(field string, r ref) (*model.User, error) {
	return resolve(c, field, "user", c.a.st.Users(), r, nil, byFilter("username"))
}

func (c *call) workerRef(field string, r ref) (*model.Worker, error) {
	return resolve(c, field, "worker", c.a.st.Workers(), r, nil, byFilter("name"))
}

// inScopeByName turns "scope/name" into the filters of a table whose names
// are unique per scope; nil filters mean "no such object".
func (c *call) inScopeByName(field, what string) func(string) (map[string]string, error) {
	return func(s string) (map[string]string, error) {
		scope, name, ok := strings.Cut(s, "/")
		if !ok || scope == "" || name == "" {
			return nil, invalidField(field, "give the %s by id or as \"scope/name\", not %q", what, s)
		}
		list, err := c.a.st.Scopes().List(c.ctx(), store.Query{Limit: 1, Filter: map[string]string{"name": scope}})
		if err != nil || len(list) == 0 {
			return nil, err
		}
		return map[string]string{"scope": strconv.FormatInt(list[0].ID, 10), "name": name}, nil
	}
}

// workspaceRef resolves a workspace the caller can see. The scope
// restriction of the token is left out here so that writes outside it get
// a clear 403 from inScope rather than "no such workspace".
func (c *call) workspaceRef(field string, r ref) (*model.Workspace, error) {
	v := c.viewer()
	v.ScopeID = nil
	return resolve(c, field, "workspace", c.a.st.Workspaces(), r, v, c.inScopeByName(field, "workspace"))
}

// visibleWorkspaceRef resolves a workspace the caller can see, within the
// token's scope: for reads, where a workspace outside that scope must be
// as unknown as one that does not exist.
func (c *call) visibleWorkspaceRef(field string, r ref) (*model.Workspace, error) {
	return resolve(c, field, "workspace", c.a.st.Workspaces(), r, c.viewer(), c.inScopeByName(field, "workspace"))
}

func (c *call) groupRef(field string, r ref) (*model.Group, error) {
	return resolve(c, field, "group", c.a.st.Groups(), r, nil, c.inScopeByName(field, "group"))
}

// required is the 400 of a missing field on create.
func required(field string) error { return invalidField(field, "%q is required", field) }
