package model

import (
	"encoding/json"
	"time"
)

// Worker pool providers: how a pool starts and stops its instances.
const (
	// ProviderProcess runs each instance as a `kiln runner` child process
	// of the server that runs the autoscaler.
	ProviderProcess = "process"
	// ProviderExec runs a user's executable (`EXE create|destroy|list`,
	// JSON on stdin and stdout): the plug-in contract for any cloud.
	ProviderExec = "exec"
)

// Providers lists the pool providers kiln knows.
var Providers = []string{ProviderProcess, ProviderExec}

// WorkerPool is a set of runners that kiln starts and stops on demand
// through a provider, following the queue of work its instances can run.
// The fields up to StartupTimeout and MaxSecondsPerMonth are the pool's
// settings; Status and RuntimeSeconds are kept by kiln.
type WorkerPool struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// Settings are the provider's own (see the provider's documentation);
	// a JSON object.
	Settings json.RawMessage `json:"settings"`
	// Enabled pools start instances; a disabled pool stops its instances
	// as they become idle.
	Enabled bool `json:"enabled"`
	// Architectures and Backends are what the pool's instances offer: the
	// autoscaler starts instances for pending Worker requests whose
	// host_architecture is one of Architectures and whose backend is
	// "auto" or one of Backends.
	Architectures []string `json:"architectures"`
	Backends      []string `json:"backends"`
	// Concurrent is how many requests each instance's runner runs at once
	// (its --concurrent, system:concurrent): the autoscaler counts an
	// instance on its way as room for that many, so one instance starts
	// per Concurrent requests of backlog. 0 means 1.
	Concurrent int `json:"concurrent"`
	// MinIdle instances are kept idle, ready for work.
	MinIdle int `json:"min_idle"`
	// MaxInstances bounds the pool's live instances.
	MaxInstances int `json:"max_instances"`
	// IdleTimeout is how long an instance may stay idle (beyond MinIdle)
	// before it is stopped.
	IdleTimeout Duration `json:"idle_timeout"`
	// StartupTimeout is how long an instance's runner may take to connect
	// (or to reconnect) before the instance is given up and destroyed.
	StartupTimeout Duration `json:"startup_timeout"`
	// MaxSecondsPerMonth is the pool's runtime budget per calendar month
	// (UTC); nil means no budget.
	MaxSecondsPerMonth *int64 `json:"max_seconds_per_month"`

	Status PoolStatus `json:"status"`
	// RuntimeSeconds is the runtime of all the pool's instances: the
	// recorded runtime of the stopped ones plus the age of the live ones.
	RuntimeSeconds float64   `json:"runtime_seconds"`
	CreatedAt      time.Time `json:"created_at"`
}

// PoolStatus is what the autoscaler last recorded about a pool.
type PoolStatus struct {
	// Deleting is set once the pool is asked to go while it still has
	// live instances: they are drained, destroyed, then the pool is
	// deleted.
	Deleting bool `json:"deleting"`
	// Instances counts the live instances by state.
	Instances map[InstanceState]int `json:"instances"`
	// BudgetUsedSeconds is the runtime the pool's instances used in the
	// current calendar month (UTC).
	BudgetUsedSeconds float64 `json:"budget_used_seconds"`
	// Failures counts the provider failures since the last success; from
	// the second one on the pool backs off until BackoffUntil.
	Failures     int        `json:"failures"`
	BackoffUntil *time.Time `json:"backoff_until"`
	// LastError says what failed last (a provider call, an instance that
	// never connected), and when.
	LastError   string     `json:"last_error"`
	LastErrorAt *time.Time `json:"last_error_at"`
	// LastDecision is the autoscaler's last decision about the pool, with
	// its reason ("up: backlog: 4 pending requests …", "hold: budget …").
	LastDecision   string     `json:"last_decision"`
	LastDecisionAt *time.Time `json:"last_decision_at"`
}

// Live counts the live instances.
func (s PoolStatus) Live() int {
	n := 0
	for _, c := range s.Instances {
		n += c
	}
	return n
}

