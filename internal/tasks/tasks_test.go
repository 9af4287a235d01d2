package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		typ   model.TaskType
		name  string
		data  string
		field string // "" means valid
	}{
		{model.TaskWorker, "noop", `{"host_architecture":"amd64"}`, ""},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"true","timeout":"5m","outputs":[{"path":"a/b.txt"}]}`, ""},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"true","timeout":30}`, ""},
		{model.TaskWorker, "command", `{"host_architecture":"amd64"}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","timout":3}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","timeout":"soon"}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","timeout":0}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","backend":"docker"}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","outputs":[{"path":"../etc/passwd"}]}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","outputs":[{"path":"a","category":"Bad Category"}]}`, "task_data"},
		{model.TaskWorker, "command", `{"host_architecture":"amd64","script":"x","env":{"1X":"y"}}`, "task_data"},
		{model.TaskWorker, "sbuild", `{"host_architecture":"amd64"}`, "task_name"},
		{model.TaskServer, "add-to-collection", `{"collection":1,"artifact":2}`, ""},
		{model.TaskServer, "add-to-collection", `{"collection":1}`, "task_data"},
		{model.TaskWait, "delay", `{"delay":2}`, ""},
		{model.TaskWait, "delay", `{"delay":"1h"}`, ""},
		{model.TaskWait, "delay", `{"delay":-1}`, "task_data"},
		{model.TaskWorkflow, "x", `{}`, "task_type"},
		{model.TaskSigning, "sign", `{}`, "task_type"},
	} {
		err := tasks.Validate(&model.WorkRequest{TaskType: tc.typ, TaskName: tc.name, Data: json.RawMessage(tc.data)})
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s/%s %s: %v", tc.typ, tc.name, tc.data, err)
			}
			continue
		}
		var te *tasks.Error
		if !errors.As(err, &te) || te.Field != tc.field {
			t.Errorf("%s/%s %s: want an error on %s, got %v", tc.typ, tc.name, tc.data, tc.field, err)
		}
	}
}

func TestChooseBackend(t *testing.T) {
	both := []string{"host", "unshare"}
	for _, tc := range []struct {
		req   string
		have  []string
		want  string
		fails bool
	}{
		{"auto", both, "unshare", false},
		{"", []string{"host"}, "host", false},
		{"host", both, "host", false},
		{"unshare", []string{"host"}, "", true},
	} {
		got, err := tasks.ChooseBackend(tc.req, tc.have)
		if got != tc.want || (err != nil) != tc.fails {
			t.Errorf("ChooseBackend(%q, %v) = %q, %v", tc.req, tc.have, got, err)
		}
	}
}

type fixture struct {
	env     *tasks.Env
	logPath string
	uploads []tasks.Upload
	// contents holds what each upload read, while the task still ran
	contents [][]byte
}

func newFixture(t *testing.T, backends ...string) *fixture {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "work")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(root, "log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if len(backends) == 0 {
		backends = []string{"host"}
	}
	fx := &fixture{logPath: logPath}
	// tasks run under the guard, as on a runner: this test binary is one
	// (TestMain)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fx.env = &tasks.Env{Dir: dir, Log: f, Backends: backends, BaseEnv: []string{"PATH=" + os.Getenv("PATH")}, Guard: exe,
		DiskSampleInterval: 20 * time.Millisecond,
		Upload: func(ctx context.Context, u tasks.Upload) (int64, error) {
			fx.uploads = append(fx.uploads, u)
			fx.contents = append(fx.contents, readUpload(t, u))
			return int64(len(fx.uploads)), nil
		}}
	return fx
}

