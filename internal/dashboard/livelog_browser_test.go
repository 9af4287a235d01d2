package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/runner"
	"github.com/kiln-build/kiln/internal/server"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBrowserFollowsALiveLog runs a real kiln server and a real runner in
// this process, gives the runner a command that writes a line, waits for a
// signal and writes another, and watches the work request's page: the
// first line appears while the request runs, the second joins it without a
// reload, and when the request ends the page reads the stored log.
func TestBrowserFollowsALiveLog(t *testing.T) {
	url := startServer(t, testdb.SQLite(t))
	followLiveLog(t, url, url)
}

// TestBrowserFollowsALiveLogThroughAnotherReplica: the same with two
// server replicas on one PostgreSQL database, the runner connected to one
// and the browser to the other, as behind a load balancer. The page
// follows the log while the task runs, through the replica that does not
// hear from the runner.
func TestBrowserFollowsALiveLogThroughAnotherReplica(t *testing.T) {
	db := testdb.Postgres(t)
	// the first migrates and bootstraps the database, then the second
	// starts on it
	browsed := startServer(t, db)
	streamed := startServer(t, db)
	followLiveLog(t, browsed, streamed)
}

// startServer runs a kiln server on database db until the test ends and
// returns its URL.
func startServer(t *testing.T, db string) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	started := make(chan server.Addresses, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{Listen: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), "data"),
			Database: db, BootstrapToken: adminSecret, ClaimInterval: 100 * time.Millisecond,
			Started: func(a server.Addresses) { started <- a }}, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case a := <-started:
		return a.API
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}
	return ""
}

// followLiveLog sets up a farm through the server at url, starts a
// runner connected to the server at runnerURL, and watches the page of
// its running request through url.
func followLiveLog(t *testing.T, url, runnerURL string) {
	dir := t.TempDir()
	call := func(method, path string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, url+path, strings.NewReader(string(b)))
		req.Header.Set("Authorization", "Token "+adminSecret)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		got, _ := io.ReadAll(res.Body)
		if res.StatusCode != 201 {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, got)
		}
		if out != nil {
			if err := json.Unmarshal(got, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	call("POST", "/api/1.0/scopes/", map[string]any{"name": "debian"}, nil)
	call("POST", "/api/1.0/workspaces/", map[string]any{"name": "main", "scope": "debian", "public": true}, nil)
	var worker struct {
		Token struct{ Secret string }
	}
	call("POST", "/api/1.0/workers/", map[string]any{"name": "live-runner"}, &worker)
	rctx, stopRunner := context.WithCancel(context.Background())
	runnerDone := make(chan error, 1)
	go func() {
		runnerDone <- runner.Run(rctx, runner.Config{Server: runnerURL, Token: worker.Token.Secret, WorkDir: filepath.Join(dir, "runner"),
			Architectures: []string{"amd64"}, HostArchitecture: "amd64", MaxBackoff: time.Second, ShutdownGrace: time.Second})
	}()
	t.Cleanup(func() {
		stopRunner()
		if err := <-runnerDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("runner: %v", err)
		}
	})

	signal := filepath.Join(dir, "go-on")
	var wr struct{ ID int64 }
	call("POST", "/api/1.0/work-requests/", map[string]any{"task_type": "Worker", "task_name": "command", "workspace": "debian/main",
		"task_data": map[string]any{"host_architecture": "amd64", "backend": "host",
			"script": "echo first line; while [ ! -e " + signal + " ]; do sleep 0.05; done; echo second line"}}, &wr)

	tb := newTab(t)
	page := url + "/work-requests/" + itoa(wr.ID) + "/"
	// the page of a request that has not started yet follows it too
	tb.open(page, 200)
	tb.waitFor("the first line, live", `document.getElementById("log").textContent.endsWith("\nfirst line\n")`)
	if got := tb.text("#log-state"); !strings.Contains(got, "Following") {
		t.Fatalf("log state %q while the request runs", got)
	}
	live := tb.text("#log")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tb.waitFor("the second line, without a reload", `document.getElementById("log").textContent.includes("\nsecond line\n")`)
	tb.waitFor("the stored log", `document.getElementById("log-state").textContent.startsWith("The whole log")`)
	// the page shows the stored log whole, each byte once, and what it
	// showed live was its beginning
	res, err := http.Get(url + "/work-requests/" + itoa(wr.ID) + "/logs/")
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got := tb.text("#log"); got != string(stored) || !strings.HasPrefix(got, live) {
		t.Fatalf("the page shows %q; stored: %q; live: %q", got, stored, live)
	}
}