// Offer is what the pool offers while it can start instances: the work
// its runners would take once started.
func (p *WorkerPool) Offer() Offer {
	return Offer{Name: "worker pool " + p.Name, WorkerType: WorkerExternal, Architectures: p.Architectures,
		Backends: p.Backends}
}

// CanStart reports whether the pool may start instances at all: enabled,
// not being deleted, with room for one.
func (p *WorkerPool) CanStart() bool {
	return p.Enabled && !p.Status.Deleting && p.MaxInstances > 0
}

// InstanceState is where a pool instance is in its life. Creating,
// Running, Stopping and Stopped are stored; Idle, Busy and Disconnected
// are how a Running instance's runner is doing, as reads report it.
type InstanceState string

// Instance states.
const (
	// InstanceCreating: the provider is creating it, or its runner has not
	// connected yet.
	InstanceCreating InstanceState = "creating"
	// InstanceRunning: its runner connected once (stored state).
	InstanceRunning InstanceState = "running"
	// InstanceIdle, InstanceBusy: running, its runner connected, with no
	// task or with at least one.
	InstanceIdle InstanceState = "idle"
	InstanceBusy InstanceState = "busy"
	// InstanceDisconnected: running, but its runner is not connected now
	// (it reconnects, or is given up after the pool's startup timeout).
	InstanceDisconnected InstanceState = "disconnected"
	// InstanceStopping: being destroyed; it takes no new work.
	InstanceStopping InstanceState = "stopping"
	// InstanceStopped: gone; its runtime is recorded.
	InstanceStopped InstanceState = "stopped"
)

// LiveInstanceStates are the states a live instance is reported in, in
// the order of its life.
var LiveInstanceStates = []InstanceState{InstanceCreating, InstanceIdle, InstanceBusy, InstanceDisconnected, InstanceStopping}

// PoolInstance is one instance of a worker pool: a machine or process the
// provider runs, with the runner of one of the pool's workers on it. Its
// runtime runs from CreatedAt (kiln asked the provider for it) to
// StoppedAt (the provider destroyed it, or kiln found it gone).
type PoolInstance struct {
	ID int64 `json:"id"`
	// Name is the instance's name for the provider, unique for ever:
	// "<pool>-<id>".
	Name   string `json:"name"`
	PoolID int64  `json:"worker_pool"`
	// Slot numbers the pool's workers: the instance runs the runner of
	// worker "<pool>-<slot>", reused by later instances.
	Slot       int           `json:"slot"`
	WorkerID   int64         `json:"worker"`
	WorkerName string        `json:"worker_name"`
	State      InstanceState `json:"state"`
	// ProviderID is what the provider calls the instance (a cloud's
	// machine id, a process id), as its create answered.
	ProviderID  string     `json:"provider_id"`
	CreatedAt   time.Time  `json:"created_at"`
	ConnectedAt *time.Time `json:"connected_at"`
	// IdleSince is when its runner was last seen with nothing to do.
	IdleSince *time.Time `json:"idle_since"`
	// LastSeenAt is when kiln last knew the instance alive: a lost
	// instance's runtime ends there.
	LastSeenAt time.Time  `json:"last_seen_at"`
	StoppedAt  *time.Time `json:"stopped_at"`
	StopReason string     `json:"stop_reason"`
	// CurrentWorkRequest is a request its runner runs now, if any.
	CurrentWorkRequest *int64 `json:"current_work_request"`
	// Running is how many requests its runner runs now.
	Running        int     `json:"running"`
	RuntimeSeconds float64 `json:"runtime_seconds"`
	// Error, ExitStatus and Stderr are the provider's last failure about
	// this instance (exec: the executable's exit status and standard
	// error).
	Error      string `json:"error"`
	ExitStatus *int   `json:"exit_status"`
	Stderr     string `json:"stderr"`
}

// Live reports whether the instance has not stopped.
func (i *PoolInstance) Live() bool { return i.StoppedAt == nil }
