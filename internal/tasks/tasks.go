// Package tasks holds kiln's built-in tasks: what a work request actually
// does once the scheduler has given it to someone.
//
//   - Worker tasks run on runners: noop and command (a shell script in a
//     fresh working directory, with a timeout, a streamed log and declared
//     output files uploaded as artifacts).
//   - Server tasks run inside the server, on its in-process server worker:
//     add-to-collection.
//   - Wait tasks are timers kept by the scheduler: they carry a delay and do
//     nothing else.
//
// The package also validates task data when a request is submitted, so that
// a typo in a script's timeout is refused by the API with a clear message
// instead of failing minutes later on a runner. Keeping validation next to
// execution means the two cannot disagree about what a task accepts.
//
// Runtime statistics (docs/architecture.md#how-work-runs) are measured here, around the task, because
// only the code that starts the processes can read their rusage.
package tasks

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Names of the built-in tasks.
const (
	Noop            = "noop"
	Command         = "command"
	AddToCollection = "add-to-collection"
	Delay           = "delay"
)

// DebugLogsCategory is the artifact category of a task's log, uploaded at
// the end of every command task.
const DebugLogsCategory = "kiln:work-request-debug-logs"

// LogFileName is the name of the log inside that artifact.
const LogFileName = "cmd-output.log"

// Error is a problem with a request's task data, naming the field at fault;
// the API answers it with 400.
type Error struct {
	Field   string
	Message string
}

// Error names the field and the problem.
func (e *Error) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func dataErr(format string, args ...any) error {
	return &Error{Field: "task_data", Message: fmt.Sprintf(format, args...)}
}

// Known returns, by task type, the task names kiln can run, sorted.
func Known() map[model.TaskType][]string {
	return map[model.TaskType][]string{
		model.TaskWorker: {Command, Noop},
		model.TaskServer: {AddToCollection},
		model.TaskWait:   {Delay},
	}
}

// Validate checks a work request before it is submitted: the task exists
// for its type and its data is well-formed. It is called by the API; the
// store checks only what every request needs (a host_architecture for
// Worker tasks), since it knows nothing of individual tasks.
func Validate(wr *model.WorkRequest) error {
	switch wr.TaskType {
	case model.TaskWorker:
		switch wr.TaskName {
		case Noop:
			return nil
		case Command:
			_, err := ParseCommand(wr.Data)
			return err
		}
	case model.TaskServer:
		if wr.TaskName == AddToCollection {
			_, err := parseAddToCollection(wr.Data)
			return err
		}
	case model.TaskWait:
		if wr.TaskName == Delay {
			_, err := ParseDelay(wr.Data)
			return err
		}
	case model.TaskSigning:
		return &Error{Field: "task_type", Message: "no signing tasks exist yet"}
	case model.TaskWorkflow, model.TaskInternal:
		return &Error{Field: "task_type", Message: fmt.Sprintf("%s requests are created by kiln itself; start a workflow through workflows/ instead", wr.TaskType)}
	default:
		return &Error{Field: "task_type", Message: fmt.Sprintf("%q is not a task type", wr.TaskType)}
	}
	names := Known()[wr.TaskType]
	return &Error{Field: "task_name", Message: fmt.Sprintf("%q is not a %s task: use one of %s", wr.TaskName, wr.TaskType, strings.Join(names, ", "))}
}

// strictDecode decodes task data, refusing unknown keys: a misspelt key
// ("timout") that is silently ignored is the classic "my setting does not
// work".
func strictDecode(data json.RawMessage, v any, allowed ...string) error {
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return dataErr("must be a JSON object")
	}
	ok := map[string]bool{"host_architecture": true, "backend": true}
	for _, a := range allowed {
		ok[a] = true
	}
	var unknown []string
	for k := range m {
		if !ok[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		keys := make([]string, 0, len(ok))
		for k := range ok {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return dataErr("unknown key %q (known keys: %s)", unknown[0], strings.Join(keys, ", "))
	}
	if err := json.Unmarshal(data, v); err != nil {
		return dataErr("%v", err)
	}
	return nil
}

// DelayData is the data of a Wait/delay request.
type DelayData struct {
	// Delay is how long to wait once the request is pending, in seconds or
	// as a Go duration string.
	Delay model.Duration `json:"delay"`
}

// MaxDelay bounds a Wait task, so that a typo (seconds taken for
// milliseconds) does not park a request for years.
const MaxDelay = 30 * 24 * time.Hour

// ParseDelay reads and checks a Wait task's data.
func ParseDelay(data json.RawMessage) (DelayData, error) {
	var d DelayData
	if err := strictDecode(data, &d, "delay"); err != nil {
		return d, err
	}
	if d.Delay < 0 || time.Duration(d.Delay) > MaxDelay {
		return d, dataErr("delay must be between 0 and %s", MaxDelay)
	}
	return d, nil
}