func (fx *fixture) log(t *testing.T) string {
	b, err := os.ReadFile(fx.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func command(t *testing.T, data map[string]any) *model.WorkRequest {
	data["host_architecture"] = "amd64"
	b, _ := json.Marshal(data)
	return &model.WorkRequest{ID: 7, TaskType: model.TaskWorker, TaskName: "command", WorkspaceID: 1, Data: b}
}

func TestCommandSuccess(t *testing.T) {
	fx := newFixture(t)
	wr := command(t, map[string]any{
		"script": `echo "hello $WHO from $KILN_WORK_REQUEST"; echo to-stderr >&2
head -c 300000 /dev/zero > big; sleep 0.3; rm big
mkdir out; echo result > out/r.txt
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done`,
		"env":     map[string]string{"WHO": "kiln"},
		"outputs": []map[string]string{{"path": "out/r.txt", "category": "test:result"}},
	})
	out := tasks.RunWorker(context.Background(), wr, fx.env)
	if out.Result != model.ResultSuccess {
		t.Fatalf("result %s %v\n%s", out.Result, out.Output, fx.log(t))
	}
	log := fx.log(t)
	for _, want := range []string{"hello kiln from 7", "to-stderr", "the script succeeded"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if len(fx.uploads) != 1 || fx.uploads[0].Category != "test:result" || fx.uploads[0].Name != "out/r.txt" {
		t.Fatalf("uploads: %+v", fx.uploads)
	}
	st := out.Statistics
	if st.Duration <= 0 || st.CPUTime <= 0 || st.Memory <= 0 {
		t.Errorf("statistics not measured: %+v", st)
	}
	if st.DiskSpace < 300000 {
		t.Errorf("peak disk space %d misses the 300 kB file that existed for 300 ms", st.DiskSpace)
	}
	if out.Output["exit_code"] != 0 {
		t.Errorf("exit code %v", out.Output["exit_code"])
	}
}

func TestCommandFailureTimeoutAndMissingOutput(t *testing.T) {
	fx := newFixture(t)
	out := tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "exit 3"}), fx.env)
	if out.Result != model.ResultFailure || out.Output["exit_code"] != 3 || out.Failure != tasks.FailureScript {
		t.Fatalf("exit 3: %+v", out)
	}

	fx = newFixture(t)
	start := time.Now()
	out = tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "sleep 30 & sleep 30", "timeout": 0.3}), fx.env)
	if out.Result != model.ResultFailure || !strings.Contains(out.Output["error"].(string), "timed out") || out.Failure != tasks.FailureTimeout {
		t.Fatalf("timeout: %+v", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %s", d)
	}

	fx = newFixture(t)
	out = tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "true",
		"outputs": []map[string]string{{"path": "nothing.txt"}}}), fx.env)
	if out.Result != model.ResultFailure || !strings.Contains(out.Output["error"].(string), "nothing.txt") || out.Failure != tasks.FailureScript {
		t.Fatalf("missing output: %+v", out)
	}

	fx = newFixture(t)
	fx.env.Upload = func(context.Context, tasks.Upload) (int64, error) { return 0, errors.New("the file store is full") }
	out = tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "echo x > out.txt",
		"outputs": []map[string]string{{"path": "out.txt"}}}), fx.env)
	if out.Result != model.ResultError || out.Failure != tasks.FailureUpload {
		t.Fatalf("failed upload: %+v", out)
	}
}

func TestCommandCancelKillsEverything(t *testing.T) {
	fx := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	marker := filepath.Join(t.TempDir(), "still-running")
	done := make(chan tasks.Outcome)
	go func() {
		// a daemon that leaves the process group keeps the marker fresh
		done <- tasks.RunWorker(ctx, command(t, map[string]any{"script": "setsid sh -c 'while true; do touch " + marker + "; sleep 0.05; done' & sleep 60"}), fx.env)
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	out := <-done
	if out.Result != model.ResultError || out.Failure != tasks.FailureCanceled {
		t.Fatalf("cancelled: %+v", out)
	}
	os.Remove(marker)
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a process of the cancelled task is still running")
	}
}

func TestCommandUnshare(t *testing.T) {
	if !slices.Contains(tasks.DetectBackends(context.Background()), "unshare") {
		t.Skip("unshare is not usable here")
	}
	fx := newFixture(t, "host", "unshare")
	out := tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "echo pid=$$; id -u"}), fx.env)
	if out.Result != model.ResultSuccess || out.Output["backend"] != "unshare" {
		t.Fatalf("%+v\n%s", out, fx.log(t))
	}
	if log := fx.log(t); !strings.Contains(log, "pid=1\n") || !strings.Contains(log, "\n0\n") {
		t.Fatalf("script did not run as PID 1 and root of its namespaces:\n%s", log)
	}
}

// TestCommandWithoutGuard: without a guard (kiln's executable unknown),
// a script still runs, reports its status and is stopped by its process
// group and marker; and with one, the guard passes the script's exit code
// and signal through unchanged.
func TestCommandWithoutGuard(t *testing.T) {
	for _, script := range []string{"exit 3", "kill -TERM $$", "echo ok"} {
		var results [2]tasks.Outcome
		for i, guarded := range []bool{true, false} {
			fx := newFixture(t)
			if !guarded {
				fx.env.Guard = ""
			}
			results[i] = tasks.RunWorker(context.Background(), command(t, map[string]any{"script": script}), fx.env)
		}
		g, u := results[0], results[1]
		if g.Result != u.Result || g.Output["exit_code"] != u.Output["exit_code"] {
			t.Errorf("%q: guarded %s %v, unguarded %s %v", script, g.Result, g.Output, u.Result, u.Output)
		}
	}
	fx := newFixture(t)
	fx.env.Guard = ""
	start := time.Now()
	out := tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "sleep 30 & sleep 30", "timeout": 0.3}), fx.env)
	if out.Result != model.ResultFailure || time.Since(start) > 5*time.Second {
		t.Fatalf("timeout without a guard: %+v after %s", out, time.Since(start))
	}
}

