package tasks

import (
	"context"
	"os/exec"
	"time"
)

// DetectBackends returns the backends this machine offers: host always,
// unshare when `unshare --map-root-user --fork --pid --mount-proc true`
// works (the binary exists and unprivileged user namespaces are allowed, or
// the runner is root). Trying is the only reliable test: distributions
// disable user namespaces in several different ways.
func DetectBackends(ctx context.Context) []string {
	out := []string{BackendHost}
	if _, err := exec.LookPath("unshare"); err != nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--map-root-user", "--fork", "--pid", "--mount-proc", "--kill-child", "true")
	if cmd.Run() == nil {
		out = append(out, BackendUnshare)
	}
	return out
}
