package server

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"

	"github.com/kiln-build/kiln/internal/testkit"
)

// syncBuffer collects output written from several goroutines.
type syncBuffer = testkit.Buffer

// running is a server started by start.
type running struct {
	Addresses
	out, log *syncBuffer
	stop     func() error
}

// start runs a server with cfg (port 0 unless set) in the background and
// waits until it accepts connections. The server is stopped at the end of
// the test if the test did not stop it.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	r := &running{out: &syncBuffer{}, log: &syncBuffer{}}
	cfg.Out = r.out
	started := make(chan Addresses, 1)
	cfg.Started = func(a Addresses) { started <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- Run(ctx, cfg, logger) }()
	var once sync.Once
	var stopErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = errors.New("server did not stop within 20s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = r.stop() })
	select {
	case r.Addresses = <-started:
	case err := <-done:
		t.Fatalf("server failed to start: %v\nlog:\n%s", err, r.log)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start within 30s")
	}
	return r
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func readToken(t *testing.T, dataDir string) string {
	t.Helper()
	path := filepath.Join(dataDir, AdminTokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %o, want 600", path, mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestRunFirstStart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "nested", "data")
	r := start(t, Config{DataDir: dataDir})

	fi, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o750 {
		t.Errorf("data directory has mode %o, want 750", mode)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "kiln.db")); err != nil {
		t.Errorf("no SQLite database in the data directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "files")); err != nil {
		t.Errorf("no local file store in the data directory: %v", err)
	}
	secret := readToken(t, dataDir)
	if !strings.HasPrefix(secret, "kiln_") {
		t.Errorf("admin token %q does not look generated", secret)
	}

	for _, probe := range []string{"/-/healthy", "/-/ready"} {
		if code, body := get(t, r.API+probe, ""); code != 200 {
			t.Errorf("GET %s = %d %s", probe, code, body)
		}
	}
	if code, body := get(t, r.API+"/api/1.0/users/", secret); code != 200 || !strings.Contains(body, `"admin"`) {
		t.Errorf("admin token does not work: %d %s", code, body)
	}
	if code, _ := get(t, r.API+"/api/1.0/users/", "kiln_wrong"); code != 401 {
		t.Errorf("wrong token answered %d, want 401", code)
	}
	// The internal listener's routes never appear on the public port.
	for _, p := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
		if code, _ := get(t, r.API+p, secret); code != 404 {
			t.Errorf("GET %s on the public port = %d, want 404", p, code)
		}
	}

	out := r.out.String()
	for _, want := range []string{
		"kiln server listening on " + r.API,
		"Dashboard: " + r.API + "/ (in a browser",
		"its token is in " + filepath.Join(dataDir, AdminTokenFile),
		"export KILN_SERVER=" + r.API + " KILN_TOKEN=$(cat " + filepath.Join(dataDir, AdminTokenFile) + ")",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up message lacks %q:\n%s", want, out)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for name, text := range map[string]string{"output": out, "log": r.log.String()} {
		if strings.Contains(text, secret) {
			t.Errorf("the admin secret appears in the %s", name)
		}
	}
	if !strings.Contains(r.log.String(), "kiln server stopped") {
		t.Errorf("no clean stop in the log:\n%s", r.log)
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminTokenFile+".new")); !os.IsNotExist(err) {
		t.Errorf("temporary token file left behind: %v", err)
	}
}

func TestRunSecondStartKeepsToken(t *testing.T) {
	dataDir := t.TempDir()
	r := start(t, Config{DataDir: dataDir})
	first := readToken(t, dataDir)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	r = start(t, Config{DataDir: dataDir, BootstrapToken: "kiln_ignored_on_second_start_0123456789"})
	if got := readToken(t, dataDir); got != first {
		t.Error("the second start replaced the admin token")
	}
	if code, _ := get(t, r.API+"/api/1.0/users/", first); code != 200 {
		t.Errorf("first token after restart: %d", code)
	}
	if code, _ := get(t, r.API+"/api/1.0/users/", "kiln_ignored_on_second_start_0123456789"); code != 401 {
		t.Errorf("bootstrap token of a second start was accepted: %d", code)
	}
	out := r.out.String()
	if strings.Contains(out, "First start") {
		t.Errorf("second start claims to be the first:\n%s", out)
	}
	if !strings.Contains(out, BootstrapTokenEnv+" ignored") || !strings.Contains(out, "KILN_TOKEN=$(cat ") {
		t.Errorf("second start does not explain the token:\n%s", out)
	}
}

