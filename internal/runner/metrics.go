package runner

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// Stages of a job the runner holds, the stage label of kiln_runner_jobs.
// They follow the job from the task message to the server's
// acknowledgement of its result, so that a runner stuck in one of them
// shows where.
const (
	// StagePreparing: the task arrived; its working directory and log are
	// being created.
	StagePreparing = "preparing"
	// StageRunningScript: the task runs (a command task's script).
	StageRunningScript = "running_script"
	// StageUploadingArtifacts: declared outputs and the log are uploaded.
	StageUploadingArtifacts = "uploading_artifacts"
	// StageFinishing: the task is over; its result (or hand-back) waits to
	// be sent and acknowledged by the server.
	StageFinishing = "finishing"
)

// States of a job, the state label of kiln_runner_jobs.
const (
	// StateRunning: the job goes its normal way.
	StateRunning = "running"
	// StateHandingBack: the runner shuts down and gives the request back to
	// the queue unfinished.
	StateHandingBack = "handing_back"
	// StateCancelled: the server cancelled the request or gave it to
	// another runner; it is being stopped and nothing will be reported.
	StateCancelled = "cancelled"
)

// Connection states, the state label of kiln_runner_connection_state.
const (
	ConnConnecting   = "connecting"   // dialling, or waiting for the server's welcome
	ConnConnected    = "connected"    // welcomed; heartbeats flow
	ConnDisconnected = "disconnected" // waiting to reconnect (or stopped)
)

var connStates = []string{ConnConnecting, ConnConnected, ConnDisconnected}

// Kinds of failed exchanges with the server, the kind label of
// kiln_runner_server_errors_total.
const (
	errConnect   = "connect"   // the connection could not be opened or was lost
	errHeartbeat = "heartbeat" // the server stayed silent past the heartbeat timeout
	errProtocol  = "protocol"  // a message the runner could not understand
	errUpload    = "upload"    // an artifact upload attempt failed (and was retried)
	errResult    = "result"    // the server could not record a result (and it is resent)
)

// Results beyond model.Result in kiln_runner_jobs_finished_total: jobs that
// ended without a result of their own.
const (
	resultCancelled  = "cancelled"
	resultHandedBack = "handed_back"
)

// durationBuckets span a noop (milliseconds) to a long build (hours).
var durationBuckets = []float64{.1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400}

// metrics are the runner's figures on its --metrics-server listener (SPEC
// §4), kept in a private registry next to the Go and process collectors
// and the version info. Counters and histograms are ordinary vectors;
// gauges of the current state (jobs by stage and state, the connection)
// are computed at scrape time from the runner itself by stateCollector, so
// a label set that no longer applies vanishes on its own.
//
// Labels are bounded: task names are the built-in worker tasks (others,
// which this runner cannot run anyway, are "other"), results, stages,
// states and error kinds are enumerations.
type metrics struct {
	reg       *prometheus.Registry
	finished  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	queueWait *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	outgoing  *telemetry.OutgoingMetrics
	// logs counts the warnings and errors the runner logs
	// (kiln_runner_errors_total{level}, GitLab Runner's
	// gitlab_runner_errors_total).
	logs *telemetry.LogMetrics
}

