package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNewcomerStumbles replays, against the real binary and server, the
// mistakes and surprises a new user met in their first hour (issue 15):
// each now works, or says what to do.
func TestNewcomerStumbles(t *testing.T) {
	srv := startServer(t, cleanEnv(t))
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))
	ok(t, as, "scope", "create", "demo")
	ok(t, as, "workspace", "create", "main", "--scope", "demo", "--public")

	t.Run("output format reaches every command", func(t *testing.T) {
		// KILN_OUTPUT=json and -o json are the output format, never the
		// command task's artifacts (--artifact).
		r := ok(t, append(as, "KILN_OUTPUT=json"), "work", "submit", "command", "--workspace", "demo/main",
			"--script", "echo hi > hi.txt", "--artifact", "hi.txt:test:greeting")
		var wr struct {
			ID       int64 `json:"id"`
			TaskData struct {
				Outputs []map[string]string `json:"outputs"`
			} `json:"task_data"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &wr); err != nil {
			t.Fatalf("KILN_OUTPUT=json work submit: %v\n%s", err, r)
		}
		if len(wr.TaskData.Outputs) != 1 || wr.TaskData.Outputs[0]["path"] != "hi.txt" || wr.TaskData.Outputs[0]["category"] != "test:greeting" {
			t.Errorf("--artifact did not become an output: %s", r.stdout)
		}
		r = ok(t, as, "work", "submit", "noop", "--workspace", "demo/main", "-o", "json")
		if !json.Valid([]byte(r.stdout)) || r.stderr != "" {
			t.Errorf("work submit -o json: %s", r)
		}
	})

	t.Run("suggested commands exist", func(t *testing.T) {
		r := fails(t, as, 2, "see 'kiln work list'", "work", "show", "abc")
		if strings.Contains(r.stderr, "request list") {
			t.Errorf("suggests a command that does not exist: %s", r)
		}
		ok(t, as, "work", "list")
		fails(t, as, 2, "refer to an artifact by its id (see 'kiln artifact list')", "artifact", "show", "hello.txt")
		if r := ok(t, as, "artifact", "delete", "--help"); !strings.Contains(r.stdout, "Delete an artifact") {
			t.Errorf("artifact delete --help: %s", r)
		}
	})

	t.Run("did you mean at every level", func(t *testing.T) {
		fails(t, as, 2, `unknown command "scop" for "kiln" (did you mean "scope"?)`, "scop")
		fails(t, as, 2, `unknown command "creat" for "kiln scope" (did you mean "create"?)`, "scope", "creat", "x")
		fails(t, as, 2, `unknown command "ad" for "kiln workspace member" (did you mean "add"?)`, "workspace", "member", "ad")
		fails(t, as, 2, `unknown flag: --scop (did you mean "scope"?)`, "workspace", "list", "--scop", "demo")
		fails(t, as, 2, `unknown key "servr" (did you mean "server"?)`, "scope", "list", "--client-config", writeFile(t, "servr = \"x\"\n"))
		fails(t, as, 2, `unknown key "listn" (did you mean "listen"?)`, "server", "--config", writeFile(t, "listn = \"x\"\n"))
	})

	t.Run("server address without scheme", func(t *testing.T) {
		hostPort := strings.TrimPrefix(srv.url, "http://")
		r := ok(t, as, "--server", hostPort, "scope", "list")
		if !strings.Contains(r.stdout, "demo") {
			t.Errorf("scope list --server %s: %s", hostPort, r)
		}
		fails(t, as, 2, "want http://host:port", "scope", "list", "--server", "ftp://"+hostPort)
	})

	t.Run("tables name workspaces as scope/name", func(t *testing.T) {
		ok(t, as, "user", "create", "alice")
		r := ok(t, as, "workspace", "member", "add", "demo/main", "--user", "alice", "--role", "viewer")
		if !regexpLine(r.stdout, "WORKSPACE:", "demo/main") {
			t.Errorf("member add shows the workspace as: %s", r)
		}
		list := rows(t, ok(t, as, "work", "list").stdout)
		if len(list) == 0 || list[0]["WORKSPACE"] != "demo/main" {
			t.Errorf("work list: %v", list)
		}
		show := ok(t, as, "work", "show", list[0]["ID"]).stdout
		for _, dup := range []string{"TASK_TYPE:", "TASK_NAME:"} {
			if strings.Contains(show, dup) {
				t.Errorf("work show prints %s besides TYPE and TASK:\n%s", dup, show)
			}
		}
		if !regexpLine(show, "WORKSPACE:", "demo/main") || !regexpLine(show, "TYPE:", "Worker") {
			t.Errorf("work show:\n%s", show)
		}
	})
}

// TestServerPrintsARunnableNextStep: the command the server prints after
// starting works when pasted where the server was started — `kiln` when it
// is on PATH, the binary's path when it is not.
func TestServerPrintsARunnableNextStep(t *testing.T) {
	for _, onPath := range []bool{false, true} {
		env := cleanEnv(t)
		want := kilnBin
		if onPath {
			env = append(env, "PATH="+filepath.Dir(kilnBin)+":"+os.Getenv("PATH"))
			want = "kiln"
		}
		srv := startServer(t, env)
		var steps []string
		for _, l := range strings.Split(srv.stdout.String(), "\n") {
			if strings.HasPrefix(l, "  ") {
				steps = append(steps, strings.TrimSpace(l))
			}
		}
		if len(steps) != 2 || steps[1] != want+" scope list" {
			t.Fatalf("next steps printed (kiln on PATH: %v): %q", onPath, steps)
		}
		sh := exec.Command("bash", "-e", "-c", strings.Join(steps, "\n"))
		sh.Env = env
		if out, err := sh.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "ID") {
			t.Errorf("the printed next step failed (kiln on PATH: %v): %v\n%s", onPath, err, out)
		}
	}
}

// TestWaitSaysWhatIsConnected: --wait on work nothing connected can run
// says so at once on stderr, naming what is connected, and stops;
// --wait-for-runner keeps waiting until a runner that can run it connects.
func TestWaitSaysWhatIsConnected(t *testing.T) {
	srv := startServer(t, cleanEnv(t))
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))
	ok(t, as, "scope", "create", "demo")
	ok(t, as, "workspace", "create", "main", "--scope", "demo", "--public")
	startRunner(t, as, srv.url, "amd64")
	waitConnected(t, as, "runner-amd64")

	began := time.Now()
	// -o json: the warning still reaches stderr, stdout stays for scripts
	r := fails(t, as, 1, "stopped waiting: nothing connected can run work request", "work", "submit", "noop",
		"--workspace", "demo/main", "--host-architecture", "arm64", "--wait", "-o", "json")
	for _, want := range []string{"no connected worker can run work request 1, for arm64 with backend auto, and no worker pool offers one.",
		"kiln: connected: ", "runner-amd64 (amd64; backends host", "(Server tasks)", "kiln work abort 1", "--wait-for-runner"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("--wait took %s to give up", took)
	}
	if l := rows(t, ok(t, as, "work", "list").stdout); len(l) != 1 || l[0]["STATUS"] != "pending" {
		t.Errorf("the request should stay pending: %v", l)
	}

	// A matrix step for an architecture nobody has: the workflow's --wait
	// names the step.
	tmpl := writeFile(t, strings.NewReplacer("debian/main", "demo/main", "[amd64, i386, arm64]", "[amd64, armhf]").Replace(matrixTemplate))
	ok(t, as, "template", "create", "-f", tmpl)
	r = fails(t, as, 1, "stopped waiting", "workflow", "start", "build-all", "--param", "fail_on=none", "--wait")
	if !strings.Contains(r.stderr, "step build-armhf (work request") || strings.Contains(r.stderr, "step build-amd64") {
		t.Errorf("workflow start --wait does not name the one step nobody runs:\n%s", r.stderr)
	}

	// --wait-for-runner keeps waiting, and finishes once a runner comes.
	cmd := exec.Command(kilnBin, "work", "submit", "noop", "--workspace", "demo/main", "--host-architecture", "arm64",
		"--wait", "--wait-for-runner")
	cmd.Env = as
	var stdout bytes.Buffer
	stderr := newLockedBuffer()
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "waiting until one connects") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of waiting anyway:\n%s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	startRunner(t, as, srv.url, "arm64")
	select {
	case err := <-done:
		if err != nil || !strings.Contains(stdout.String(), "completed") {
			t.Errorf("--wait-for-runner: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("--wait-for-runner did not finish once an arm64 runner connected:\n%s", stderr)
	}
}

// waitConnected waits until the worker called name is connected.
func waitConnected(t *testing.T, as []string, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for byColumn(rows(t, ok(t, as, "worker", "list").stdout), "NAME")[name]["CONNECTED"] != "yes" {
		if time.Now().After(deadline) {
			t.Fatalf("worker %s did not connect within 30s", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeFile writes content to a new temporary file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
