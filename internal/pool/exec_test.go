package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func execPoolFor(command string, timeout time.Duration) *model.WorkerPool {
	settings, _ := json.Marshal(map[string]any{"command": command, "timeout": timeout.String(),
		"config": map[string]any{"region": "eu-west"}})
	return &model.WorkerPool{Name: "cloud", Provider: model.ProviderExec, Settings: settings,
		Architectures: []string{"arm64"}, Backends: []string{"unshare"}, MaxInstances: 2}
}

// TestExecContract: the executable gets its action as argument and the
// document on stdin, the server's environment without KILN_ variables,
// and kiln reads its answers.
func TestExecContract(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KILN_TOKEN", "kiln_admin_secret")
	t.Setenv("POOL_TEST_DIR", dir)
	exe := script(t, `cat > "$POOL_TEST_DIR/$1.json"; env > "$POOL_TEST_DIR/$1.env"
case "$1" in
create) echo '{"provider_id": "vm-42"}' ;;
list) echo '{"instances": [{"name": "cloud-7", "provider_id": "vm-42"}]}' ;;
destroy) echo '{}' ;;
esac`)
	pool := execPoolFor(exe, 10*time.Second)
	pool.Concurrent = 2
	e := &Exec{}
	ctx := context.Background()
	inst := Instance{Name: "cloud-7", Worker: "cloud-1", Slot: 1}
	c, err := e.Create(ctx, CreateRequest{Pool: pool, Instance: inst, ServerURL: "http://kiln.example:8420", Token: "kiln_instance"})
	if err != nil || c.ProviderID != "vm-42" {
		t.Fatalf("create: %+v %v", c, err)
	}
	l, err := e.List(ctx, pool)
	if err != nil || len(l) != 1 || l[0] != (Listed{Name: "cloud-7", ProviderID: "vm-42"}) {
		t.Fatalf("list: %+v %v", l, err)
	}
	inst.ProviderID = "vm-42"
	if err := e.Destroy(ctx, pool, inst); err != nil {
		t.Fatalf("destroy: %v", err)
	}

	var req ExecRequest
	b, _ := os.ReadFile(filepath.Join(dir, "create.json"))
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if req.Version != ExecVersion || req.Action != "create" || req.Pool.Name != "cloud" || req.Pool.Architectures[0] != "arm64" || req.Pool.Concurrent != 2 ||
		string(req.Pool.Config) != `{"region":"eu-west"}` || req.Instance == nil || *req.Instance != (Instance{Name: "cloud-7", Worker: "cloud-1", Slot: 1}) ||
		req.ServerURL != "http://kiln.example:8420" || req.Token != "kiln_instance" {
		t.Errorf("create document: %s", b)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "list.json"))
	if strings.Contains(string(b), "token") || strings.Contains(string(b), `"instance"`) {
		t.Errorf("list document: %s", b)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "destroy.json"))
	if !strings.Contains(string(b), `"provider_id":"vm-42"`) || strings.Contains(string(b), "token") {
		t.Errorf("destroy document: %s", b)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "create.env"))
	if strings.Contains(string(env), "KILN_") {
		t.Errorf("the executable saw KILN_ variables:\n%s", env)
	}
}

// TestExecFailures: a failing, hanging or garbage-printing executable is
// a CallError saying so, with its exit status and standard error (as
// text the database stores); a hung one is killed with everything it
// started.
func TestExecFailures(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("POOL_TEST_DIR", dir)
	for _, c := range []struct {
		name, body string
		want       string
		exit       int
	}{
		{"fails", `echo "starting instance" >&2; echo "error: quota exceeded for arm64 machines" >&2; exit 3`,
			"exit status 3: starting instance | error: quota exceeded for arm64 machines", 3},
		{"hangs", `sleep 30 & echo $! > "$POOL_TEST_DIR/child"; echo "waiting for the cloud" >&2; wait`,
			"timed out after 300ms: waiting for the cloud", -1},
		// kept as the database can store it: no NUL, valid UTF-8
		{"binary stderr", `printf 'bad\000byte\377\n' >&2; exit 4`, "exit status 4: bad\uFFFDbyte\uFFFD", 4},
		{"garbage", `echo "Instance started!"`, `the output is not a JSON object: "Instance started!"`, -1},
		{"two values", `echo '{"provider_id": "a"} {"provider_id": "b"}'`, "more than one JSON value", -1},
		{"unknown field", `echo '{"providerId": "a"}'`, `unknown field "providerId"`, -1},
		{"wrong type", `echo '{"provider_id": 42}'`, "cannot unmarshal number", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			pool := execPoolFor(script(t, c.body), 300*time.Millisecond)
			start := time.Now()
			_, err := (&Exec{}).Create(context.Background(), CreateRequest{Pool: pool, Instance: Instance{Name: "cloud-1"}})
			var ce *CallError
			if !errors.As(err, &ce) || ce.Op != "create" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want a create CallError with %q", err, c.want)
			}
			if (ce.ExitStatus == nil) != (c.exit < 0) || (ce.ExitStatus != nil && *ce.ExitStatus != c.exit) {
				t.Errorf("exit status %v, want %d", ce.ExitStatus, c.exit)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the call took %s", d)
			}
		})
	}
	b, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	until(t, "the hung executable's child to be killed", func() bool { return syscall.Kill(pid, 0) != nil })
}

