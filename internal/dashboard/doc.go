// Package dashboard serves kiln's web dashboard on the server's public
// port: the farm overview, the drill-down from scopes to workspaces,
// workflows and work requests with their logs and artifacts, the workers
// and pools, and the statistics per task name, scope and workspace
// (docs/architecture.md#dashboard). It answers the questions whose label
// space Prometheus cannot hold — which task in which workspace fails
// most, and show me its last log.
//
// Conventions every page follows:
//   - Who sees what is the API's decision, never a second one: pages ask
//     the store with api.ViewerOf(principal), the viewer every API route
//     uses; file downloads and logs are the API's own handlers, run as the
//     signed-in principal (api.ServeAs). Anonymous visitors see public
//     workspaces and what is in them; workers are shown to signed-in users,
//     as the API shows them. Whatever a visitor may not see answers
//     exactly as what does not exist: 404, and absent from lists, counts
//     and charts.
//   - Pages are server-rendered with html/template, which escapes every
//     name, log line and task datum; the only script (static/log.js, which
//     follows a running task's log) is a file, inserts text nodes only,
//     and runs under a Content-Security-Policy without 'unsafe-inline'
//     that every answer carries. Charts are SVG drawn on the server
//     (charts.go): no chart script, nothing to load from elsewhere.
//   - Assets are embedded in the binary (no CDN: a farm may have no
//     internet) and served under a name that carries their content hash,
//     so browsers cache them for good and never keep a stale one.
//   - A visitor signs in with an API token through a form; the session is a
//     row in the database (store.OpenSession), so every replica knows it
//     and signing out ends it for good. Its cookie is HttpOnly and
//     SameSite=Strict; forms carry a CSRF secret and are also refused when
//     the browser says they come from another origin
//     (http.CrossOriginProtection).
//   - Lists are keyset pages on indexed columns (store.Browse) and figures
//     come from running totals and rollups (package statistics), so no
//     page reads more rows as the farm grows.
//   - Times are shown in UTC; durations are rounded for reading, exact in
//     the title attribute.
package dashboard
