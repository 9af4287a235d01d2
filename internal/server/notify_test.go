package server

import (
	"context"
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

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
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
		status := rc.status
		rc.mu.Unlock()
		w.WriteHeader(status)
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
		NotifyURLs: []string{good.url, bad.url}, notifyRetry: 10 * time.Millisecond})
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

	// The failing receiver: notifyAttempts attempts, then counted as
	// failed and given up; the good one got it once.
	bad.wait(t, notifyAttempts)
	waitFor(t, 15*time.Second, "the failed delivery to be counted", func() bool {
		v, _ := scrape(t, r.Metrics)["kiln_notify_failed_total"].get("")
		return v == 1
	})
	fams := scrape(t, r.Metrics)
	for _, name := range []string{"kiln_notify_dropped_total", "kiln_notify_queue_length"} {
		want := map[string]float64{"kiln_notify_dropped_total": 1, "kiln_notify_queue_length": 0}[name]
		if v, _ := fams[name].get(""); v != want {
			t.Errorf("%s %v, want %v", name, v, want)
		}
	}
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
	for _, d := range append(bad.deliveries(), good.deliveries()...) {
		if id := d.header.Get("X-Kiln-Delivery"); id == "" || id != bad.deliveries()[0].header.Get("X-Kiln-Delivery") {
			t.Errorf("the attempts of one notification have delivery ids %q and %q", id, bad.deliveries()[0].header.Get("X-Kiln-Delivery"))
		}
	}
}

// outboxFarm is a database with notifications kept, and a workspace to
// finish work requests in, as a replica's store would be.
type outboxFarm struct {
	dsn string
	st  *store.SQL
	ws  int64
}

func newOutboxFarm(t *testing.T, dsn string) *outboxFarm {
	ctx := context.Background()
	st := openOutbox(t, dsn)
	if _, err := st.Bootstrap(ctx, "kiln_notify_outbox_admin", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sc := &model.Scope{Name: "debian"}
	if err := st.Scopes().Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	ws := &model.Workspace{Name: "main", ScopeID: sc.ID}
	if err := st.Workspaces().Create(ctx, ws); err != nil {
		t.Fatal(err)
	}
	return &outboxFarm{dsn: dsn, st: st, ws: ws.ID}
}

// openOutbox opens the database as one more replica's store.
func openOutbox(t *testing.T, dsn string) *store.SQL {
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.KeepNotifications(encodeNotification)
	return st
}

// finish submits and aborts a work request: its notification is written.
func (f *outboxFarm) finish(t *testing.T) int64 {
	t.Helper()
	ctx := context.Background()
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ws, Data: json.RawMessage(`{"host_architecture": "amd64"}`)}
	if err := f.st.SubmitWorkRequest(ctx, wr); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.AbortWorkRequest(ctx, wr.ID, "test", nil); err != nil {
		t.Fatal(err)
	}
	return wr.ID
}

// replica starts a delivery loop on a store of its own, stopped at the
// test's end (or before, by calling the result).
func (f *outboxFarm) replica(t *testing.T, urls ...string) (*notifier, func()) {
	n := newNotifier(openOutbox(t, f.dsn), Config{NotifyURLs: urls, notifyRetry: 20 * time.Millisecond}, &http.Client{Timeout: notifyTimeout},
		slog.New(slog.DiscardHandler))
	stop := n.start(context.Background())
	t.Cleanup(stop)
	return n, stop
}

// byDelivery counts a receiver's deliveries by X-Kiln-Delivery, checking
// that each names the work request its body carries the same way.
func byDelivery(t *testing.T, rc *receiver) map[string][]int64 {
	t.Helper()
	got := map[string][]int64{}
	for _, d := range rc.deliveries() {
		var n struct {
			WorkRequest struct {
				ID int64 `json:"id"`
			} `json:"work_request"`
		}
		if err := json.Unmarshal(d.body, &n); err != nil {
			t.Fatal(err)
		}
		id := d.header.Get("X-Kiln-Delivery")
		got[id] = append(got[id], n.WorkRequest.ID)
	}
	return got
}

