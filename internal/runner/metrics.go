package runner

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

// Endpoints of the server the runner calls, the endpoint label of
// kiln_runner_api_requests_total. Each names one kind of request, chosen
// here, never taken from a URL.
const (
	endpointRegister       = "register"        // POST the registration of a new worker
	endpointConnect        = "connect"         // the WebSocket (101 when it opens)
	endpointCreateArtifact = "create_artifact" // POST an artifact's declaration
	endpointUploadFile     = "upload_file"     // PUT a file's content
	endpointOther          = "other"           // anything not marked with one of the above
)

// codeError is the code label of a request that got no response at all
// (refused, reset, timed out).
const codeError = "error"

// durationBuckets span a noop (milliseconds) to a long build (hours).
var durationBuckets = []float64{.1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400}

// stageBuckets span a stage of a noop (milliseconds) to a build's script
// (hours), like GitLab Runner's gitlab_runner_job_stage_duration_seconds
// with the small end added.
var stageBuckets = []float64{.01, .05, .1, .5, 1, 3, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 14400}

// apiBuckets span a heartbeat-sized request to an artifact upload, which
// is timed until the server answers, its body included.
var apiBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// metrics are the runner's figures on its --metrics-server listener (SPEC
// §4), kept in a private registry next to the Go and process collectors
// and the build info. Counters and histograms are ordinary vectors;
// gauges of the current state (jobs by stage and state, the connection)
// are computed at scrape time from the runner itself by stateCollector, so
// a label set that no longer applies vanishes on its own.
//
// The names follow GitLab Runner's where it has one (jobs, concurrent,
// limit, failed_jobs_total{failure_reason}, errors_total{level},
// job_stage_duration_seconds), under kiln_runner_ and with Prometheus'
// conventions: _total counters, seconds.
//
// Labels are bounded: task names are the built-in worker tasks (others,
// which this runner cannot run anyway, are "other"), results, stages,
// states, failure reasons, endpoints and error kinds are enumerations, and
// codes are the HTTP status codes the server answers.
type metrics struct {
	reg         *prometheus.Registry
	concurrent  prometheus.Gauge
	limit       prometheus.Gauge
	started     *prometheus.CounterVec
	finished    *prometheus.CounterVec
	failed      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	stages      *prometheus.HistogramVec
	queueWait   *prometheus.HistogramVec
	errors      *prometheus.CounterVec
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
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
		concurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_runner_concurrent",
			Help: "Tasks this runner process may run at once, its --concurrent (GitLab Runner's concurrent setting).",
		}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_runner_limit",
			Help: "Tasks the runner's worker accepts at once (GitLab Runner's limit setting); kiln_runner_jobs divided by it is the runner's saturation.",
		}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_jobs_started_total",
			Help: "Work requests the runner received and started, by task.",
		}, []string{"task"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_jobs_finished_total",
			Help: "Work requests the runner finished, by task and result (cancelled and handed_back for those it stopped).",
		}, []string{"task", "result"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_failed_jobs_total",
			Help: "Work requests that did not succeed, by task and failure_reason (script_failure, job_execution_timeout, job_canceled, runner_system_failure, upload_failure).",
		}, []string{"task", "failure_reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_duration_seconds",
			Help:    "Wall-clock duration of the work requests the runner ran, by task.",
			Buckets: durationBuckets,
		}, []string{"task"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_stage_duration_seconds",
			Help:    "Time the runner's jobs spent in each stage (preparing, running_script, uploading_artifacts, finishing).",
			Buckets: stageBuckets,
		}, []string{"stage"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_job_queue_wait_seconds",
			Help:    "Time the work requests this runner received waited between their creation and their assignment, by task.",
			Buckets: []float64{.1, .5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
		}, []string{"task"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_server_errors_total",
			Help: "Failed exchanges with the server, by kind (connect, heartbeat, protocol, upload, result).",
		}, []string{"kind"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_runner_api_requests_total",
			Help: "HTTP requests the runner made to the server, by endpoint (register, connect, create_artifact, upload_file) and status code (error: no response).",
		}, []string{"endpoint", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_runner_api_request_duration_seconds",
			Help:    "Time until the server answered the runner's HTTP requests (request body included), or until they failed, by endpoint.",
			Buckets: apiBuckets,
		}, []string{"endpoint"}),
	}
	for _, c := range []prometheus.Collector{m.concurrent, m.limit, m.started, m.finished, m.failed, m.duration, m.stages,
		m.queueWait, m.errors, m.apiRequests, m.apiDuration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.logs, err = telemetry.NewLogMetrics(reg, "kiln_runner_errors_total",
		"Warnings and errors the runner logged, by level (warning, error), whatever --log-level lets through."); err != nil {
		return nil, err
	}
	m.setCapacity(1) // until the runner's configuration says otherwise
	// Series that exist from the start, so that rate() and ratios work
	// from the first event rather than the second.
	for _, k := range []string{errConnect, errHeartbeat, errProtocol, errUpload, errResult} {
		m.errors.WithLabelValues(k)
	}
	for _, task := range tasks.Known()[model.TaskWorker] {
		m.started.WithLabelValues(task)
		for _, res := range []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError} {
			m.finished.WithLabelValues(task, string(res))
		}
		for _, f := range tasks.Failures() {
			m.failed.WithLabelValues(task, string(f))
		}
		m.duration.WithLabelValues(task)
		m.queueWait.WithLabelValues(task)
	}
	for _, st := range []string{StagePreparing, StageRunningScript, StageUploadingArtifacts, StageFinishing} {
		m.stages.WithLabelValues(st)
	}
	// the duration of every endpoint from the start, so that the first
	// requests count in rate() and in the quantiles
	for _, e := range []string{endpointRegister, endpointConnect, endpointCreateArtifact, endpointUploadFile} {
		m.apiDuration.WithLabelValues(e)
	}
	return m, nil
}