func TestNoop(t *testing.T) {
	fx := newFixture(t)
	out := tasks.RunWorker(context.Background(), &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop"}, fx.env)
	if out.Result != model.ResultSuccess || out.Statistics.Duration <= 0 || out.Failure != "" {
		t.Fatalf("%+v", out)
	}
	out = tasks.RunWorker(context.Background(), &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "nope"}, fx.env)
	if out.Result != model.ResultError || out.Failure != tasks.FailureSystem {
		t.Fatalf("%+v", out)
	}
}

// TestPrepareOnlyWhenUsed: the working directory and the log are made
// when a task uses them — a command, even one whose script fails at once
// — and never for a noop, an unknown task or a command whose data is
// refused before anything runs. A failing Prepare fails the task as the
// runner's fault.
func TestPrepareOnlyWhenUsed(t *testing.T) {
	for _, c := range []struct {
		name     string
		wr       *model.WorkRequest
		prepares bool
	}{
		{"noop", &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop"}, false},
		{"unknown task", &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "nope"}, false},
		{"refused command", &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "command", Data: []byte(`{"script": 3}`)}, false},
		{"command", command(t, map[string]any{"script": "echo hi > f; exit 1"}), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t)
			dir, log := fx.env.Dir, fx.env.Log
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			fx.env.Log = nil
			calls := 0
			fx.env.Prepare = func() (*os.File, error) {
				calls++
				return log, os.Mkdir(dir, 0o750)
			}
			tasks.RunWorker(context.Background(), c.wr, fx.env)
			_, statErr := os.Stat(dir)
			if want := map[bool]int{false: 0, true: 1}[c.prepares]; calls != want || (statErr == nil) != c.prepares || (fx.env.Log != nil) != c.prepares {
				t.Fatalf("Prepare called %d times (want %d), directory: %v, log %v", calls, want, statErr, fx.env.Log)
			}
			if c.prepares && !strings.Contains(fx.log(t), "the script failed") {
				t.Fatalf("log: %q", fx.log(t))
			}
		})
	}
	fx := newFixture(t)
	fx.env.Log = nil
	fx.env.Prepare = func() (*os.File, error) { return nil, errors.New("cannot create the working directory: disk full") }
	out := tasks.RunWorker(context.Background(), command(t, map[string]any{"script": "true"}), fx.env)
	if out.Result != model.ResultError || out.Failure != tasks.FailureSystem || !strings.Contains(fmt.Sprint(out.Output["error"]), "disk full") {
		t.Fatalf("a failing Prepare: %+v", out)
	}
}

// TestOutputsStayInTheTaskDirectory is defect 5 of issue 13: an output
// reached through a symbolic link to a directory outside the task
// directory (ln -s /etc d, output d/passwd) uploaded /etc/passwd. Outputs
// are now read through an os.Root on the task directory: links that stay
// inside are fine, links that leave it are not followed.
func TestOutputsStayInTheTaskDirectory(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("not yours\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, script, output string
		ok                   bool
	}{
		{"a link to /etc", "ln -s /etc d", "d/passwd", false},
		{"a link to a directory outside", "ln -s " + outside + " d", "d/secret", false},
		{"a relative link that climbs out", "mkdir -p a; ln -s ../../.. a/up", "a/up/" + filepath.Base(outside) + "/secret", false},
		{"a link as the output itself", "ln -s " + outside + "/secret out", "out", false},
		{"a link to a directory inside", "mkdir -p real; echo hi > real/f; ln -s real d", "d/f", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t)
			wr := command(t, map[string]any{"script": c.script, "outputs": []map[string]string{{"path": c.output}}})
			out := tasks.RunWorker(context.Background(), wr, fx.env)
			if !c.ok {
				if out.Result == model.ResultSuccess || len(fx.uploads) != 0 {
					t.Fatalf("an output outside the task directory was collected: %s %v, uploads %v", out.Result, out.Output, fx.uploads)
				}
				return
			}
			if out.Result != model.ResultSuccess || len(fx.uploads) != 1 {
				t.Fatalf("an output inside the task directory was refused: %s %v\n%s", out.Result, out.Output, fx.log(t))
			}
			if b := fx.contents[0]; string(b) != "hi\n" {
				t.Fatalf("uploaded %q", b)
			}
		})
	}
}

// readUpload reads what an upload would send.
func readUpload(t *testing.T, u tasks.Upload) []byte {
	t.Helper()
	f, err := u.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
