package api

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/store"
)

// page is the envelope of every list answer. Count is the number of
// results in this page; Next is the path and query of the following page,
// or null when this page is the last. Pages are keyset-paginated on id, so
// walking a list never shows an object twice, however many are created or
// deleted meanwhile.
type page[T any] struct {
	Count   int     `json:"count"`
	Next    *string `json:"next"`
	Results []T     `json:"results"`
}

// filterFunc checks one query filter and turns its value into what the
// store compares (ids for references).
type filterFunc func(c *call, param, value string) (string, error)

func textFilter(_ *call, _, v string) (string, error) { return v, nil }

func boolFilter(_ *call, param, v string) (string, error) {
	if v != "true" && v != "false" {
		return "", invalidField(param, "%q must be true or false, not %q", param, v)
	}
	return v, nil
}

// refFilter resolves a reference given in a query string to an id.
func refFilter[T any](find func(c *call, field string, r ref) (*T, error), id func(*T) int64) filterFunc {
	return func(c *call, param, v string) (string, error) {
		obj, err := find(c, param, parseRef(v))
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(id(obj), 10), nil
	}
}

// idFilter takes a positive integer id as is.
func idFilter(_ *call, param, v string) (string, error) {
	if id, err := strconv.ParseInt(v, 10, 64); err != nil || id <= 0 {
		return "", invalidField(param, "%q must be a numeric id, not %q", param, v)
	}
	return v, nil
}

// listQuery reads ?limit=, ?after= and the resource's filters. Unknown
// parameters are refused: a misspelt filter must not return everything.
func (c *call) listQuery(filters map[string]filterFunc) (store.Query, error) {
	q := store.Query{Limit: store.DefaultPageSize, Viewer: c.viewer(), Filter: map[string]string{}}
	params := c.r.URL.Query()
	for _, k := range sortedKeys(params) {
		vals := params[k]
		if len(vals) != 1 {
			return q, invalidField(k, "give the query parameter %q once", k)
		}
		v := vals[0]
		switch f, ok := filters[k]; {
		case k == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxPageSize {
				return q, invalidField(k, "limit must be an integer from 1 to %d, not %q", store.MaxPageSize, v)
			}
			q.Limit = n
		case k == "after":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return q, invalidField(k, "after must be the id of the last object of the previous page, not %q", v)
			}
			q.After = n
		case ok:
			val, err := f(c, k, v)
			if err != nil {
				return q, err
			}
			q.Filter[k] = val
		default:
			return q, invalidField(k, "unknown query parameter %q; this list accepts %s", k, strings.Join(append([]string{"limit", "after"}, sortedKeys(filters)...), ", "))
		}
	}
	return q, nil
}

// noQuery refuses query parameters on routes that take none.
func (c *call) noQuery() error {
	for k := range c.r.URL.Query() {
		return invalidField(k, "unknown query parameter %q; only lists take query parameters", k)
	}
	return nil
}

// replyPage answers one page. items is what the store returned for q;
// keep, when not nil, drops objects the caller may not see after all (the
// page may then be short, but next still follows the store's last id).
func replyPage[T any](c *call, q store.Query, items []T, id func(*T) int64, keep func(*call, *T) bool) error {
	out := page[T]{Results: make([]T, 0, len(items))}
	for i := range items {
		if keep == nil || keep(c, &items[i]) {
			out.Results = append(out.Results, items[i])
		}
	}
	out.Count = len(out.Results)
	if len(items) == q.Limit && len(items) > 0 {
		params := c.r.URL.Query()
		params.Set("after", strconv.FormatInt(id(&items[len(items)-1]), 10))
		next := c.r.URL.Path + "?" + params.Encode()
		out.Next = &next
	}
	return c.reply(http.StatusOK, out)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
