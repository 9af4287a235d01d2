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

// lookup returns the name of id in the collection plural, or id itself.
func (n *names) lookup(plural, nameKey, id string) string {
	m, ok := n.byPath[plural]
	if !ok {
		m = map[string]string{}
		n.byPath[plural] = m
		var page client.Page[json.RawMessage]
		q := url.Values{"limit": {"1000"}}
		if err := n.c.Do(n.ctx, http.MethodGet, client.WithQuery(client.Path(plural), q), nil, &page); err != nil {
			n.complete[plural] = true // not allowed to read them: show ids
			return id
		}
		for _, it := range page.Results {
			n.remember(m, nameKey, it)
		}
		n.complete[plural] = page.Next == nil
	}
	if name, ok := m[id]; ok {
		return name
	}
	if !n.complete[plural] {
		var raw json.RawMessage
		if err := n.c.Do(n.ctx, http.MethodGet, client.Path(plural, id), nil, &raw); err == nil {
			n.remember(m, nameKey, raw)
		}
		if name, ok := m[id]; ok {
			return name
		}
		m[id] = id
	}
	return id
}

func (n *names) remember(m map[string]string, nameKey string, raw json.RawMessage) {
	if o, err := decodeObject(raw); err == nil {
		if name, _ := o[nameKey].(string); name != "" {
			m[format(o["id"])] = name
		}
	}
}

// column shows the reference in field as the name of the object it points
// to in the collection plural.
func (n *names) column(header, field, plural, nameKey string) column {
	return column{header, func(o object) string {
		v := o[field]
		switch x := v.(type) {
		case json.Number:
			return n.lookup(plural, nameKey, x.String())
		case []any:
			parts := make([]string, 0, len(x))
			for _, e := range x {
				if num, ok := e.(json.Number); ok {
					parts = append(parts, n.lookup(plural, nameKey, num.String()))
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
