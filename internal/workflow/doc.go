// Package workflow turns workflow templates into workflows and emits the
// Prometheus metrics that templates declare (docs/architecture.md#template-metrics, after Argo's
// template metrics).
//
// # Templates
//
// A template (Template) is written in YAML or JSON and validated when it
// is saved, with errors that name the field ("metrics[1].labels[0].key:
// "bad-key" is not a valid label name"): its structure against the JSON
// Schema docs/workflow-template.schema.json (Schema), which editors use
// too, the rest in code. Two kinds exist: a sequence runs
// its steps in order, each after the previous one succeeded; a matrix
// runs one task for every combination of its matrix values (typically
// host_architecture) and then, optionally, one step that needs all of
// them. Template.Expand turns a template and a run's parameters
// (`kiln workflow start T --param k=v`, substituted into task data as
// {{params.k}}) into a root Workflow work request and its children, which
// store.SubmitWorkflow creates in one transaction; Start does both. The
// store completes the root when its last child ends (success when every
// child succeeded or was skipped) and aborts the children with the root.
//
// # Template metrics
//
// A template and each of its steps may declare counters, gauges and
// histograms with labels and a when-condition. Metrics (a
// prometheus.Collector for the server's internal /metrics) holds their
// series; Recorder feeds it from the store's OnFinish hook. Decisions
// taken where Argo's users were bitten:
//
//   - Counted once. A workflow's metrics, its steps' included, are emitted
//     when its root finishes, with each step in its final state. A step
//     that failed, was retried (by a user, or requeued when its runner was
//     lost) and then succeeded counts once, as Succeeded. The status
//     vocabulary is Argo's (see Phase): Succeeded, Failed, Error, Skipped,
//     Aborted.
//   - Bounded cardinality. Label values may use only bounded variables:
//     statuses, the template name, step names, matrix values. {{duration}}
//     and parameters are refused in labels when the template is saved.
//     kiln adds the labels workspace and template to every series, so two
//     templates never merge or overwrite each other's series. Each metric
//     is capped (MetricsOptions.MaxSeries); observations beyond the cap are
//     counted in kiln_workflow_metrics_dropped_observations_total.
//   - Expiry. A series that no workflow updated for MetricsOptions.TTL
//     (default 24 h) is dropped — histograms too, which Argo never drops.
//     Any update keeps it alive.
//   - Restarts. Nothing is persisted: after a restart counters start again
//     from zero (rate() and increase() treat that as a counter reset),
//     gauges and histograms are empty until workflows finish again, and a
//     workflow that finished while no server ran is never counted. With
//     several server replicas, each counts the workflows it finished; sum
//     over instances.
//   - Names. Declared names are emitted with the prefix kiln_workflow_;
//     counters must end in _total; names starting with metrics_ are kiln's
//     own.
//
// # Trust
//
// Templates are written by workspace contributors; their metric names,
// help and label values reach the internal /metrics only, never the
// public endpoint.
package workflow