// outcomeFamilies are the families that say what a run did: the ones a
// one-shot runner pushes to the Pushgateway when it exits. Left out on
// purpose: the live state (kiln_runner_jobs, connection_state,
// heartbeat_age_seconds), which would stay frozen in the gateway and show
// a long-gone runner as connected; the configuration (concurrent, limit)
// and build info, which describe a process, not a run; the Go and process
// collectors of a process that is gone.
var outcomeFamilies = map[string]bool{
	"kiln_runner_jobs_started_total":           true,
	"kiln_runner_jobs_finished_total":          true,
	"kiln_runner_failed_jobs_total":            true,
	"kiln_runner_job_duration_seconds":         true,
	"kiln_runner_job_stage_duration_seconds":   true,
	"kiln_runner_job_queue_wait_seconds":       true,
	"kiln_runner_server_errors_total":          true,
	"kiln_runner_api_requests_total":           true,
	"kiln_runner_api_request_duration_seconds": true,
	"kiln_runner_errors_total":                 true,
}

// outcomes gathers outcomeFamilies.
func (m *metrics) outcomes() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := m.reg.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if outcomeFamilies[mf.GetName()] {
				out = append(out, mf)
			}
		}
		return out, err
	})
}

// setCapacity records how many tasks the runner runs at once (its
// Concurrent setting) in kiln_runner_concurrent and kiln_runner_limit:
// one process, one worker, so both say the same, and saturation alerts
// (kiln_runner_jobs ÷ kiln_runner_limit) hold whatever it is.
func (m *metrics) setCapacity(n int) {
	m.concurrent.Set(float64(n))
	m.limit.Set(float64(n))
}

// taskLabel bounds the task label to the worker tasks kiln knows: the name
// comes from whoever submitted the request.
func taskLabel(name string) string {
	if slices.Contains(tasks.Known()[model.TaskWorker], name) {
		return name
	}
	return "other"
}

// jobDone counts a job that ended and observes its duration. reason is
// its failure reason, "" when it succeeded or was handed back (it goes
// back to the queue, it did not fail).
func (m *metrics) jobDone(task, result string, reason tasks.Failure, seconds float64) {
	m.finished.WithLabelValues(taskLabel(task), result).Inc()
	m.duration.WithLabelValues(taskLabel(task)).Observe(seconds)
	if reason != "" {
		m.failed.WithLabelValues(taskLabel(task), string(reason)).Inc()
	}
}

// stageDone observes the time a job spent in a stage it leaves.
func (m *metrics) stageDone(stage string, d time.Duration) {
	if stage != "" {
		m.stages.WithLabelValues(stage).Observe(d.Seconds())
	}
}

// jobReceived counts a job started and observes how long its request
// waited in the queue, from its creation to its assignment (started_at,
// which the server sets when it claims the request for this runner). A
// request without started_at, from a server that does not send it, is
// measured up to its arrival here.
func (m *metrics) jobReceived(wr *model.WorkRequest, now time.Time) {
	m.started.WithLabelValues(taskLabel(wr.TaskName)).Inc()
	if wr.CreatedAt.IsZero() {
		return
	}
	end := now
	if wr.StartedAt != nil {
		end = *wr.StartedAt
	}
	m.queueWait.WithLabelValues(taskLabel(wr.TaskName)).Observe(max(0, end.Sub(wr.CreatedAt).Seconds()))
}

// endpointKey carries the endpoint label of a request in its context.
type endpointKey struct{}

// withEndpoint marks the requests made with ctx as calls to endpoint.
func withEndpoint(ctx context.Context, endpoint string) context.Context {
	return context.WithValue(ctx, endpointKey{}, endpoint)
}

// apiTransport counts and times every request to the server by the
// endpoint its context names and the status code of the answer.
type apiTransport struct {
	m    *metrics
	next http.RoundTripper
}

func (t apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	endpoint, _ := req.Context().Value(endpointKey{}).(string)
	if endpoint == "" {
		endpoint = endpointOther
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	code := codeError
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.m.apiRequests.WithLabelValues(endpoint, code).Inc()
	t.m.apiDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	return resp, err
}

// apiClient returns a copy of c whose requests are counted and timed.
func (m *metrics) apiClient(c *http.Client) *http.Client {
	out := *c
	next := out.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out.Transport = apiTransport{m: m, next: next}
	return &out
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
// samples outside it: each job the runner holds counts once, under its
// stage and state.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	type key struct{ stage, state string }
	jobs := map[key]int{}
	r.mu.Lock()
	conn, heard := r.conn, r.lastHeard
	for _, j := range r.jobs {
		jobs[key{j.stage, j.state()}]++
	}
	r.mu.Unlock()

	for k, n := range jobs {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), k.stage, k.state)
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
