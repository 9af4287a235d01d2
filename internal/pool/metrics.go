package pool

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/model"
)

// Directions of a scale decision (kiln_pool_scale_decisions_total).
const (
	Up   = "up"   // an instance started
	Down = "down" // an instance stopped
	Hold = "hold" // the autoscaler wanted an instance and did not start it
)

// Reasons of scale decisions: a small fixed set, so that the reason label
// stays bounded.
const (
	ReasonBacklog        = "backlog"         // up: pending work no idle worker can take
	ReasonMinIdle        = "min_idle"        // up: fewer idle instances than min_idle
	ReasonIdleTimeout    = "idle_timeout"    // down: idle longer than idle_timeout
	ReasonStartupTimeout = "startup_timeout" // down: its runner never connected
	ReasonDisconnected   = "disconnected"    // down: its runner stayed away longer than startup_timeout
	ReasonMaxInstances   = "max_instances"   // down: above a lowered max_instances; hold: at max_instances
	ReasonDrain          = "drain"           // down: the pool is being deleted
	ReasonDisabled       = "disabled"        // down: the pool is disabled
	ReasonCreateFailed   = "create_failed"   // down: the provider's create failed
	ReasonLost           = "lost"            // down: the provider no longer has it
	ReasonOrphan         = "orphan"          // down: the provider has it, kiln does not
	ReasonShutdown       = "shutdown"        // down: its server stopped (process pools)
	ReasonBudget         = "budget"          // hold: the month's runtime budget would be exceeded
	ReasonBackoff        = "backoff"         // hold: the pool backs off after provider failures
)

// metrics are the autoscaler's figures on the server's internal listener,
// after GitLab Runner's autoscaler (machine states, creations and
// removals, creation time): every series is labelled with its worker_pool,
// and only the replica that acts as the farm's autoscaler reports the
// state gauges (so that summing across replicas counts each instance
// once). Counters and the histogram are ordinary vectors; the gauges of
// current state are computed from the last pass at scrape time, so that
// deleted pools vanish on their own.
type metrics struct {
	creations   *prometheus.CounterVec
	destroys    *prometheus.CounterVec
	createTime  *prometheus.HistogramVec
	decisions   *prometheus.CounterVec
	reconciles  *prometheus.CounterVec
	leader      prometheus.Gauge
	mu          sync.Mutex
	state       map[string]poolGauges // by pool name, from the last pass
	stateDesc   *prometheus.Desc
	maxDesc     *prometheus.Desc
	usedDesc    *prometheus.Desc
	budgetDesc  *prometheus.Desc
	initialized map[string]bool
}

// poolGauges are one pool's current figures.
type poolGauges struct {
	instances map[model.InstanceState]int
	max       int
	used      float64
	budget    *int64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	pool := []string{"worker_pool"}
	m := &metrics{
		creations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pool_instance_creations_total",
			Help: "Instances the autoscaler created, by worker_pool and result: success (its runner connected), error (the provider's create failed), timeout (its runner did not connect within startup_timeout).",
		}, []string{"worker_pool", "result"}),
		destroys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pool_instance_destructions_total",
			Help: "Instances the autoscaler destroyed through their provider, by worker_pool and result (success, error).",
		}, []string{"worker_pool", "result"}),
		createTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_pool_instance_creation_duration_seconds",
			Help:    "Time from the autoscaler asking the provider for an instance to the instance's runner connecting, by worker_pool.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200},
		}, pool),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pool_scale_decisions_total",
			Help: "Scale decisions of the autoscaler, by worker_pool, direction (up: one instance started; down: one stopped; hold: a pass that wanted an instance and did not start it) and reason.",
		}, []string{"worker_pool", "direction", "reason"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_pool_reconciliations_total",
			Help: "Comparisons of a pool's instances with its provider's list, by worker_pool and result (success, error).",
		}, []string{"worker_pool", "result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_pool_autoscaler_leader",
			Help: "1 while this server acts as the farm's worker pool autoscaler (it holds the lock), else 0.",
		}),
		state: map[string]poolGauges{}, initialized: map[string]bool{},
		stateDesc: prometheus.NewDesc("kiln_pool_instances",
			"Live instances of each worker pool by state (creating, idle, busy, disconnected, stopping); reported by the autoscaling server only.",
			[]string{"worker_pool", "state"}, nil),
		maxDesc: prometheus.NewDesc("kiln_pool_max_instances",
			"The max_instances setting of each worker pool; reported by the autoscaling server only.", pool, nil),
		usedDesc: prometheus.NewDesc("kiln_pool_budget_used_seconds",
			"Runtime the instances of each worker pool used in the current calendar month (UTC), in seconds; reported by the autoscaling server only.", pool, nil),
		budgetDesc: prometheus.NewDesc("kiln_pool_budget_seconds",
			"The monthly runtime budget (max_seconds_per_month) of each worker pool that has one, in seconds; reported by the autoscaling server only.", pool, nil),
	}
	if reg != nil {
		cs := []prometheus.Collector{m.creations, m.destroys, m.createTime, m.decisions, m.reconciles, m.leader, m}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				return nil, err
			}
		}
	}
	return m, nil
}

// initPool makes the counters of pool exist at 0, so that rate() and
// alerts work from the first event rather than the second.
func (m *metrics) initPool(pool string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized[pool] {
		return
	}
	m.initialized[pool] = true
	for _, r := range []string{"success", "error", "timeout"} {
		m.creations.WithLabelValues(pool, r)
	}
	for _, r := range []string{"success", "error"} {
		m.destroys.WithLabelValues(pool, r)
		m.reconciles.WithLabelValues(pool, r)
	}
	m.createTime.WithLabelValues(pool)
	m.decisions.WithLabelValues(pool, Up, ReasonBacklog)
	m.decisions.WithLabelValues(pool, Down, ReasonIdleTimeout)
}

// setState replaces the current figures with those of the last pass; nil
// clears them (this server stopped acting).
func (m *metrics) setState(s map[string]poolGauges) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s == nil {
		s = map[string]poolGauges{}
	}
	m.state = s
}

// Describe sends the descriptions of the state gauges.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.stateDesc
	ch <- m.maxDesc
	ch <- m.usedDesc
	ch <- m.budgetDesc
}

// Collect sends the state gauges of the last pass.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(m.state)) {
		g := m.state[name]
		for _, st := range model.LiveInstanceStates {
			ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, float64(g.instances[st]), name, string(st))
		}
		ch <- prometheus.MustNewConstMetric(m.maxDesc, prometheus.GaugeValue, float64(g.max), name)
		ch <- prometheus.MustNewConstMetric(m.usedDesc, prometheus.GaugeValue, g.used, name)
		if g.budget != nil {
			ch <- prometheus.MustNewConstMetric(m.budgetDesc, prometheus.GaugeValue, float64(*g.budget), name)
		}
	}
}