// TestExecListNeedsNames: a list without the instances key, or with a
// nameless instance, is refused.
func TestExecListNeedsNames(t *testing.T) {
	for _, out := range []string{`{}`, `{"instances": [{"provider_id": "vm-1"}]}`, `{"instances": null}`} {
		if _, err := ParseList([]byte(out)); err == nil {
			t.Errorf("ParseList(%s) succeeded", out)
		}
	}
	if l, err := ParseList([]byte(" {\"instances\": []}\n")); err != nil || len(l.Instances) != 0 {
		t.Errorf("an empty list: %v %v", l, err)
	}
}

// FuzzParseExecOutput: whatever an executable prints, the parsers answer
// an error or a value, never a panic, and a value they accept reads back
// the same.
func FuzzParseExecOutput(f *testing.F) {
	for _, seed := range []string{`{}`, `{"provider_id": "vm-1"}`, `{"instances": [{"name": "a", "provider_id": "b"}]}`,
		`Instance started!`, `{"instances": [{"name": ""}]}`, `{"provider_id": 1}`, `[]`, `null`, `{"a": 1} {"b": 2}`, "\xff{"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		if c, err := ParseCreated(out); err == nil {
			b, _ := json.Marshal(c)
			if again, err := ParseCreated(b); err != nil || again != c {
				t.Fatalf("created %+v does not read back: %v", c, err)
			}
		}
		if l, err := ParseList(out); err == nil {
			for _, inst := range l.Instances {
				if inst.Name == "" {
					t.Fatal("a listed instance without a name")
				}
			}
		}
		_ = ParseDestroyed(out)
	})
}

// TestSettingsAreCheckedPerProvider: each bad setting is refused naming
// it.
func TestSettingsAreCheckedPerProvider(t *testing.T) {
	exe := script(t, "exit 0")
	notExe := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(notExe, []byte("x"), 0o644)
	for _, c := range []struct {
		provider, settings, field string
	}{
		{"process", `{}`, ""},
		{"process", `{"metrics_server": "127.0.0.1:9300"}`, ""},
		{"process", `{"metrics_server": "127.0.0.1:0"}`, "settings.metrics_server"},
		{"process", `{"metrics_server": ":65535"}`, "settings.metrics_server"}, // 3 instances go past 65535
		{"process", `{"metrics_server": 9300}`, "settings.metrics_server"},
		{"process", `{"command": "/bin/true"}`, "settings.command"},
		{"process", `[]`, "settings"},
		{"exec", fmt.Sprintf(`{"command": %q}`, exe), ""},
		{"exec", fmt.Sprintf(`{"command": %q, "timeout": "2m", "server_url": "https://kiln.example", "config": {"image": "debian-12"}}`, exe), ""},
		{"exec", `{}`, "settings.command"},
		{"exec", `{"command": "provider.sh"}`, "settings.command"},
		{"exec", `{"command": "/nonexistent/provider"}`, "settings.command"},
		{"exec", fmt.Sprintf(`{"command": %q}`, notExe), "settings.command"},
		{"exec", fmt.Sprintf(`{"command": %q, "timeout": "forever"}`, exe), "settings.timeout"},
		{"exec", fmt.Sprintf(`{"command": %q, "timeout": "-1s"}`, exe), "settings.timeout"},
		{"exec", fmt.Sprintf(`{"command": %q, "timeout": "2h"}`, exe), "settings.timeout"},
		{"exec", fmt.Sprintf(`{"command": %q, "server_url": "kiln.example"}`, exe), "settings.server_url"},
		{"exec", fmt.Sprintf(`{"command": %q, "config": [1]}`, exe), "settings.config"},
		{"exec", fmt.Sprintf(`{"command": %q, "timeout": null}`, exe), "settings.timeout"},
		{"exec", fmt.Sprintf(`{"command": %q, "region": "eu"}`, exe), "settings.region"},
	} {
		p := &model.WorkerPool{Name: "p", Provider: c.provider, Settings: json.RawMessage(c.settings), MaxInstances: 3}
		err := CheckSettings(p)
		if c.field == "" {
			if err != nil {
				t.Errorf("%s %s: %v", c.provider, c.settings, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.field+": ") {
			t.Errorf("%s %s: %v, want an error on %s", c.provider, c.settings, err, c.field)
		}
	}
}

// FuzzCheckSettings: any settings document is accepted or refused with an
// error naming settings or one of its keys, never a panic.
func FuzzCheckSettings(f *testing.F) {
	for _, seed := range []string{`{}`, `{"metrics_server": "127.0.0.1:9300"}`, `{"command": "/bin/true", "timeout": "1m"}`,
		`{"command": 1}`, `[]`, `null`, `{"timeout": "forever"}`, `{"config": {"a": [1, 2]}}`, "{\"\xff\": 1}"} {
		f.Add("process", seed)
		f.Add("exec", seed)
	}
	f.Fuzz(func(t *testing.T, provider, settings string) {
		p := &model.WorkerPool{Name: "p", Provider: provider, Settings: json.RawMessage(settings), MaxInstances: 2}
		if err := CheckSettings(p); err != nil && !strings.HasPrefix(err.Error(), "settings") {
			t.Fatalf("an error that names no setting: %v", err)
		}
	})
}
