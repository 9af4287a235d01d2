// Package api serves kiln's JSON REST API under /api/1.0/ for the
// foundation resources of docs/architecture.md#domain-model: scopes, workspaces (and their members),
// users, identities, groups, tokens, file stores, assets and collections
// (and their items).
//
// Every route is a self-contained http.Handler: it authenticates the
// caller (Authorization: Token <secret>), checks what the caller may do,
// runs one store call and answers JSON. The server registers Routes()
// through its own instrumenting wrapper, so that request metrics are
// labelled by route pattern; Handler() is the same set on a plain mux for
// tests and simple embedding.
//
// Conventions shared by all resources:
//   - Collections are plural with a trailing slash; an item is
//     <collection>/<id>/. POST creates (201, Location, the object), GET lists
//     or shows (200), PATCH changes only the fields given (200), DELETE
//     answers 204.
//   - Lists are pages: {"count", "next", "results"}, keyset-paginated with
//     ?limit= (1..1000, default 100) and ?after=<id>; "next" is the path and
//     query of the following page, or null on the last one. Resource filters
//     (?scope=, ?workspace=, ?category=, …) narrow the list; any other query
//     parameter is refused, so a typo never silently returns everything.
//   - Bodies are strict JSON objects: unknown fields, read-only fields,
//     nulls where no null is allowed and wrong types are refused with 400
//     naming the field. References to other objects take an id (a JSON
//     number) or, where names are unique, a name (a JSON string; workspaces
//     and groups as "scope/name").
//   - Errors are RFC 9457 problem details (application/problem+json) with
//     an extra "field" member when one input field is to blame.
//
// GET statistics/ (statistics.go) answers the figures of package
// statistics — the dashboard's statistics page — as JSON, about what the
// caller sees.
//
// See auth.go for who may do what.
package api
