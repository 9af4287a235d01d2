package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/model"
)

// The exec provider: the plug-in contract for any cloud. The pool names an
// executable; kiln runs it as `COMMAND create`, `COMMAND destroy` or
// `COMMAND list` with one JSON document on standard input (ExecRequest)
// and reads one JSON object from standard output, within the pool's
// timeout. Exit status 0 means success; otherwise the exit status and the
// end of standard error are recorded on the instance and the pool.
//
// The executable runs with the server's environment minus every KILN_
// variable (the secrets it needs come on stdin, or from its own
// configuration), in a process group of its own that is killed when the
// call times out. Whatever it starts must not keep its standard output or
// error open (redirect them), or kiln stops waiting for them a few seconds
// after it exits.

// ExecVersion is the version of the exec contract, sent as "version": a
// script can refuse a version it does not know.
const ExecVersion = 1

// ExecRequest is the document an exec pool's executable reads on standard
// input.
type ExecRequest struct {
	Version int `json:"version"`
	// Action is create, destroy or list, as the first argument says.
	Action string   `json:"action"`
	Pool   ExecPool `json:"pool"`
	// Instance is the instance to create or destroy (not for list).
	Instance *Instance `json:"instance,omitempty"`
	// ServerURL and Token are for create: the runner on the new instance
	// runs `kiln runner --server SERVER_URL --name INSTANCE.WORKER
	// --concurrent POOL.CONCURRENT` with KILN_TOKEN=TOKEN. The token is valid for this instance only; kiln
	// deletes it when the instance is destroyed.
	ServerURL string `json:"server_url,omitempty"`
	Token     string `json:"token,omitempty"`
}

// ExecPool is the pool as an exec pool's executable sees it.
type ExecPool struct {
	Name          string   `json:"name"`
	Architectures []string `json:"architectures"`
	Backends      []string `json:"backends"`
	// Concurrent is how many requests each instance's runner runs at
	// once: its `kiln runner --concurrent`. The autoscaler starts an
	// instance per that many pending requests.
	Concurrent int `json:"concurrent"`
	// Config is the pool's settings.config, as the admin wrote it.
	Config json.RawMessage `json:"config"`
}

// ExecCreated is what create prints: what the provider calls the new
// instance (optional).
type ExecCreated struct {
	ProviderID string `json:"provider_id"`
}

// ExecList is what list prints: every instance of the pool that exists on
// the provider's side, named as kiln named it at create.
type ExecList struct {
	Instances []Listed `json:"instances"`
}

// Output limits of one call: standard output is one small document;
// standard error is kept from its end, where the reason is.
const (
	maxExecStdout = 1 << 20
	keptStderr    = 4 << 10
	// execWaitDelay is how long kiln waits for the executable's output
	// pipes to close after it exited (something it started holds them).
	execWaitDelay = 5 * time.Second
)

// Exec is the exec provider. It keeps no state: the executable is the
// provider. It is safe for concurrent use.
type Exec struct {
	// Environ is the environment the executable gets, without KILN_
	// variables; nil means os.Environ().
	Environ []string
}

// Create runs `COMMAND create`.
func (e *Exec) Create(ctx context.Context, req CreateRequest) (Created, error) {
	s, err := execSettings(req.Pool)
	if err != nil {
		return Created{}, &CallError{Op: "create", Err: err}
	}
	server := req.ServerURL
	if s.ServerURL != "" {
		server = s.ServerURL
	}
	inst := req.Instance
	out, err := e.call(ctx, s, ExecRequest{Version: ExecVersion, Action: "create", Pool: execPool(req.Pool, s),
		Instance: &inst, ServerURL: server, Token: req.Token})
	if err != nil {
		return Created{}, err
	}
	c, err := ParseCreated(out)
	if err != nil {
		return Created{}, &CallError{Op: "create", Err: err}
	}
	return Created{ProviderID: c.ProviderID}, nil
}

// Destroy runs `COMMAND destroy`.
func (e *Exec) Destroy(ctx context.Context, pool *model.WorkerPool, inst Instance) error {
	s, err := execSettings(pool)
	if err != nil {
		return &CallError{Op: "destroy", Err: err}
	}
	out, err := e.call(ctx, s, ExecRequest{Version: ExecVersion, Action: "destroy", Pool: execPool(pool, s), Instance: &inst})
	if err != nil {
		return err
	}
	if err := ParseDestroyed(out); err != nil {
		return &CallError{Op: "destroy", Err: err}
	}
	return nil
}