// TestNotifyReplicasDeliverOnce: two replicas' delivery loops on one
// PostgreSQL database, with notifications written before and while they
// run, deliver each notification once between them when the receiver is
// healthy, and leave the outbox empty.
func TestNotifyReplicasDeliverOnce(t *testing.T) {
	f := newOutboxFarm(t, testdb.Postgres(t))
	rc := newReceiver(t, http.StatusNoContent)
	const total = 30
	for range total / 2 {
		f.finish(t)
	}
	a, _ := f.replica(t, rc.url)
	f.st.OnFinish(func(model.WorkRequest) { a.nudge() })
	f.replica(t, rc.url)
	for range total / 2 {
		f.finish(t)
	}
	rc.wait(t, total)
	waitFor(t, 10*time.Second, "an empty outbox", func() bool {
		n, err := f.st.PendingNotifications(context.Background())
		return err == nil && n == 0
	})
	got := byDelivery(t, rc)
	seen := map[int64]bool{}
	for id, wrs := range got {
		if len(wrs) != 1 {
			t.Errorf("delivery %s sent %d times", id, len(wrs))
		}
		seen[wrs[0]] = true
	}
	if len(rc.deliveries()) != total || len(seen) != total {
		t.Errorf("%d deliveries of %d work requests, want %d of %d", len(rc.deliveries()), len(seen), total, total)
	}
}

// TestNotifyReceiverComesBack: a receiver that is down at first gets the
// notification once it is back, under the delivery id of every attempt,
// and nothing is given up.
func TestNotifyReceiverComesBack(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newOutboxFarm(t, dsn)
		rc := newReceiver(t, http.StatusServiceUnavailable)
		n, _ := f.replica(t, rc.url)
		wr := f.finish(t)
		n.nudge()
		rc.wait(t, 3)
		rc.mu.Lock()
		rc.status = http.StatusOK
		rc.mu.Unlock()
		waitFor(t, 10*time.Second, "the delivery once the receiver is back", func() bool {
			n, err := f.st.PendingNotifications(context.Background())
			return err == nil && n == 0
		})
		got := byDelivery(t, rc)
		if len(got) != 1 {
			t.Fatalf("delivery ids %v, want one for every attempt", got)
		}
		for _, wrs := range got {
			if wrs[0] != wr {
				t.Errorf("notified %d, want %d", wrs[0], wr)
			}
		}
		if testutil.ToFloat64(n.dropped) != 0 || testutil.ToFloat64(n.failed) != 0 {
			t.Errorf("given up %v, failed %v", testutil.ToFloat64(n.dropped), testutil.ToFloat64(n.failed))
		}
	})
}

// TestNotifyAfterReplicaDies: notifications a replica committed and never
// sent, or claimed and died with, are delivered by another replica — the
// claimed one once its lease ran out.
func TestNotifyAfterReplicaDies(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newOutboxFarm(t, dsn)
		rc := newReceiver(t, http.StatusNoContent)
		claimed, unsent := f.finish(t), f.finish(t)
		// the dead replica had claimed the first one
		got, err := f.st.ClaimNotifications(context.Background(), "dead-replica", 300*time.Millisecond, 1)
		if err != nil || len(got) != 1 || got[0].WorkRequestID != claimed {
			t.Fatalf("the dead replica's claim: %+v %v", got, err)
		}
		f.replica(t, rc.url)
		rc.wait(t, 2)
		delivered := byDelivery(t, rc)
		if len(delivered) != 2 || len(delivered[strconv.FormatInt(got[0].ID, 10)]) != 1 {
			t.Fatalf("deliveries %v, want the dead replica's claim (notification %d) and work request %d", delivered, got[0].ID, unsent)
		}
	})
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
