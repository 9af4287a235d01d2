package model

import (
	"encoding/json"
	"fmt"
	"time"
)

// TaskType says who executes a work request.
type TaskType string

// Task types (docs/architecture.md#domain-model). Worker tasks run on external runners, Server tasks
// inside the server, Signing tasks on signing workers; Internal, Workflow and
// Wait requests are bookkeeping handled by the scheduler itself.
const (
	TaskWorker   TaskType = "Worker"
	TaskServer   TaskType = "Server"
	TaskInternal TaskType = "Internal"
	TaskWorkflow TaskType = "Workflow"
	TaskSigning  TaskType = "Signing"
	TaskWait     TaskType = "Wait"
)

// TaskTypes lists every task type, in documentation order.
var TaskTypes = []TaskType{TaskWorker, TaskServer, TaskInternal, TaskWorkflow, TaskSigning, TaskWait}

// Valid reports whether t is a known task type.
func (t TaskType) Valid() bool {
	for _, k := range TaskTypes {
		if t == k {
			return true
		}
	}
	return false
}

// Status is where a work request is in its life.
type Status string

// Work request statuses. Blocked requests wait for their dependencies;
// pending ones for a worker.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusAborted   Status = "aborted"
	StatusBlocked   Status = "blocked"
)

// Statuses lists every status.
var Statuses = []Status{StatusPending, StatusRunning, StatusCompleted, StatusAborted, StatusBlocked}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, k := range Statuses {
		if s == k {
			return true
		}
	}
	return false
}

// Finished reports whether no further transition is expected.
func (s Status) Finished() bool { return s == StatusCompleted || s == StatusAborted }

// Result is how a completed work request ended.
type Result string

// Work request results; the empty result means not finished yet.
const (
	ResultNone    Result = ""
	ResultSuccess Result = "success"
	ResultFailure Result = "failure"
	ResultError   Result = "error"
	ResultSkipped Result = "skipped"
)

// Valid reports whether r is a known result (including none).
func (r Result) Valid() bool {
	switch r {
	case ResultNone, ResultSuccess, ResultFailure, ResultError, ResultSkipped:
		return true
	}
	return false
}

// RuntimeStatistics is what a runner measured while running a task.
type RuntimeStatistics struct {
	// Duration is the wall-clock time of the task, in seconds.
	Duration float64 `json:"duration"`
	// CPUTime is user+system CPU time of the task's processes, in seconds.
	CPUTime float64 `json:"cpu_time"`
	// Memory is the peak resident set size, in bytes.
	Memory int64 `json:"memory"`
	// DiskSpace is the peak size of the working directory, in bytes.
	DiskSpace int64 `json:"disk_space"`
}

// WorkRequest is one unit of work: a task with its parameters, its place in
// a workflow and what became of it.
type WorkRequest struct {
	ID          int64           `json:"id"`
	TaskType    TaskType        `json:"task_type"`
	TaskName    string          `json:"task_name"`
	WorkspaceID int64           `json:"workspace"`
	Status      Status          `json:"status"`
	Result      Result          `json:"result"`
	Data        json.RawMessage `json:"task_data"`
	Priority    int             `json:"priority"`
	CreatedBy   *int64          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   *time.Time      `json:"started_at"`
	CompletedAt *time.Time      `json:"completed_at"`
	// DueAt is when a running Wait request completes: its start plus its
	// delay, fixed when it starts.
	DueAt    *time.Time `json:"due_at,omitempty"`
	WorkerID *int64     `json:"worker"`
	ParentID *int64     `json:"parent"`
	// WorkflowTemplateID is set on the root of a workflow started from a
	// template.
	WorkflowTemplateID *int64 `json:"workflow_template"`
	// StepName names the step of the parent workflow this request runs.
	StepName     string             `json:"step_name"`
	Dependencies []int64            `json:"dependencies"`
	Retries      int                `json:"retries"`
	MaxRetries   int                `json:"max_retries"`
	Statistics   *RuntimeStatistics `json:"runtime_statistics"`
	// ExecutionTime is the run time kiln counts in task_execution_times,
	// in microseconds, fixed when the request completes.
	ExecutionTime *int64 `json:"execution_time_us"`
	// Output holds what the task reported back (e.g. an error message).
	Output json.RawMessage `json:"output"`
}

