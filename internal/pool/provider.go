package pool

import (
	"context"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// Provider starts and stops the instances of worker pools: the one thing
// that differs between a pool of local processes and a pool of cloud
// machines. The autoscaler calls it from its own goroutines, never two
// calls about one instance at a time, each under a context that bounds
// it; a Provider must be safe for concurrent calls about different
// instances and pools.
type Provider interface {
	// Create starts an instance whose runner connects to req.ServerURL
	// with req.Token as worker req.Instance.Worker. It returns once the
	// provider has accepted the instance (a machine requested, a process
	// started), not once the runner connected: the autoscaler waits for
	// that, up to the pool's startup timeout.
	Create(ctx context.Context, req CreateRequest) (Created, error)
	// Destroy stops an instance and frees what it holds. Destroying an
	// instance that does not exist (any more) succeeds.
	Destroy(ctx context.Context, pool *model.WorkerPool, inst Instance) error
	// List returns the pool's instances that exist on the provider's side,
	// whatever kiln knows: after a restart the autoscaler adopts those it
	// knows and destroys the others.
	List(ctx context.Context, pool *model.WorkerPool) ([]Listed, error)
}

// HostBound is a Provider whose instances live and die with this server
// process (the process provider): when this process stops acting as the
// farm's autoscaler, or shuts down, they are stopped, since no other
// server could destroy them.
type HostBound interface {
	Provider
	// StopAll stops every instance, waiting up to timeout for them to
	// finish, and returns the names of those it stopped.
	StopAll(timeout time.Duration) []string
}

// Instance is what a provider is told about one instance.
type Instance struct {
	// Name is unique for ever ("<pool>-<id>"): the provider's key.
	Name string `json:"name"`
	// Worker is the worker the instance's runner runs as
	// ("<pool>-<slot>"), Slot its number in the pool (from 1).
	Worker string `json:"worker"`
	Slot   int    `json:"slot"`
	// ProviderID is what the provider called the instance when it created
	// it ("" until then).
	ProviderID string `json:"provider_id"`
}

// InstanceOf is what providers are told about inst.
func InstanceOf(inst *model.PoolInstance) Instance {
	return Instance{Name: inst.Name, Worker: inst.WorkerName, Slot: inst.Slot, ProviderID: inst.ProviderID}
}

// CreateRequest is everything a provider needs to start an instance.
type CreateRequest struct {
	Pool     *model.WorkerPool
	Instance Instance
	// ServerURL is where the instance's runner connects (`kiln runner
	// --server`).
	ServerURL string
	// Token is the secret of the instance's worker token: valid for this
	// instance only, deleted when kiln destroys it.
	Token string
}

// Created is a provider's answer to Create.
type Created struct {
	// ProviderID is what the provider calls the new instance, passed back
	// to Destroy; it may be empty.
	ProviderID string
}

// Listed is one instance a provider's List found.
type Listed struct {
	// Name is the instance's kiln name (Instance.Name).
	Name       string `json:"name"`
	ProviderID string `json:"provider_id"`
}

// CallError is a provider call that failed, with what the provider said:
// the autoscaler records it on the instance and the pool.
type CallError struct {
	// Op is the call: "create", "destroy" or "list".
	Op  string
	Err error
	// ExitStatus and Stderr are an executable's (exec provider).
	ExitStatus *int
	Stderr     string
}

func (e *CallError) Error() string {
	msg := e.Op + ": " + e.Err.Error()
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + lastLines(s, 3)
	}
	return msg
}

func (e *CallError) Unwrap() error { return e.Err }

// lastLines keeps the last n lines of s, joined with " | ".
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// callError wraps err as the CallError of op unless it is one already.
func callError(op string, err error) *CallError {
	if ce, ok := err.(*CallError); ok {
		return ce
	}
	return &CallError{Op: op, Err: err}
}
