package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testkit"
)

// kilnBin is the kiln binary, built once: the end-to-end tests run real
// server and runner processes, exactly as an operator would.
var kilnBin string

func TestMain(m *testing.M) {
	os.Exit(testkit.MainWithKiln(m, &kilnBin))
}

const adminToken = "kiln_e2e_admin_token_0123456789"

// env is the test's environment without KILN_ variables, plus extra.
func env(extra ...string) []string {
	return append(config.WithoutKilnSettings(os.Environ()), extra...)
}

// proc is a kiln process of a test; it is stopped when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer = testkit.Buffer

// start runs kiln with args; stdout lines go to lines (when not nil),
// everything else into the process's buffer, shown when the test fails.
func start(t *testing.T, name string, environ []string, lines chan<- string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
	cmd.Env = environ
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.out.Write([]byte(sc.Text() + "\n"))
			if lines != nil {
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, tail(p.out.String(), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// stop sends SIGTERM and waits, then SIGKILL.
func (p *proc) stop(timeout time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// server is a running `kiln server`.
type server struct {
	*proc
	url     string
	dataDir string
}

// startServer runs a server on a free loopback port and waits until it
// listens.
func startServer(t *testing.T, name string, args ...string) *server {
	t.Helper()
	return launchServer(t, name, env("KILN_BOOTSTRAP_TOKEN="+adminToken), append([]string{"--log-level", "debug"}, args...)...)
}

// launchServer starts `kiln server` on a loopback port and a data
// directory of its own, with environment environ and the further flags
// args, and waits until it listens.
func launchServer(t *testing.T, name string, environ []string, args ...string) *server {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	lines := make(chan string, 64)
	all := append([]string{"server", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)
	p := start(t, name, environ, lines, all...)
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line := <-lines:
			if u, ok := strings.CutPrefix(line, "kiln server listening on "); ok {
				return &server{proc: p, url: strings.TrimSpace(u), dataDir: dataDir}
			}
		case <-p.done:
			t.Fatalf("%s exited: %s", name, p.out.String())
		case <-deadline:
			t.Fatalf("%s did not start: %s", name, p.out.String())
		}
	}
}

// runner starts `kiln runner` against s with token.
func (s *server) runner(t *testing.T, name, token, workDir string, args ...string) *proc {
	t.Helper()
	all := append([]string{"runner", "--server", s.url, "--name", name, "--work-dir", workDir, "--max-backoff", "1s", "--log-level", "debug"}, args...)
	t.Cleanup(func() { sweepCgroups(workDir) }) // after the runner's own cleanup, which start registers
	return start(t, name, env("KILN_TOKEN="+token), nil, all...)
}

// sweepCgroups removes the task cgroups a killed runner left (a runner
// that starts again on the work directory would), after the runner's
// own cleanup has stopped it.
func sweepCgroups(workDir string) {
	if cg, err := tasks.OpenCgroups(workDir); err == nil {
		cg.Sweep()
		cg.Close()
	}
}

// call makes an API request as admin and decodes the answer into out.
func (s *server) call(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, s.url+path, r)
	req.Header.Set("Authorization", "Token "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: want %d, got %d: %s", method, path, want, resp.StatusCode, b)
	}
	switch o := out.(type) {
	case nil:
	case *[]byte:
		*o = b
	default:
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// workerToken creates an enabled worker and returns its token.
func (s *server) workerToken(t *testing.T, name string) string {
	t.Helper()
	var w struct {
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	s.call(t, "POST", "/api/1.0/workers/", map[string]any{"name": name}, 201, &w)
	return w.Token.Secret
}

// setup creates scope "e2e" with a public workspace "main"; it returns the
// workspace reference.
func (s *server) setup(t *testing.T) string {
	t.Helper()
	s.call(t, "POST", "/api/1.0/scopes/", map[string]any{"name": "e2e"}, 201, nil)
	s.call(t, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "e2e", "public": true}, 201, nil)
	return "e2e/main"
}

// workRequest is what the tests read of a work request.
type workRequest struct {
	ID         int64           `json:"id"`
	Status     string          `json:"status"`
	Result     string          `json:"result"`
	Worker     *int64          `json:"worker"`
	Retries    int             `json:"retries"`
	Data       json.RawMessage `json:"task_data"`
	Output     json.RawMessage `json:"output"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"completed_at"`
	Stats      *struct {
		Duration  float64 `json:"duration"`
		CPUTime   float64 `json:"cpu_time"`
		Memory    int64   `json:"memory"`
		DiskSpace int64   `json:"disk_space"`
	} `json:"runtime_statistics"`
}

func (s *server) submit(t *testing.T, body map[string]any) workRequest {
	t.Helper()
	var wr workRequest
	s.call(t, "POST", "/api/1.0/work-requests/", body, 201, &wr)
	return wr
}

func (s *server) get(t *testing.T, id int64) workRequest {
	t.Helper()
	var wr workRequest
	s.call(t, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &wr)
	return wr
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFinished waits until every request has completed or been aborted.
func (s *server) waitFinished(t *testing.T, timeout time.Duration, ids ...int64) map[int64]workRequest {
	t.Helper()
	out := map[int64]workRequest{}
	deadline := time.Now().Add(timeout)
	for _, id := range ids {
		for {
			wr := s.get(t, id)
			if wr.Status == "completed" || wr.Status == "aborted" {
				out[id] = wr
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("work request %d still %s after %s", id, wr.Status, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}

// workers maps worker ids to names.
func (s *server) workers(t *testing.T) map[int64]string {
	t.Helper()
	var page struct {
		Results []struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
		} `json:"results"`
	}
	s.call(t, "GET", "/api/1.0/workers/?limit=1000", nil, 200, &page)
	out := map[int64]string{}
	for _, w := range page.Results {
		out[w.ID] = w.Name
	}
	return out
}
