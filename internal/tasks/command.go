package tasks

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// CommandData is the data of a command task:
//
//	{"host_architecture": "amd64", "backend": "auto",
//	 "script": "make && make check", "env": {"CC": "gcc"}, "timeout": "30m",
//	 "outputs": [{"path": "build/app.deb", "category": "debian:binary-package"}]}
type CommandData struct {
	HostArchitecture string `json:"host_architecture"`
	// Backend is host, unshare or auto (unshare when the runner has it).
	Backend string `json:"backend"`
	// Script runs with /bin/sh -c in a fresh working directory.
	Script string `json:"script"`
	// Env adds variables to the script's environment.
	Env map[string]string `json:"env"`
	// Timeout bounds the script (seconds or a Go duration); default
	// DefaultTimeout.
	Timeout *model.Duration `json:"timeout"`
	// Outputs are files the script leaves in its working directory, each
	// uploaded as an artifact of its category once the script succeeded.
	Outputs []Output `json:"outputs"`
}

// Output declares one file a command produces.
type Output struct {
	// Path is relative to the working directory.
	Path string `json:"path"`
	// Category is the artifact's category (default "kiln:file").
	Category string `json:"category"`
	// Data is the artifact's data (default {}).
	Data json.RawMessage `json:"data,omitempty"`
}

// DefaultTimeout is a command's timeout when the request sets none.
const DefaultTimeout = time.Hour

// MaxTimeout bounds what a request may ask for.
const MaxTimeout = 7 * 24 * time.Hour

// DefaultOutputCategory is the category of outputs that declare none.
const DefaultOutputCategory = "kiln:file"

// Backends a runner may offer.
const (
	BackendAuto    = "auto"
	BackendHost    = "host"
	BackendUnshare = "unshare"
)

var (
	envNamePattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	categoryPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}(:[a-z0-9][a-z0-9._-]{0,63})?$`)
)

// ParseCommand reads and checks a command task's data, filling defaults.
func ParseCommand(data json.RawMessage) (*CommandData, error) {
	var c CommandData
	if err := strictDecode(data, &c, "script", "env", "timeout", "outputs"); err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.Script) == "" {
		return nil, dataErr("a command task needs a script")
	}
	switch c.Backend {
	case "":
		c.Backend = BackendAuto
	case BackendAuto, BackendHost, BackendUnshare:
	default:
		return nil, dataErr("backend %q is not one of auto, host, unshare", c.Backend)
	}
	for k := range c.Env {
		if !envNamePattern.MatchString(k) {
			return nil, dataErr("env: %q is not a variable name", k)
		}
	}
	if c.Timeout == nil {
		d := model.Duration(DefaultTimeout)
		c.Timeout = &d
	}
	if *c.Timeout <= 0 || time.Duration(*c.Timeout) > MaxTimeout {
		return nil, dataErr("timeout must be more than 0 and at most %s", MaxTimeout)
	}
	seen := map[string]bool{}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		if o.Path == "" || strings.HasPrefix(o.Path, "/") || path.Clean(o.Path) != o.Path || o.Path == ".." || strings.HasPrefix(o.Path, "../") {
			return nil, dataErr("outputs: %q is not a clean path relative to the working directory", o.Path)
		}
		if seen[o.Path] {
			return nil, dataErr("outputs: %q is listed twice", o.Path)
		}
		seen[o.Path] = true
		if o.Category == "" {
			o.Category = DefaultOutputCategory
		}
		if !categoryPattern.MatchString(o.Category) {
			return nil, dataErr("outputs: %q is not a category: use lower-case words like \"debian:binary-package\"", o.Category)
		}
		if len(o.Data) > 0 {
			var m map[string]any
			if json.Unmarshal(o.Data, &m) != nil || m == nil {
				return nil, dataErr("outputs: data of %q must be a JSON object", o.Path)
			}
		}
	}
	return &c, nil
}

// ChooseBackend resolves a requested backend against what the runner has:
// auto picks unshare when available, else host. It fails when a specific
// backend is asked for that the runner lacks (the scheduler should not have
// sent it, but metadata may be stale).
func ChooseBackend(requested string, available []string) (string, error) {
	has := func(b string) bool {
		for _, a := range available {
			if a == b {
				return true
			}
		}
		return false
	}
	switch requested {
	case "", BackendAuto:
		if has(BackendUnshare) {
			return BackendUnshare, nil
		}
		return BackendHost, nil
	case BackendHost, BackendUnshare:
		if has(requested) {
			return requested, nil
		}
	}
	return "", fmt.Errorf("backend %q is not available on this runner (it has %s)", requested, strings.Join(available, ", "))
}
