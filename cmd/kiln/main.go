// Command kiln is the one binary of the kiln build farm: the server, the
// admin commands and (later) the runner. All of it is wired in
// internal/cli; this file only hands over the process's arguments and
// exit code.
package main

import (
	"context"
	"os"

	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/tasks"
)

func main() {
	// started by a runner as the guard of a task's processes
	tasks.RunGuardIfAsked()
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
