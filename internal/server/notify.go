package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// Notification delivery, tuned for a receiver that may be slow or down
// without ever holding up the server: a bounded queue (what does not fit is
// dropped and counted), a timeout per attempt, a few attempts.
const (
	notifyQueueSize = 1024
	notifyTimeout   = 10 * time.Second
	notifyAttempts  = 3
	// notifyDrain bounds how long a stopping server keeps delivering what
	// is still queued.
	notifyDrain = 5 * time.Second
)

// NotifyEvent is the event type of kiln's notifications, in the
// X-Kiln-Event header and the body's "event".
const NotifyEvent = "work_request.finished"

// notifyService labels notifications in kiln_outgoing_requests_total.
const notifyService = "notify"

// notification is the JSON body POSTed to every --notify-url when a work
// request finishes. It carries no task data, which may hold what its
// submitter would not want sent elsewhere.
type notification struct {
	Event       string              `json:"event"`
	SentAt      time.Time           `json:"sent_at"`
	WorkRequest notifiedWorkRequest `json:"work_request"`
}

type notifiedWorkRequest struct {
	ID          int64          `json:"id"`
	TaskType    model.TaskType `json:"task_type"`
	TaskName    string         `json:"task_name"`
	Workspace   int64          `json:"workspace"`
	Status      model.Status   `json:"status"`
	Result      model.Result   `json:"result"`
	CreatedAt   time.Time      `json:"created_at"`
	StartedAt   *time.Time     `json:"started_at"`
	CompletedAt *time.Time     `json:"completed_at"`
	Worker      *int64         `json:"worker"`
	Parent      *int64         `json:"parent"`
}

// checkNotifyURL refuses a --notify-url that cannot be POSTed to.
func checkNotifyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--notify-url %q: want an http:// or https:// URL", s)
	}
	return nil
}

// notifier sends a notification for every work request this process
// finishes (store.OnFinish) to every --notify-url, in the background.
type notifier struct {
	urls    []string
	secret  string
	client  *http.Client
	logger  *slog.Logger
	queue   chan []byte
	dropped prometheus.Counter
	failed  prometheus.Counter
}

// startNotifier hooks the notifier into the store and starts its sender.
// It must run before the store is shared (OnFinish). The returned stop
// delivers what is queued for up to notifyDrain, then returns; it is safe
// to call once. Without --notify-url it does nothing.
func startNotifier(ctx context.Context, st store.Store, reg prometheus.Registerer, out *telemetry.OutgoingMetrics, cfg Config, logger *slog.Logger) (stop func(), err error) {
	if len(cfg.NotifyURLs) == 0 {
		return func() {}, nil
	}
	n := &notifier{
		urls:   cfg.NotifyURLs,
		secret: cfg.WebhookSecret,
		client: &http.Client{Timeout: notifyTimeout, Transport: out.RoundTripper(notifyService, nil)},
		logger: logger.With("component", "notify"),
		queue:  make(chan []byte, notifyQueueSize),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_notify_dropped_total",
			Help: "Notifications of finished work requests dropped because the queue was full.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_notify_failed_total",
			Help: "Notifications not delivered to a --notify-url after every attempt.",
		}),
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kiln_notify_queue_length",
		Help: "Notifications of finished work requests waiting to be sent.",
	}, func() float64 { return float64(len(n.queue)) })
	for _, c := range []prometheus.Collector{n.dropped, n.failed, queued} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	st.OnFinish(n.hook)

	// Stopping lets the sender finish what is queued; notifyDrain later,
	// whatever is still in flight is cancelled.
	deliverCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopping := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.run(deliverCtx, stopping)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stopping)
			t := time.AfterFunc(notifyDrain, cancel)
			<-done
			t.Stop()
			cancel()
		})
	}, nil
}

// hook queues a notification; it never blocks the committing goroutine.
func (n *notifier) hook(wr model.WorkRequest) {
	body, err := json.Marshal(notification{Event: NotifyEvent, SentAt: time.Now().UTC(), WorkRequest: notifiedWorkRequest{
		ID: wr.ID, TaskType: wr.TaskType, TaskName: wr.TaskName, Workspace: wr.WorkspaceID, Status: wr.Status,
		Result: wr.Result, CreatedAt: wr.CreatedAt, StartedAt: wr.StartedAt, CompletedAt: wr.CompletedAt,
		Worker: wr.WorkerID, Parent: wr.ParentID,
	}})
	if err != nil {
		return
	}
	select {
	case n.queue <- body:
	default:
		n.dropped.Inc()
	}
}

// run sends queued notifications until stopping is closed, then what is
// left until the queue is empty or ctx ends.
func (n *notifier) run(ctx context.Context, stopping <-chan struct{}) {
	for {
		select {
		case body := <-n.queue:
			n.deliver(ctx, body)
			continue
		case <-stopping:
		}
		for ctx.Err() == nil {
			select {
			case body := <-n.queue:
				n.deliver(ctx, body)
			default:
				return
			}
		}
		if left := len(n.queue); left > 0 {
			n.logger.Warn("notifications not sent before shutdown", "count", left)
		}
		return
	}
}

// deliver POSTs one notification to every URL, retrying failures (no
// answer, 5xx) after about 1 s, then 2 s, with jitter so that receivers
// coming back are not hit by every server at once.
func (n *notifier) deliver(ctx context.Context, body []byte) {
	// one id for every attempt: a receiver that got an attempt whose
	// answer was lost recognises the retry
	id := deliveryID()
	for _, u := range n.urls {
		pauses := &backoff.ExponentialBackOff{InitialInterval: time.Second, RandomizationFactor: 0.5, Multiplier: 2,
			MaxInterval: notifyTimeout}
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			retry, err := n.post(ctx, u, id, body)
			if err != nil && !retry {
				return struct{}{}, backoff.Permanent(err)
			}
			return struct{}{}, err
		}, backoff.WithBackOff(pauses), backoff.WithMaxTries(notifyAttempts))
		if err != nil {
			n.failed.Inc()
			n.logger.Warn("notification not delivered", "url", redactURL(u), "error", err)
		}
	}
}

// post sends one attempt; retry says whether another attempt may help.
// The signature (api.SignEvent) covers the time of the attempt and the
// delivery id, so that receivers can refuse stale and replayed events.
func (n *notifier) post(ctx context.Context, u, id string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiln/"+telemetry.ReadBuildInfo().Version)
	req.Header.Set("X-Kiln-Event", NotifyEvent)
	req.Header.Set("X-Kiln-Delivery", id)
	if n.secret != "" {
		now := time.Now()
		req.Header.Set("X-Kiln-Timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("X-Kiln-Signature-256", api.SignEvent(n.secret, now, id, body))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 500:
		return true, fmt.Errorf("HTTP %d", resp.StatusCode)
	case resp.StatusCode >= 300:
		return false, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return false, nil
}

func deliveryID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// redactURL hides credentials and the query of a URL for logs: webhook
// URLs often carry a token in either.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}
