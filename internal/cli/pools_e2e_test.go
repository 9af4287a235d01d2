package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// The worker pools end to end: real `kiln server` processes on SQLite and
// PostgreSQL, real runners started by both providers — the process
// provider's children and the exec provider's shipped example script
// (examples/pool-exec/kiln-pool-processes), which starts each runner as a
// process of its own — and the admin commands a person would use.

const (
	poolAdmin = "kiln_pools_e2e_admin_token_0123456789"
	// poolArch is an architecture only the pools' runners offer (their
	// --architectures), so that no other worker takes the work.
	poolArch = "kilntest"
)

// exampleProvider is the shipped exec provider script.
var exampleProvider, _ = filepath.Abs(filepath.Join("..", "..", "examples", "pool-exec", "kiln-pool-processes"))

// poolFarm is a server with a workspace to submit to, and the admin
// commands' environment.
type poolFarm struct {
	t       *testing.T
	srv     *server
	as      []string // environment of admin commands
	metrics string   // the internal listener's /metrics URL
}

// startPoolFarm starts a server acting quickly on pools (a pass every
// 100 ms), with an uncached public endpoint and an internal listener;
// dsn "" is SQLite in the data directory; args are more server flags.
func startPoolFarm(t *testing.T, dsn string, args ...string) *poolFarm {
	t.Helper()
	metrics := freeAddr(t)
	full := append([]string{"--pool-interval", "100ms", "--pool-list-interval", "1s", "--metrics-cache-ttl", "0s",
		"--metrics-server", metrics, "--heartbeat-timeout", "30s"}, args...)
	if dsn != "" {
		full = append(full, "--database", dsn)
	}
	srv := startServer(t, cleanEnv(t, "KILN_BOOTSTRAP_TOKEN="+poolAdmin), full...)
	f := &poolFarm{t: t, srv: srv, as: cleanEnv(t, "KILN_SERVER="+srv.url, "KILN_TOKEN="+poolAdmin),
		metrics: "http://" + metrics + "/metrics"}
	return f
}

// workspace makes scope e2e and its public workspace main, once.
func (f *poolFarm) workspace() {
	apiJSON(f.t, f.srv.url, poolAdmin, "POST", "/api/1.0/scopes/", map[string]any{"name": "e2e"}, 201)
	apiJSON(f.t, f.srv.url, poolAdmin, "POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "e2e", "public": true}, 201)
}

// submit queues a Worker request for arch: a command task that sleeps a
// little, or a noop.
func (f *poolFarm) submit(arch string, sleep bool) int64 {
	f.t.Helper()
	data := map[string]any{"host_architecture": arch}
	task := "noop"
	if sleep {
		task, data["backend"], data["script"] = "command", "host", "sleep 0.3"
	}
	wr := apiJSON(f.t, f.srv.url, poolAdmin, "POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker",
		"task_name": task, "workspace": "e2e/main", "task_data": data}, 201)
	return int64(wr["id"].(float64))
}

func (f *poolFarm) request(id int64) map[string]any {
	return apiJSON(f.t, f.srv.url, poolAdmin, "GET", fmt.Sprintf("/api/1.0/work-requests/%d/", id), nil, 200)
}

func (f *poolFarm) completed(ids ...int64) bool {
	for _, id := range ids {
		if wr := f.request(id); wr["status"] != "completed" || wr["result"] != "success" {
			return false
		}
	}
	return true
}

