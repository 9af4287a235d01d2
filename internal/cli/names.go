package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/client"
)

// names shows references as names in tables: the API returns a
// workspace's scope as an id, people think of it as "debian". A referenced
// collection is read once per command, when a column first needs it: one
// page of up to 1000 objects, which holds all of them on most farms;
// beyond that, each id still unknown is fetched alone (and remembered).
// When the caller may not read the collection (users are listed by admins
// only) the id is shown instead.
type names struct {
	ctx      context.Context
	c        *client.Client
	byPath   map[string]map[string]string
	complete map[string]bool
}

func newNames(ctx context.Context, c *client.Client) *names {
	return &names{ctx: ctx, c: c, byPath: map[string]map[string]string{}, complete: map[string]bool{}}
}

// display is how an object of a referenced collection is shown; label
// tells displays of one collection apart in the cache.
type display struct {
	label string
	show  func(object) string // "" when the object has nothing to show
}

// byKey shows an object by one of its fields.
func byKey(key string) display {
	return display{key, func(o object) string { s, _ := o[key].(string); return s }}
}

// workspaceName shows a workspace as people name it on the command line:
// "scope/name", since workspace names are unique within a scope only.
func (n *names) workspaceName() display {
	return display{"scope/name", func(o object) string {
		name, _ := o["name"].(string)
		if name == "" {
			return ""
		}
		return n.lookup("scopes", byKey("name"), format(o["scope"])) + "/" + name
	}}
}

// lookup returns how the object id of the collection plural is shown, or
// id itself.
func (n *names) lookup(plural string, d display, id string) string {
	cache := plural + "#" + d.label
	m, ok := n.byPath[cache]
	if !ok {
		m = map[string]string{}
		n.byPath[cache] = m
		var page client.Page[json.RawMessage]
		q := url.Values{"limit": {"1000"}}
		if err := n.c.Do(n.ctx, http.MethodGet, client.WithQuery(client.Path(plural), q), nil, &page); err != nil {
			n.complete[cache] = true // not allowed to read them: show ids
			return id
		}
		for _, it := range page.Results {
			n.remember(m, d, it)
		}
		n.complete[cache] = page.Next == nil
	}
	if name, ok := m[id]; ok {
		return name
	}
	if !n.complete[cache] {
		var raw json.RawMessage
		if err := n.c.Do(n.ctx, http.MethodGet, client.Path(plural, id), nil, &raw); err == nil {
			n.remember(m, d, raw)
		}
		if name, ok := m[id]; ok {
			return name
		}
		m[id] = id
	}
	return id
}

func (n *names) remember(m map[string]string, d display, raw json.RawMessage) {
	if o, err := decodeObject(raw); err == nil {
		if name := d.show(o); name != "" {
			m[format(o["id"])] = name
		}
	}
}

// column shows the reference in field as the name of the object it points
// to in the collection plural.
func (n *names) column(header, field, plural, nameKey string) column {
	return n.refColumn(header, field, plural, byKey(nameKey))
}

// workspaceColumn shows the workspace reference in field as scope/name.
func (n *names) workspaceColumn(header, field string) column {
	return n.refColumn(header, field, "workspaces", n.workspaceName())
}

func (n *names) refColumn(header, field, plural string, d display) column {
	return column{header: header, key: field, value: func(o object) string {
		v := o[field]
		switch x := v.(type) {
		case json.Number:
			return n.lookup(plural, d, x.String())
		case []any:
			parts := make([]string, 0, len(x))
			for _, e := range x {
				if num, ok := e.(json.Number); ok {
					parts = append(parts, n.lookup(plural, d, num.String()))
				}
			}
			if len(parts) == 0 {
				return "-"
			}
			return strings.Join(parts, ",")
		}
		return format(v)
	}}
}

// refValue is how a reference typed on the command line goes into a
// request body: digits are an id (a JSON number), anything else a name
// (a JSON string), which the API resolves.
func refValue(s string) any {
	if id, err := strconv.ParseInt(s, 10, 64); err == nil && id > 0 {
		return id
	}
	return s
}
