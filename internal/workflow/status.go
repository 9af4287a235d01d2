package workflow

import (
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Phase is the status that template metrics see in {{status}} and
// {{workflow.status}}. kiln's work requests have a status and a result;
// metrics use one Argo-like word instead, so that templates written for
// Argo read the same:
//
//	completed + success → Succeeded
//	completed + failure → Failed   (the task ran and reported failure)
//	completed + error   → Error    (kiln could not run it: lost runner
//	                                after its retries, internal error)
//	completed + skipped → Skipped
//	aborted             → Aborted  (aborted by a user, or because a step
//	                                it depended on did not succeed)
//
// A workflow root is Succeeded when every child succeeded or was skipped,
// Failed otherwise, and Aborted when it was aborted.
type Phase string

// The phases of a finished work request.
const (
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
	PhaseError     Phase = "Error"
	PhaseSkipped   Phase = "Skipped"
	PhaseAborted   Phase = "Aborted"
)

// Phases lists every phase, in documentation order.
var Phases = []Phase{PhaseSucceeded, PhaseFailed, PhaseError, PhaseSkipped, PhaseAborted}

func phaseList() string {
	s := make([]string, len(Phases))
	for i, p := range Phases {
		s[i] = string(p)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func validPhase(s string) bool {
	for _, p := range Phases {
		if string(p) == s {
			return true
		}
	}
	return false
}

// PhaseOf is the phase of a finished work request; ok is false while it
// has not finished.
func PhaseOf(wr *model.WorkRequest) (p Phase, ok bool) {
	switch wr.Status {
	case model.StatusAborted:
		return PhaseAborted, true
	case model.StatusCompleted:
		switch wr.Result {
		case model.ResultSuccess:
			return PhaseSucceeded, true
		case model.ResultFailure:
			return PhaseFailed, true
		case model.ResultSkipped:
			return PhaseSkipped, true
		default:
			return PhaseError, true
		}
	}
	return "", false
}

// DurationOf is what {{duration}} and {{workflow.duration}} hold: for a
// step, the run time kiln counted (the runner's measured duration, else
// completed_at − started_at); for a workflow root, from its creation to its
// end. A request that never started (aborted while it waited) lasted 0.
func DurationOf(wr *model.WorkRequest) time.Duration {
	if wr.ExecutionTime != nil {
		return time.Duration(*wr.ExecutionTime) * time.Microsecond
	}
	if wr.StartedAt == nil || wr.CompletedAt == nil {
		return 0
	}
	return max(0, wr.CompletedAt.Sub(*wr.StartedAt))
}