// pool is `kiln pool show NAME -o json`.
func (f *poolFarm) pool(name string) map[string]any {
	f.t.Helper()
	var p map[string]any
	if err := json.Unmarshal([]byte(ok(f.t, f.as, "pool", "show", name, "-o", "json").stdout), &p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *poolFarm) status(name string) map[string]any { return f.pool(name)["status"].(map[string]any) }

// live counts the pool's live instances.
func (f *poolFarm) live(name string) int {
	n := 0
	for _, v := range f.status(name)["instances"].(map[string]any) {
		n += int(v.(float64))
	}
	return n
}

// instances is `kiln pool instances NAME [--all] -o json`.
func (f *poolFarm) instances(name string, all bool) []map[string]any {
	f.t.Helper()
	args := []string{"pool", "instances", name, "-o", "json"}
	if all {
		args = append(args, "--all")
	}
	var out []map[string]any
	if err := json.Unmarshal([]byte(ok(f.t, f.as, args...).stdout), &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// recorded is the runtime the pool's instances ran by their records:
// stopped ones to their stop, live ones to now.
func (f *poolFarm) recorded(name string) float64 {
	sum := 0.0
	for _, inst := range f.instances(name, true) {
		created, _ := time.Parse(time.RFC3339Nano, inst["created_at"].(string))
		end := time.Now()
		if s, ok := inst["stopped_at"].(string); ok {
			end, _ = time.Parse(time.RFC3339Nano, s)
		}
		sum += end.Sub(created).Seconds()
	}
	return sum
}

var runtimeLine = regexp.MustCompile(`(?m)^worker_pool_runtime\{worker_pool="([^"]+)"\} (\S+)$`)

// runtime is worker_pool_runtime of the pool on the public endpoint.
func (f *poolFarm) runtime(name string) float64 {
	f.t.Helper()
	for _, m := range runtimeLine.FindAllStringSubmatch(metricsText(f.srv.url+"/api/1.0/open-metrics/"), -1) {
		if m[1] == name {
			v, _ := strconv.ParseFloat(m[2], 64)
			return v
		}
	}
	f.t.Fatalf("no worker_pool_runtime for %s", name)
	return 0
}

// checkRuntime compares worker_pool_runtime with the instances' records,
// to the second (the two reads are apart in time).
func (f *poolFarm) checkRuntime(name string) {
	f.t.Helper()
	got, want := f.runtime(name), f.recorded(name)
	if math.Abs(got-want) > 1 {
		f.t.Errorf("worker_pool_runtime{worker_pool=%q} = %.3f, the instances' records say %.3f", name, got, want)
	}
}

func (f *poolFarm) until(what string, cond func() bool) {
	f.t.Helper()
	waitUntil(f.t, what, cond, func() string { return "server log:\n" + f.srv.stderr.String() })
}

// processesWith lists the processes whose command line contains marker.
func processesWith(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && regexp.MustCompile(`^\d+ \(.*\) Z`).Match(stat) {
			continue // a zombie has exited
		}
		pids = append(pids, pid)
	}
	return pids
}

// killAll kills the processes of marker at the end of a test that may
// leave some behind (the exec example's runners outlive their server).
func killAll(t *testing.T, marker string) {
	t.Cleanup(func() {
		for _, pid := range processesWith(marker) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// createPool makes a pool for poolArch with `kiln pool create`: provider
// process, or exec with the example script keeping its runners' state in
// stateDir.
func (f *poolFarm) createPool(name, provider, stateDir string, flags ...string) {
	f.t.Helper()
	args := []string{"pool", "create", name, "--provider", provider, "--architectures", poolArch, "--backends", "host"}
	if provider == "exec" {
		args = append(args, "--command", exampleProvider, "--settings",
			fmt.Sprintf(`{"config": {"state_dir": %q, "kiln": %q}, "timeout": "20s"}`, stateDir, kilnBin))
	}
	ok(f.t, f.as, append(args, flags...)...)
}

// runnerMarker is what the command lines of a pool's runners contain: the
// process provider's work directories, or the example script's state.
func runnerMarker(f *poolFarm, provider, stateDir string) string {
	if provider == "exec" {
		return stateDir + "/"
	}
	return filepath.Join(f.srv.dataDir, "runners") + "/"
}

// TestPoolScalesWithTheQueue: on both databases and with both providers, a
// pool of at most 2 instances given 6 requests for its architecture starts
// exactly 2, which run all 6 and stop after idle_timeout; the runtime the
// public endpoint reports is what the instances' records say; a request
// for an architecture no pool offers starts nothing.
func TestPoolScalesWithTheQueue(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, provider := range []string{"process", "exec"} {
			t.Run(db+"/"+provider, func(t *testing.T) {
				dsn := ""
				if db == "postgres" {
					dsn = testdb.Postgres(t)
				}
				state := filepath.Join(t.TempDir(), "instances")
				f := startPoolFarm(t, dsn)
				marker := runnerMarker(f, provider, state)
				killAll(t, marker)
				f.workspace()
				f.createPool("builders", provider, state, "--max-instances", "2", "--idle-timeout", "1s", "--startup-timeout", "30s")
				stranded := f.submit("s390x", false)
				var ids []int64
				for range 6 {
					ids = append(ids, f.submit(poolArch, true))
				}
				sawBusy := false
				f.until("the six requests to complete", func() bool {
					for _, r := range rows(t, ok(t, f.as, "pool", "instances", "builders").stdout) {
						if r["STATE"] == "busy" && r["TASK"] != "-" && r["AGE"] != "-" && r["WORKER"] != "-" {
							sawBusy = true
						}
					}
					return f.completed(ids...)
				})
				if !sawBusy {
					t.Error("kiln pool instances never showed a busy instance with its task")
				}
				f.until("the instances to stop after idle_timeout", func() bool { return f.live("builders") == 0 })
				all := f.instances("builders", true)
				if len(all) != 2 {
					t.Fatalf("%d instances for 6 requests and --max-instances 2: %v", len(all), all)
				}
				for _, inst := range all {
					if inst["stop_reason"] != "idle_timeout" || inst["connected_at"] == nil {
						t.Errorf("instance %v", inst)
					}
				}
				f.checkRuntime("builders")
				if f.request(stranded)["status"] != "pending" {
					t.Errorf("the s390x request: %v", f.request(stranded))
				}
				if pids := processesWith(marker); len(pids) != 0 {
					t.Errorf("runner processes left after the instances stopped: %v", pids)
				}
				public := metricsText(f.srv.url + "/api/1.0/open-metrics/")
				if !regexp.MustCompile(`(?m)^workers\{.*worker_pool="builders".*\} \d+$`).MatchString(public) {
					t.Errorf("the workers family has no worker_pool series:\n%s", public)
				}
				internal := testpeers.ScrapeText(t, f.metrics)
				testpeers.CheckMetrics(t, internal)
				for _, want := range []string{`kiln_pool_instance_creations_total{result="success",worker_pool="builders"} 2`,
					`kiln_pool_scale_decisions_total{direction="up",reason="backlog",worker_pool="builders"} 2`,
					`kiln_pool_scale_decisions_total{direction="down",reason="idle_timeout",worker_pool="builders"} 2`,
					`kiln_pool_autoscaler_leader 1`} {
					if !strings.Contains(string(internal), want+"\n") {
						t.Errorf("the internal /metrics lacks %s", want)
					}
				}
			})
		}
	}
}

// TestPoolConcurrentInstances: instances that run three requests at once
// (the pool's --concurrent, which the example exec script passes on to
// its runners) take three requests each, so six pending requests start
// two of a pool that could have four.
func TestPoolConcurrentInstances(t *testing.T) {
	state := filepath.Join(t.TempDir(), "instances")
	f := startPoolFarm(t, "")
	killAll(t, runnerMarker(f, "exec", state))
	f.workspace()
	f.createPool("wide", "exec", state, "--concurrent", "3", "--max-instances", "4", "--idle-timeout", "30s",
		"--startup-timeout", "30s")
	var ids []int64
	for range 6 {
		ids = append(ids, f.submit(poolArch, true))
	}
	f.until("the six requests to complete", func() bool { return f.completed(ids...) })
	all := f.instances("wide", true)
	if len(all) != 2 {
		t.Fatalf("%d instances for 6 requests of instances that run 3 at once: %v", len(all), all)
	}
	w := apiJSON(t, f.srv.url, poolAdmin, "GET", "/api/1.0/workers/?name="+all[0]["worker_name"].(string), nil, 200)
	if meta := w["results"].([]any)[0].(map[string]any)["metadata"].(map[string]any); meta["system:concurrent"] != float64(3) {
		t.Errorf("the instance's runner says it runs %v at once, want 3", meta["system:concurrent"])
	}
}

// providerScript writes an exec provider that misbehaves.
func providerScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPoolProviderFailures: providers that fail, hang or answer garbage
// are reported on their pool (kiln pool show) and backed off, and the
// instance records what the executable said; a pool whose budget cannot
// pay for an instance starts none and says so; a healthy pool beside them
// keeps running work.
func TestPoolProviderFailures(t *testing.T) {
	f := startPoolFarm(t, "")
	f.workspace()
	bad := []struct {
		pool, arch, script, timeout, want string
	}{
		{"failing", "fail", `echo "creating instance" >&2; echo "error: quota exceeded for this project" >&2; exit 3`, "20s",
			"exit status 3: creating instance | error: quota exceeded for this project"},
		{"hanging", "hang", `sleep 30`, "1s", "timed out after 1s"},
		{"garbage", "garbage", `echo "Instance started!"`, "20s", `the output is not a JSON object: "Instance started!"`},
	}
	for _, b := range bad {
		ok(t, f.as, "pool", "create", b.pool, "--provider", "exec", "--architectures", b.arch, "--max-instances", "1",
			"--command", providerScript(t, b.script), "--settings", fmt.Sprintf(`{"timeout": %q}`, b.timeout))
		f.submit(b.arch, false)
	}
	ok(t, f.as, "pool", "create", "broke", "--provider", "process", "--architectures", "poor", "--max-instances", "1",
		"--idle-timeout", "2s", "--max-seconds-per-month", "1")
	f.submit("poor", false)
	f.createPool("healthy", "process", "", "--max-instances", "1", "--idle-timeout", "30s")
	good := f.submit(poolArch, true)
	f.until("the healthy pool's request to complete", func() bool { return f.completed(good) })

	for _, b := range bad {
		f.until(b.pool+" to back off", func() bool {
			st := f.status(b.pool)
			return st["failures"].(float64) >= 2 && st["backoff_until"] != nil && strings.Contains(st["last_error"].(string), b.want) &&
				strings.HasPrefix(st["last_decision"].(string), "hold: backoff")
		})
		show := ok(t, f.as, "pool", "show", b.pool).stdout
		if !regexp.MustCompile(`(?m)^STATE:\s+backing off$`).MatchString(show) ||
			!regexp.MustCompile(`(?m)^LAST_DECISION:\s+hold: backoff: after \d+ provider failures in a row`).MatchString(show) {
			t.Errorf("kiln pool show %s does not say it backs off:\n%s", b.pool, show)
		}
		if !strings.Contains(show, b.want) {
			t.Errorf("kiln pool show %s does not show the failure %q:\n%s", b.pool, b.want, show)
		}
		insts := f.instances(b.pool, true)
		if len(insts) == 0 || !strings.Contains(insts[0]["error"].(string), b.want) {
			t.Errorf("the instances of %s do not record the failure: %v", b.pool, insts)
		}
	}
	if insts := f.instances("failing", true); insts[0]["exit_status"] != float64(3) ||
		insts[0]["stderr"] != "creating instance\nerror: quota exceeded for this project" {
		t.Errorf("the failing create's exit status and stderr: %v", insts[0])
	}
	// backed off: a few calls, not one per pass (100 ms)
	time.Sleep(time.Second)
	if n := len(f.instances("failing", true)); n > 3 {
		t.Errorf("%d creates of the failing pool within its backoff", n)
	}

	f.until("the budget to hold the poor pool", func() bool {
		return strings.HasPrefix(f.status("broke")["last_decision"].(string), "hold: budget: 0 s of max_seconds_per_month 1 s")
	})
	if n := len(f.instances("broke", true)); n != 0 {
		t.Errorf("the pool without budget started %d instances", n)
	}
	if !strings.Contains(string(testpeers.ScrapeText(t, f.metrics)),
		`kiln_pool_scale_decisions_total{direction="hold",reason="budget",worker_pool="broke"}`) {
		t.Error("no scale decision counts the budget")
	}
	// the healthy pool still works
	again := f.submit(poolArch, false)
	f.until("the healthy pool to run more work", func() bool { return f.completed(again) })
}

// TestPoolServerKilledAndRestarted: kill -9 of the server while its pools'
// instances run, then a restart on the same address: the process pool's
// runners died with it and are closed when last seen, the exec pool's
// runners lived on and are adopted (they reconnect); none is leaked or
// doubled, and the runtime stays what the records say.
func TestPoolServerKilledAndRestarted(t *testing.T) {
	state := filepath.Join(t.TempDir(), "instances")
	killAll(t, state+"/")
	dataDir := filepath.Join(t.TempDir(), "kiln-data")
	listen := freeAddr(t)
	f := startPoolFarm(t, "", "--listen", listen, "--data-dir", dataDir)
	procMarker, execMarker := filepath.Join(dataDir, "runners")+"/", runnerMarker(f, "exec", state)
	killAll(t, procMarker)
	f.createPool("procs", "process", "", "--min-idle", "2", "--max-instances", "2", "--startup-timeout", "30s")
	ok(t, f.as, "pool", "create", "cloud", "--provider", "exec", "--architectures", "cloudarch", "--min-idle", "2",
		"--max-instances", "2", "--startup-timeout", "30s", "--command", exampleProvider,
		"--settings", fmt.Sprintf(`{"config": {"state_dir": %q, "kiln": %q}, "timeout": "20s"}`, state, kilnBin))
	idle := func(pool string) bool {
		return f.status(pool)["instances"].(map[string]any)["idle"] == float64(2)
	}
	f.until("both pools to have 2 idle instances", func() bool { return idle("procs") && idle("cloud") })
	before := map[string][]map[string]any{"procs": f.instances("procs", false), "cloud": f.instances("cloud", false)}
	if n, m := len(processesWith(procMarker)), len(processesWith(execMarker)); n != 2 || m != 2 {
		t.Fatalf("%d process and %d exec runner processes, want 2 each", n, m)
	}

	killed := time.Now()
	if err := f.srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-f.srv.exited
	f.until("the process pool's runners to die with the server", func() bool { return len(processesWith(procMarker)) == 0 })
	if m := len(processesWith(execMarker)); m != 2 {
		t.Fatalf("%d exec runners after the server died, want the 2 that live on", m)
	}
	time.Sleep(500 * time.Millisecond) // down for a while

	f = startPoolFarm(t, "", "--listen", listen, "--data-dir", dataDir)
	f.until("both pools to have 2 idle instances again", func() bool { return idle("procs") && idle("cloud") })
	// the exec instances were adopted: the same ones, connected again
	after := f.instances("cloud", false)
	for i := range after {
		if after[i]["id"] != before["cloud"][i]["id"] {
			t.Errorf("exec instances %v after the restart, want the adopted %v", after, before["cloud"])
		}
	}
	// the process instances were lost and replaced; their runtime ends
	// when they were last seen, before the kill
	for _, inst := range f.instances("procs", true) {
		for _, old := range before["procs"] {
			if inst["id"] != old["id"] {
				continue
			}
			stopped, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(inst["stopped_at"]))
			if inst["stop_reason"] != "lost" || stopped.After(killed) {
				t.Errorf("a process instance of the killed server: %v (killed at %s)", inst, killed.Format(time.RFC3339Nano))
			}
		}
	}
	if n, m := len(processesWith(procMarker)), len(processesWith(execMarker)); n != 2 || m != 2 {
		t.Errorf("%d process and %d exec runner processes after the restart, want 2 each (none leaked, none doubled)", n, m)
	}
	f.checkRuntime("procs")
	f.checkRuntime("cloud")
}

// TestPoolAutoscalerTakeover: two servers on one PostgreSQL database; one
// acts as the autoscaler, the other waits; kill -9 the one that acts and
// the other takes over: it closes the dead server's runners as lost and
// starts its own for new work.
func TestPoolAutoscalerTakeover(t *testing.T) {
	dsn := testdb.Postgres(t)
	a := startPoolFarm(t, dsn)
	b := startPoolFarm(t, dsn)
	killAll(t, runnerMarker(a, "process", ""))
	killAll(t, runnerMarker(b, "process", ""))
	leader := func(f *poolFarm) bool {
		return strings.Contains(metricsText(f.metrics), "\nkiln_pool_autoscaler_leader 1\n")
	}
	a.until("one server to act", func() bool { return leader(a) != leader(b) })
	acting, waiting := a, b
	if leader(b) {
		acting, waiting = b, a
	}
	time.Sleep(300 * time.Millisecond) // several passes: still one
	if leader(acting) == leader(waiting) {
		t.Fatal("both servers act, or neither")
	}
	acting.workspace()
	acting.createPool("shared", "process", "", "--max-instances", "1", "--idle-timeout", "30s", "--startup-timeout", "30s")
	first := acting.submit(poolArch, false)
	acting.until("the acting server's runner to run the first request", func() bool { return acting.completed(first) })
	if n := len(processesWith(runnerMarker(acting, "process", ""))); n != 1 {
		t.Fatalf("%d runners of the acting server", n)
	}

	if err := acting.srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-acting.srv.exited
	waiting.until("the other server to take over", func() bool { return leader(waiting) })
	second := waiting.submit(poolArch, false)
	waiting.until("the new acting server's runner to run the second request", func() bool { return waiting.completed(second) })
	all := waiting.instances("shared", true)
	if len(all) != 2 || all[0]["stop_reason"] != "lost" || all[1]["stopped_at"] != nil {
		t.Errorf("instances after the takeover: %v", all)
	}
	if n := len(processesWith(runnerMarker(acting, "process", ""))); n != 0 {
		t.Errorf("%d runners of the killed server live on", n)
	}
	if n := len(processesWith(runnerMarker(waiting, "process", ""))); n != 1 {
		t.Errorf("%d runners of the acting server, want 1", n)
	}
	waiting.checkRuntime("shared")
}
