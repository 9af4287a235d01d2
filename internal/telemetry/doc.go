// Package telemetry holds what the kiln server and runner need to watch
// themselves: parsing the address of the internal metrics listener, the
// listener itself (/metrics and pprof), HTTP instrumentation by route pattern
// (panics included), outgoing-call and incoming-event counters, counts of
// the warnings and errors a process logs, build information, and pushing
// the metrics of short-lived jobs to a Pushgateway (PushRun).
//
// It exists as one package so that the server (docs/architecture.md#server-instrumentation) and the runner
// (docs/architecture.md#runner-metrics) expose the same metric names, follow the same label conventions
// and accept the same --metrics-server syntax, and so that those conventions
// are tested once.
//
// Rules this package follows, and that callers should keep:
//
//   - No globals and never the default Prometheus registry. Every constructor
//     takes the registerer it should use, so tests can build a fresh registry
//     and several servers can live in one process without colliding. The only
//     package-level variables are the build stamps in buildinfo.go, which must
//     be variables because the linker's -X flag can only set variables.
//   - Bounded labels. Request metrics are labelled by the ServeMux pattern
//     that matched (r.Pattern), never by the raw path; methods outside a fixed
//     set become "other"; requests that matched no instrumented route share
//     the single route label "unmatched". A flood of 404s adds no series.
//   - promhttp's conventions: the method label is lower-case and the status
//     label is called "code".
//   - The internal listener has no authentication. It is meant for a private
//     address and must never share the public API port.
//
// Importing net/http/pprof registers its handlers on http.DefaultServeMux as
// a side effect that cannot be avoided. kiln never serves
// http.DefaultServeMux (Serve refuses a nil handler, which would mean it), so
// those registrations stay unreachable; the pprof handlers kiln exposes are
// registered explicitly on the mux built by NewInternalMux.
package telemetry