// List runs `COMMAND list`.
func (e *Exec) List(ctx context.Context, pool *model.WorkerPool) ([]Listed, error) {
	s, err := execSettings(pool)
	if err != nil {
		return nil, &CallError{Op: "list", Err: err}
	}
	out, err := e.call(ctx, s, ExecRequest{Version: ExecVersion, Action: "list", Pool: execPool(pool, s)})
	if err != nil {
		return nil, err
	}
	l, err := ParseList(out)
	if err != nil {
		return nil, &CallError{Op: "list", Err: err}
	}
	return l.Instances, nil
}

func execPool(p *model.WorkerPool, s *ExecSettings) ExecPool {
	cfg := s.Config
	if len(cfg) == 0 {
		cfg = json.RawMessage("{}")
	}
	return ExecPool{Name: p.Name, Architectures: nonNil(p.Architectures), Backends: nonNil(p.Backends),
		Concurrent: max(p.Concurrent, 1), Config: cfg}
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// call runs the executable for req and returns its standard output.
func (e *Exec) call(ctx context.Context, s *ExecSettings, req ExecRequest) ([]byte, error) {
	doc, err := json.Marshal(req)
	if err != nil {
		return nil, &CallError{Op: req.Action, Err: err}
	}
	timeout := time.Duration(s.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Command, req.Action)
	env := e.Environ
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = config.WithoutKilnSettings(env)
	cmd.Stdin = bytes.NewReader(doc)
	stdout := &capped{max: maxExecStdout}
	stderr := &tail{keep: keptStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// its own process group, killed whole when the call times out; and a
	// call dies with the server (what it started need not: a runner of its
	// own session)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execWaitDelay
	err = cmd.Run()
	ce := &CallError{Op: req.Action, Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		ce.Err = fmt.Errorf("timed out after %s", timeout)
		return nil, ce
	case errors.As(err, &ee):
		code := ee.ExitCode()
		if code >= 0 {
			ce.ExitStatus = &code
		}
		ce.Err = errors.New(ee.ProcessState.String())
		return nil, ce
	case errors.Is(err, exec.ErrWaitDelay):
		// it exited 0 but left something holding its output: its answer
		// stands
	case err != nil:
		ce.Err = err
		return nil, ce
	}
	if stdout.over {
		ce.Err = fmt.Errorf("the output is longer than %d bytes", maxExecStdout)
		return nil, ce
	}
	return stdout.buf.Bytes(), nil
}

// capped keeps up to max bytes and notes whether more came.
type capped struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); len(p) > room {
		c.over = true
		p = p[:max(0, room)]
	}
	c.buf.Write(p)
	return len(p), nil
}

// tail keeps the last keep bytes written.
type tail struct {
	buf  []byte
	keep int
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.keep {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.keep:]...)
	}
	return len(p), nil
}

// String is the text kept, as the database can store it: valid UTF-8
// without NUL characters (PostgreSQL refuses both in text).
func (t *tail) String() string {
	s := strings.ToValidUTF8(string(t.buf), "\uFFFD")
	return strings.TrimSpace(strings.ReplaceAll(s, "\x00", "\uFFFD"))
}

// ParseCreated reads what create printed.
func ParseCreated(out []byte) (ExecCreated, error) {
	var c ExecCreated
	err := decodeOutput(out, &c)
	return c, err
}

// ParseList reads what list printed: every instance has a name.
func ParseList(out []byte) (ExecList, error) {
	var l ExecList
	if err := decodeOutput(out, &l); err != nil {
		return l, err
	}
	if l.Instances == nil {
		return l, errors.New(`the output has no "instances" list: print {"instances": []} when there is none`)
	}
	for i, inst := range l.Instances {
		if inst.Name == "" {
			return l, fmt.Errorf("instances[%d] has no name", i)
		}
	}
	return l, nil
}

// ParseDestroyed reads what destroy printed: any JSON object, {} will do.
func ParseDestroyed(out []byte) error {
	var m map[string]json.RawMessage
	return decodeOutput(out, &m)
}

// decodeOutput reads out strictly: one JSON object of dst's fields and
// nothing else.
func decodeOutput(out []byte, dst any) error {
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("the output is not a JSON object: %s", quoteStart(trimmed))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, ok := dst.(*map[string]json.RawMessage); !ok {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("the output is not the JSON object kiln expects: %v", err)
	}
	if dec.More() {
		return fmt.Errorf("the output has more than one JSON value: %s", quoteStart(trimmed))
	}
	return nil
}

// quoteStart quotes the beginning of b for an error message.
func quoteStart(b []byte) string {
	const n = 80
	if len(b) > n {
		return fmt.Sprintf("%q…", b[:n])
	}
	return fmt.Sprintf("%q", b)
}