func newMetrics() (*metrics, error) {
	reg := telemetry.NewRegistry()
	if err := telemetry.RegisterBuildInfo(reg, telemetry.ReadBuildInfo()); err != nil {
		return nil, err
	}
	m := &metrics{
		reg: reg,
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_jobs_finished_total",
			Help: "Work requests the runner finished, by task and result (cancelled and handed_back for those it stopped).",
		}, []string{"task", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_duration_seconds",
			Help:    "Wall-clock duration of the work requests the runner ran, by task.",
			Buckets: durationBuckets,
		}, []string{"task"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_queue_wait_seconds",
			Help:    "Time the work requests this runner received waited between their creation and their assignment, by task.",
			Buckets: []float64{.1, .5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}, []string{"task"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_server_errors_total",
			Help: "Failed exchanges with the server, by kind (connect, heartbeat, protocol, upload, result).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.finished, m.duration, m.queueWait, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	out, err := telemetry.NewOutgoingMetrics(reg, "kiln_runner")
	if err != nil {
		return nil, err
	}
	m.outgoing = out
	if m.logs, err = telemetry.NewLogMetrics(reg, "kiln_runner_errors_total",
		"Warnings and errors the runner logged, by level (warning, error), whatever --log-level lets through."); err != nil {
		return nil, err
	}
	// Series that exist from the start, so that rate() and ratios work
	// from the first event rather than the second.
	for _, k := range []string{errConnect, errHeartbeat, errProtocol, errUpload, errResult} {
		m.errors.WithLabelValues(k)
	}
	for _, task := range tasks.Known()[model.TaskWorker] {
		for _, res := range []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError} {
			m.finished.WithLabelValues(task, string(res))
		}
		m.duration.WithLabelValues(task)
		m.queueWait.WithLabelValues(task)
	}
	return m, nil
}

// taskLabel bounds the task label to the worker tasks kiln knows: the name
// comes from whoever submitted the request.
func taskLabel(name string) string {
	if slices.Contains(tasks.Known()[model.TaskWorker], name) {
		return name
	}
	return "other"
}

// jobDone counts a job that ended and observes its duration.
func (m *metrics) jobDone(task, result string, seconds float64) {
	m.finished.WithLabelValues(taskLabel(task), result).Inc()
	m.duration.WithLabelValues(taskLabel(task)).Observe(seconds)
}

// jobReceived observes how long a request waited in the queue, from its
// creation to its assignment (started_at, which the server sets when it
// claims the request for this runner). A request without started_at, from
// a server that does not send it, is measured up to its arrival here.
func (m *metrics) jobReceived(wr *model.WorkRequest, now time.Time) {
	if wr.CreatedAt.IsZero() {
		return
	}
	end := now
	if wr.StartedAt != nil {
		end = *wr.StartedAt
	}
	m.queueWait.WithLabelValues(taskLabel(wr.TaskName)).Observe(max(0, end.Sub(wr.CreatedAt).Seconds()))
}

// stateCollector computes the runner's current-state gauges at scrape time.
type stateCollector struct{ r *Runner }

var (
	jobsDesc = prometheus.NewDesc("kiln_runner_jobs",
		"Work requests the runner holds, by stage (preparing, running_script, uploading_artifacts, finishing) and state (running, handing_back, cancelled).",
		[]string{"stage", "state"}, nil)
	connDesc = prometheus.NewDesc("kiln_runner_connection_state",
		"State of the runner's connection to its server: 1 for the current state (connecting, connected, disconnected), 0 for the others.",
		[]string{"state"}, nil)
	heardDesc = prometheus.NewDesc("kiln_runner_heartbeat_age_seconds",
		"Seconds since the runner last heard from its server (any message, heartbeats included); absent until it first connected.",
		nil, nil)
)

// Describe sends the descriptors of the state gauges.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- connDesc
	ch <- heardDesc
}

// Collect reads the runner's state under its lock, then builds the
// samples outside it.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	r.mu.Lock()
	conn, heard := r.conn, r.lastHeard
	var stage, state string
	if j := r.job; j != nil {
		stage, state = j.stage, j.state()
	}
	r.mu.Unlock()

	if stage != "" {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, 1, stage, state)
	}
	if conn == "" {
		conn = ConnDisconnected
	}
	for _, s := range connStates {
		v := 0.0
		if s == conn {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(connDesc, prometheus.GaugeValue, v, s)
	}
	if !heard.IsZero() {
		ch <- prometheus.MustNewConstMetric(heardDesc, prometheus.GaugeValue, time.Since(heard).Seconds())
	}
}