// WorkerType says what kind of tasks a worker runs.
type WorkerType string

// Worker types (docs/architecture.md#domain-model). Server workers are executors inside the server
// process (Debusine's celery).
const (
	WorkerExternal WorkerType = "external"
	WorkerServer   WorkerType = "server"
	WorkerSigning  WorkerType = "signing"
)

// Valid reports whether t is a known worker type.
func (t WorkerType) Valid() bool {
	return t == WorkerExternal || t == WorkerServer || t == WorkerSigning
}

// WorkerTypeFor is the worker type that runs tasks of type t, or "" when no
// worker runs them.
func WorkerTypeFor(t TaskType) WorkerType {
	switch t {
	case TaskWorker:
		return WorkerExternal
	case TaskServer:
		return WorkerServer
	case TaskSigning:
		return WorkerSigning
	}
	return ""
}

// Worker is a runner known to the server. It is connected while its
// connection lives (ConnectedAt set) and busy while it holds at least one
// running work request: a runner that runs several at once (its
// Metadata.Capacity) is busy with one as with all of them.
type Worker struct {
	ID          int64          `json:"id"`
	Name        string         `json:"name"`
	WorkerType  WorkerType     `json:"worker_type"`
	Enabled     bool           `json:"enabled"`
	ConnectedAt *time.Time     `json:"connected_at"`
	LastSeenAt  *time.Time     `json:"last_seen_at"`
	Busy        bool           `json:"busy"`
	Metadata    WorkerMetadata `json:"metadata"`
	PoolID      *int64         `json:"worker_pool"`
	CreatedAt   time.Time      `json:"created_at"`
}

// WorkerMetadata is what a runner reports about itself. Keys follow
// Debusine (`system:architectures`, …).
type WorkerMetadata struct {
	Architectures    []string `json:"system:architectures"`
	HostArchitecture string   `json:"system:host_architecture"`
	Backends         []string `json:"system:backends"`
	CPUCount         int      `json:"system:cpu_count"`
	TotalMemory      int64    `json:"system:total_memory"`
	// Concurrent is how many work requests the worker runs at once (the
	// runner's --concurrent); 0, from a runner that does not say, means
	// one. Claims give a worker requests up to it (Capacity), and worker
	// pools read it to know how much backlog an instance absorbs.
	Concurrent int    `json:"system:concurrent,omitempty"`
	Version    string `json:"kiln:version,omitempty"`
}

// MaxConcurrent bounds WorkerMetadata.Concurrent: a runner that asked for
// more would take a large part of the queue on the word of one process.
const MaxConcurrent = 256

// Capacity is how many running work requests the worker may hold at once:
// Concurrent, at least one, at most MaxConcurrent.
func (m WorkerMetadata) Capacity() int {
	return min(max(m.Concurrent, 1), MaxConcurrent)
}

// CheckConcurrent refuses a capacity outside 1..MaxConcurrent, naming the
// setting: field is how the caller calls it (--concurrent,
// system:concurrent).
func CheckConcurrent(field string, n int) error {
	if n < 1 || n > MaxConcurrent {
		return fmt.Errorf("%s: %d is not a number of tasks to run at once: use 1 to %d", field, n, MaxConcurrent)
	}
	return nil
}

// WorkflowTemplate is a recipe for a workflow, with static parameters and
// the metrics it declares.
type WorkflowTemplate struct {
	ID          int64           `json:"id"`
	Name        string          `json:"name"`
	TaskName    string          `json:"task_name"`
	WorkspaceID int64           `json:"workspace"`
	StaticData  json.RawMessage `json:"static_parameters"`
	Priority    int             `json:"priority"`
	Metrics     json.RawMessage `json:"metrics"`
	CreatedAt   time.Time       `json:"created_at"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("72h") or a number of seconds.
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts "72h30m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: use a form such as \"72h\"", s)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("a duration must be a string such as \"72h\" or a number of seconds")
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}