func TestRunBootstrapToken(t *testing.T) {
	const secret = "kiln_automation_secret_0123456789abcdef"
	dataDir := t.TempDir()
	r := start(t, Config{DataDir: dataDir, BootstrapToken: secret})
	if code, body := get(t, r.API+"/api/1.0/users/", secret); code != 200 {
		t.Errorf("bootstrap token does not work: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(dataDir, AdminTokenFile)); !os.IsNotExist(err) {
		t.Errorf("admin-token file written although %s was set: %v", BootstrapTokenEnv, err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if out := r.out.String(); !strings.Contains(out, "token from "+BootstrapTokenEnv) ||
		!strings.Contains(out, `KILN_TOKEN="$`+BootstrapTokenEnv+`"`) {
		t.Errorf("start-up message:\n%s", out)
	}
	if strings.Contains(r.out.String()+r.log.String(), secret) {
		t.Error("the bootstrap secret was printed or logged")
	}
}

func TestRunMetricsServer(t *testing.T) {
	dataDir := t.TempDir()
	r := start(t, Config{DataDir: dataDir, MetricsServer: "127.0.0.1:0"})
	if r.Metrics == "" || r.Metrics == r.API {
		t.Fatalf("metrics address %q (API %q)", r.Metrics, r.API)
	}
	secret := readToken(t, dataDir)
	if code, _ := get(t, r.API+"/api/1.0/scopes/", secret); code != 200 {
		t.Fatalf("GET scopes = %d", code)
	}
	get(t, r.API+"/api/1.0/scopes/12345/", secret)
	get(t, r.API+"/no/such/path", "")
	get(t, r.API+"/-/ready", "")

	code, body := get(t, r.Metrics+"/metrics", "")
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`kiln_http_requests_total{code="200",method="get",route="GET /api/1.0/scopes/{$}"} 1`,
		`kiln_http_requests_total{code="404",method="get",route="GET /api/1.0/scopes/{id}/{$}"} 1`,
		`kiln_http_requests_total{code="404",method="get",route="unmatched"} 1`,
		"kiln_build_info{",
		"go_goroutines",
		"process_cpu_seconds_total",
		"go_sql_open_connections",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `route="GET /-/ready"`) {
		t.Error("readiness probes are counted as API requests")
	}
	if code, _ := get(t, r.Metrics+"/debug/pprof/", ""); code != 200 {
		t.Errorf("pprof on the internal listener = %d", code)
	}
	if code, _ := get(t, r.Metrics+"/-/healthy", ""); code != 200 {
		t.Errorf("healthy on the internal listener = %d", code)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(r.Metrics + "/metrics"); err == nil {
		t.Error("the metrics listener still answers after shutdown")
	}
}

func TestRunConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative local runners", Config{LocalRunners: -1}, "must be 0 or more"},
		{"empty port", Config{Listen: "127.0.0.1:"}, "missing port"},
		{"no port", Config{Listen: "localhost"}, "want host:port"},
		{"busy port", Config{Listen: busy.Addr().String()}, "address already in use"},
		{"bad metrics address", Config{MetricsServer: "localhost:"}, "--metrics-server"},
		{"local runners' metrics on port 0", Config{LocalRunners: 1, LocalRunnersMetricsServer: "127.0.0.1:0"}, "--local-runners-metrics-server: port 0 is not allowed"},
		{"local runners' metrics past 65535", Config{LocalRunners: 3, LocalRunnersMetricsServer: ":65534"}, "--local-runners-metrics-server: 3 runners from port 65534"},
		{"local runners' metrics on the server's", Config{LocalRunners: 2, MetricsServer: "127.0.0.1:9301", LocalRunnersMetricsServer: "127.0.0.1:9300"},
			"a local runner would listen on 127.0.0.1:9301, where the server itself listens"},
		{"short bootstrap token", Config{BootstrapToken: "short"}, "too short"},
		{"bootstrap token with space", Config{BootstrapToken: "kiln_0123456789 abcdef"}, "spaces"},
		{"bad database", Config{Database: "postgres://127.0.0.1:1/x?connect_timeout=1"}, "database postgres://127.0.0.1:1/x"},
		{"unknown excluded route", Config{HTTPExcludeRoutes: []string{"GET /api/1.0/open-metrics/"}},
			`--http-exclude-routes: no route has the pattern "GET /api/1.0/open-metrics/"`},
		{"reports without a target", Config{ReportInterval: time.Hour}, "--report-target: give where reports go"},
		{"a report target without an interval", Config{ReportTarget: "/tmp/r.json"}, "--report-interval: give how often"},
		{"reports every millisecond", Config{ReportInterval: time.Millisecond, ReportTarget: "/tmp/r.json"}, "--report-interval: must be at least 1m0s"},
		{"a report window too long", Config{ReportInterval: time.Hour, ReportTarget: "/tmp/r.json", ReportWindow: "999d"},
			"--report-window: window must be a number of days from 1d to 366d"},
		{"reports to an http URL", Config{ReportInterval: time.Hour, ReportTarget: "http://example.com/r.json"},
			"--report-target: http:// is not a kind of report target"},
		{"reports to a missing directory", Config{ReportInterval: time.Hour, ReportTarget: "/nonexistent/kiln/r.json"},
			"--report-target: the directory /nonexistent/kiln of the report does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.Listen == "" {
				cfg.Listen = "127.0.0.1:0"
			}
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			err := Run(context.Background(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// failingStore is a store whose database does not answer.
type failingStore struct{ store.Store }

func (failingStore) Ping(context.Context) error { return errors.New("connection refused") }

func TestReadyWhenDatabaseIsDown(t *testing.T) {
	rec := httptest.NewRecorder()
	ready(failingStore{}, localBus(t), slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("ready with a dead database = %d, want 503", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "connection refused") {
		t.Error("the readiness answer leaks the database error")
	}
}

// localBus is the signal bus of a SQLite server, for handlers built
// without Run.
func localBus(t testing.TB) *signal.Bus {
	t.Helper()
	b, err := signal.NewLocal(signal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadyWhenSignalsAreDown: a replica on PostgreSQL whose signal
// connection is down still answers the API, but is not ready: its
// runners would wait for the next poll for work submitted elsewhere. The
// test cuts the connection from the database side, over and over so that
// the bus spends most of its time reconnecting, until the probe says so;
// then lets it come back, and the probe says ready again.
func TestReadyWhenSignalsAreDown(t *testing.T) {
	dsn := testdb.Postgres(t)
	r := start(t, Config{Database: dsn, BootstrapToken: "kiln_signals_bootstrap_0123456789abcdef"})
	if code, body := get(t, r.API+"/-/ready", ""); code != 200 {
		t.Fatalf("ready = %d %s", code, body)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, signal.ApplicationName); err != nil {
			t.Fatal(err)
		}
		code, body := get(t, r.API+"/-/ready", "")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "signal connection") {
				t.Fatalf("not ready, but for another reason: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe never said not-ready while the signal connection was being cut")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for code, body := get(t, r.API+"/-/ready", ""); code != 200; code, body = get(t, r.API+"/-/ready", "") {
		if time.Now().After(deadline) {
			t.Fatalf("still not ready once the connection was left alone: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, r.API+"/-/healthy", ""); code != 200 {
		t.Fatalf("healthy = %d: a replica without signals is alive", code)
	}
}

func TestRunPostgres(t *testing.T) {
	dsn := testdb.Postgres(t)
	const secret = "kiln_postgres_bootstrap_0123456789abcdef"
	r := start(t, Config{Database: dsn, BootstrapToken: secret})
	if code, body := get(t, r.API+"/-/ready", ""); code != 200 {
		t.Errorf("ready = %d %s", code, body)
	}
	if code, body := get(t, r.API+"/api/1.0/users/", secret); code != 200 {
		t.Errorf("bootstrap token on PostgreSQL: %d %s", code, body)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://kiln:s3cret@db:5432/kiln?sslmode=disable": "postgres://kiln:xxxxx@db:5432/kiln?sslmode=disable",
		"postgres://kiln@db/kiln":                             "postgres://kiln@db/kiln",
		"postgres://db/kiln":                                  "postgres://db/kiln",
		"kiln-data/kiln.db":                                   "kiln-data/kiln.db",
		"postgres://u:p@ss@db/kiln":                           "postgres://u:xxxxx@db/kiln",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"kiln-data/admin-token":  "kiln-data/admin-token",
		"/srv/my data/token":     "'/srv/my data/token'",
		"it's":                   `'it'\''s'`,
		"/tmp/$HOME/admin-token": "'/tmp/$HOME/admin-token'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
