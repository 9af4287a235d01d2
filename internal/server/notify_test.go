package server

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
)

// receiver is a notification endpoint of a test.
type receiver struct {
	url    string
	mu     sync.Mutex
	got    []delivery
	status int
}

type delivery struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status int) *receiver {
	rc := &receiver{status: status}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{r.Header.Clone(), b})
		rc.mu.Unlock()
		w.WriteHeader(rc.status)
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL + "/hook?token=secret-in-query"
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) wait(t *testing.T, n int) []delivery {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%d notifications", n), func() bool { return len(rc.deliveries()) >= n })
	return rc.deliveries()
}

// TestNotifyOnFinish: a finished work request is POSTed, signed, to every
// --notify-url; a receiver that fails is retried, then given up on, and
// all of it is counted by service and outcome.
func TestNotifyOnFinish(t *testing.T) {
	const (
		token  = "kiln_notify_test_admin_token"
		secret = "kiln-notify-test-webhook-secret"
	)
	good, bad := newReceiver(t, http.StatusNoContent), newReceiver(t, http.StatusBadGateway)
	r := start(t, Config{MetricsServer: "127.0.0.1:0", BootstrapToken: token, WebhookSecret: secret,
		NotifyURLs: []string{good.url, bad.url}})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	id := mustPost(t, r.API+"/api/1.0/work-requests/", token,
		`{"task_type": "Worker", "task_name": "noop", "workspace": "debian/main", "task_data": {"host_architecture": "riscv64", "secret": "not sent"}}`)
	if code, body := request(t, http.MethodPost, fmt.Sprintf("%s/api/1.0/work-requests/%d/abort/", r.API, id), asAdmin(token), `{"reason": "test"}`); code != 200 {
		t.Fatalf("abort: %d %s", code, body)
	}

	d := good.wait(t, 1)[0]
	if got := d.header.Get("X-Kiln-Event"); got != NotifyEvent {
		t.Errorf("X-Kiln-Event %q", got)
	}
	// kiln's own scheme: the signature covers the timestamp and the
	// delivery id, so that the receiver can refuse replays
	ts, err := strconv.ParseInt(d.header.Get("X-Kiln-Timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("X-Kiln-Timestamp %q", d.header.Get("X-Kiln-Timestamp"))
	}
	if got, want := d.header.Get("X-Kiln-Signature-256"), api.SignEvent(secret, time.Unix(ts, 0), d.header.Get("X-Kiln-Delivery"), d.body); got != want {
		t.Errorf("signature %q, want %q", got, want)
	}
	if d.header.Get("Content-Type") != "application/json" || d.header.Get("X-Kiln-Delivery") == "" {
		t.Errorf("headers %v", d.header)
	}
	var n struct {
		Event       string `json:"event"`
		WorkRequest struct {
			ID       int64  `json:"id"`
			Status   string `json:"status"`
			TaskName string `json:"task_name"`
		} `json:"work_request"`
	}
	if err := json.Unmarshal(d.body, &n); err != nil {
		t.Fatal(err)
	}
	if n.Event != NotifyEvent || n.WorkRequest.ID != id || n.WorkRequest.Status != "aborted" || n.WorkRequest.TaskName != "noop" {
		t.Errorf("notification %s", d.body)
	}
	if strings.Contains(string(d.body), "not sent") {
		t.Error("the notification carries the task data")
	}

	// The failing receiver: three attempts, then counted as failed.
	bad.wait(t, notifyAttempts)
	waitFor(t, 15*time.Second, "the failed delivery to be counted", func() bool {
		v, _ := scrape(t, r.Metrics)["kiln_notify_failed_total"].get("")
		return v == 1
	})
	fams := scrape(t, r.Metrics)
	if v, _ := fams["kiln_outgoing_requests_total"].get("outcome=success,service=notify"); v != 1 {
		t.Errorf("successful notifications %v, want 1", v)
	}
	if v, _ := fams["kiln_outgoing_requests_total"].get("outcome=http_5xx,service=notify"); v != notifyAttempts {
		t.Errorf("failed notification attempts %v, want %d", v, notifyAttempts)
	}
	if v, _ := fams["kiln_outgoing_request_duration_seconds"].get("outcome=success,service=notify"); v != 1 {
		t.Errorf("notification durations observed %v, want 1", v)
	}
	if len(bad.deliveries()) != notifyAttempts {
		t.Errorf("the failing receiver got %d attempts", len(bad.deliveries()))
	}
	// retries are the same delivery, so that a receiver can tell them
	for _, d := range bad.deliveries() {
		if id := d.header.Get("X-Kiln-Delivery"); id == "" || id != bad.deliveries()[0].header.Get("X-Kiln-Delivery") {
			t.Errorf("the attempts of one notification have delivery ids %q and %q", id, bad.deliveries()[0].header.Get("X-Kiln-Delivery"))
		}
	}
}

// TestNotifyQueueIsBounded: when the receiver cannot keep up, the hook
// drops and counts instead of blocking the transaction that finished the
// request.
func TestNotifyQueueIsBounded(t *testing.T) {
	n := &notifier{queue: make(chan []byte, 2), dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "d", Help: "d"}),
		logger: slog.New(slog.DiscardHandler)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			n.hook(model.WorkRequest{ID: int64(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the hook blocked on a full queue")
	}
	if len(n.queue) != 2 || testutil.ToFloat64(n.dropped) != 3 {
		t.Errorf("queued %d, dropped %v; want 2 and 3", len(n.queue), testutil.ToFloat64(n.dropped))
	}
}

func TestNotifyConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{NotifyURLs: []string{"ftp://example.org/"}}, "--notify-url"},
		{Config{NotifyURLs: []string{"example.org/hook"}}, "--notify-url"},
		{Config{WebhookSecret: "short"}, "--webhook-secret is too short"},
	} {
		cfg := c.cfg
		if err := checkConfig(&cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("checkConfig(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if got := redactURL("https://user:pw@hooks.example.org/x?token=abc"); got != "https://hooks.example.org/x?%E2%80%A6" && got != "https://hooks.example.org/x?…" {
		t.Errorf("redactURL = %q", got)
	}
}
