package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testkit"
)

// kilnBin is the kiln binary, built once for the suite.
var kilnBin string

func TestMain(m *testing.M) {
	os.Exit(testkit.MainWithKiln(m, &kilnBin))
}

const adminToken = "kiln_faults_admin_token_0123456789"

// cleanEnv is the test's environment without KILN_ variables, plus extra.
func cleanEnv(extra ...string) []string {
	return append(config.WithoutKilnSettings(os.Environ()), extra...)
}

// proc is a kiln process of a test, stopped when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testkit.Buffer
	done chan struct{}
}

// start runs kiln with args; its output is shown when the test fails.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(kilnBin, args...), out: &testkit.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			s := p.out.String()
			if len(s) > 4000 {
				s = "…" + s[len(s)-4000:]
			}
			t.Logf("--- output of %s ---\n%s", name, s)
		}
	})
	return p
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// server is a `kiln server` process on a fixed loopback port, so that a
// killed server comes back where its runners and clients look for it.
type server struct {
	*proc
	url     string
	dataDir string
	args    []string
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServer runs a server with args on a free port and a fresh data
// directory and waits until it is ready.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	port := freePort(t)
	s := &server{url: fmt.Sprintf("http://127.0.0.1:%d", port), dataDir: filepath.Join(t.TempDir(), "data"),
		args: append([]string{"server", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}, args...)}
	s.args = append(s.args, "--data-dir", s.dataDir)
	s.restart(t)
	return s
}

// restart starts the server again, after a kill, on its port, data
// directory and database.
func (s *server) restart(t *testing.T) {
	t.Helper()
	s.proc = start(t, "server", cleanEnv("KILN_BOOTSTRAP_TOKEN="+adminToken), s.args...)
	waitFor(t, 30*time.Second, "the server to be ready", func() bool {
		select {
		case <-s.done:
			t.Fatalf("the server exited:\n%s", s.out.String())
		default:
		}
		resp, err := http.Get(s.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// runner starts a runner with its worker's token on workDir.
func (s *server) runner(t *testing.T, name, token, workDir string) *proc {
	t.Helper()
	// after the runner's own cleanup (registered by start): the task
	// cgroups a killed runner left, which a runner starting again removes
	t.Cleanup(func() {
		if cg, err := tasks.OpenCgroups(workDir); err == nil {
			cg.Sweep()
			cg.Close()
		}
	})
	return start(t, name, cleanEnv("KILN_TOKEN="+token), "runner", "--server", s.url, "--name", name,
		"--work-dir", workDir, "--max-backoff", "500ms", "--log-level", "debug")
}

// call makes an API request as admin: it returns the status and decodes
// a JSON answer into out (when not nil).
func (s *server) call(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
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
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %v: %s", method, path, resp.StatusCode, err, b)
		}
	}
	return resp.StatusCode
}

// must is call that wants status want.
func (s *server) must(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	var raw json.RawMessage
	if code := s.call(t, method, path, body, &raw); code != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

// setup creates scope "faults" with the public workspace "main".
func (s *server) setup(t *testing.T) string {
	t.Helper()
	s.must(t, "POST", "/api/1.0/scopes/", map[string]any{"name": "faults"}, 201, nil)
	s.must(t, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "faults", "public": true}, 201, nil)
	return "faults/main"
}

// workerToken creates an enabled worker and returns its token.
func (s *server) workerToken(t *testing.T, name string) string {
	t.Helper()
	var w struct {
		Token struct {
			Secret string `json:"secret"`
		} `json:"token"`
	}
	s.must(t, "POST", "/api/1.0/workers/", map[string]any{"name": name}, 201, &w)
	return w.Token.Secret
}

// workRequest is what the suite reads of a work request.
type workRequest struct {
	ID      int64           `json:"id"`
	Status  string          `json:"status"`
	Result  string          `json:"result"`
	Retries int             `json:"retries"`
	Output  json.RawMessage `json:"output"`
}

func (s *server) get(t *testing.T, id int64) workRequest {
	t.Helper()
	var wr workRequest
	s.must(t, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200, &wr)
	return wr
}

// waitFor polls cond until it holds, or fails after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kiln runs a kiln command to its end and returns its exit code and
// output.
func kiln(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("kiln %v: %v", args, err)
	}
	return 0, string(out)
}

// process is a live process, told apart from a later one with the same
// pid by its start time.
type process struct {
	pid   int
	start string
	cmd   string
}

// procStat reads a process's parent, state and start time.
func procStat(pid int) (ppid int, state, start string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", "", false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0], f[19], true
}

// descendants lists the live processes below pid.
func descendants(pid int) []process {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, state, _, ok := procStat(p); ok && state != "Z" {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []process
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			_, _, start, _ := procStat(c)
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
			out = append(out, process{c, start, strings.ReplaceAll(string(b), "\x00", " ")})
			queue = append(queue, c)
		}
	}
	return out
}

// alive lists the processes of ps that still run.
func alive(ps []process) []process {
	var out []process
	for _, p := range ps {
		if _, state, start, ok := procStat(p.pid); ok && start == p.start && state != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// marked lists the live processes whose environment carries the marker
// of a task directory under dir (tasks.TaskDirEnv).
func marked(dir string) []process {
	var out []process
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(b, []byte(tasks.TaskDirEnv+"="+dir)) {
			continue
		}
		if _, state, start, ok := procStat(pid); ok && state != "Z" {
			out = append(out, process{pid: pid, start: start})
		}
	}
	return out
}

// lines reads a file of one word per line, as a count per word.
func lines(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if w := strings.TrimSpace(sc.Text()); w != "" {
			out[w]++
		}
	}
	return out
}
