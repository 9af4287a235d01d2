package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// Notification delivery survives a replica's death: the transaction that
// finishes a work request writes its notification to the database's
// outbox (store.KeepNotifications), and every replica runs a delivery
// loop that claims due notifications with a lease, POSTs them, deletes
// them once every receiver answered and otherwise retries them later with
// backoff, a bounded number of times. Delivery is at least once: each
// notification carries its outbox id in X-Kiln-Delivery, the same on
// every attempt and from every replica, for receivers to de-duplicate.
const (
	notifyTimeout = 10 * time.Second
	// notifyAttempts bounds the attempts of one notification; with the
	// backoff below the last comes about four minutes after the first.
	notifyAttempts = 8
	// notifyRetry is the pause before the first retry, doubling (with
	// jitter) up to notifyMaxRetry.
	notifyRetry    = time.Second
	notifyMaxRetry = 5 * time.Minute
	// notifyPoll is how often a loop looks for notifications that came due
	// or that another replica wrote; this replica's own finishes wake it
	// at once.
	notifyPoll = 2 * time.Second
	// notifyBatch notifications are claimed at a time.
	notifyBatch = 8
	// notifyDrain bounds how long a stopping server keeps delivering what
	// it claimed; what it did not send goes back to the outbox.
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
	Event       string          `json:"event"`
	SentAt      time.Time       `json:"sent_at"`
	WorkRequest json.RawMessage `json:"work_request"`
}

// notifiedWorkRequest is what the outbox keeps of a finished request: the
// body's "work_request", as it was when the request finished.
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

// encodeNotification is the store's NotificationEncoder.
func encodeNotification(wr model.WorkRequest) string {
	b, _ := json.Marshal(notifiedWorkRequest{
		ID: wr.ID, TaskType: wr.TaskType, TaskName: wr.TaskName, Workspace: wr.WorkspaceID, Status: wr.Status,
		Result: wr.Result, CreatedAt: wr.CreatedAt, StartedAt: wr.StartedAt, CompletedAt: wr.CompletedAt,
		Worker: wr.WorkerID, Parent: wr.ParentID,
	})
	return string(b)
}

// checkNotifyURL refuses a --notify-url that cannot be POSTed to.
func checkNotifyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--notify-url %q: want an http:// or https:// URL", s)
	}
	return nil
}

// notifyOutbox is what the delivery loop needs of the store.
type notifyOutbox interface {
	ClaimNotifications(ctx context.Context, owner string, lease time.Duration, limit int) ([]store.Notification, error)
	DeleteNotification(ctx context.Context, id int64, owner string) (bool, error)
	PostponeNotification(ctx context.Context, id int64, owner string, at time.Time, uncount bool, delivered string) (bool, error)
	PendingNotifications(ctx context.Context) (int64, error)
}

// notifier is one replica's delivery loop of the notification outbox.
type notifier struct {
	st     notifyOutbox
	urls   []string
	secret string
	client *http.Client
	logger *slog.Logger
	// owner names this loop's claims: unique per process.
	owner string
	// retry is the pause before the first retry (notifyRetry; shorter in
	// tests).
	retry   time.Duration
	poll    time.Duration
	wake    chan struct{}
	dropped prometheus.Counter
	failed  prometheus.Counter
	waiting float64 // the last count of the outbox, under mu
	mu      sync.Mutex
}

func newNotifier(st notifyOutbox, cfg Config, client *http.Client, logger *slog.Logger) *notifier {
	retry := cfg.notifyRetry
	if retry <= 0 {
		retry = notifyRetry
	}
	return &notifier{
		st: st, urls: cfg.NotifyURLs, secret: cfg.WebhookSecret, client: client,
		logger: logger.With("component", "notify"),
		owner:  deliveryOwner(),
		retry:  retry,
		poll:   min(notifyPoll, 4*retry),
		wake:   make(chan struct{}, 1),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_notify_dropped_total",
			Help: "Notifications of finished work requests given up on after every attempt, by this replica.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_notify_failed_total",
			Help: "Notifications not delivered to a --notify-url after every attempt (one per receiver that never got it).",
		}),
	}
}

// startNotifier makes the store keep notifications and starts this
// replica's delivery loop. It must run before the store is shared
// (KeepNotifications, OnFinish). The returned stop lets the loop finish
// what it claimed for up to notifyDrain, gives the rest back to the
// outbox, and returns; it is safe to call once. Without --notify-url it
// does nothing, and the store writes no notification.
func startNotifier(ctx context.Context, st store.Store, reg prometheus.Registerer, out *telemetry.OutgoingMetrics, cfg Config, logger *slog.Logger) (stop func(), err error) {
	if len(cfg.NotifyURLs) == 0 {
		return func() {}, nil
	}
	n := newNotifier(st, cfg, &http.Client{Timeout: notifyTimeout, Transport: out.RoundTripper(notifyService, nil)}, logger)
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kiln_notify_queue_length",
		Help: "Notifications of finished work requests waiting in the outbox to be delivered, by any replica.",
	}, n.countWaiting)
	for _, c := range []prometheus.Collector{n.dropped, n.failed, queued} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	st.KeepNotifications(encodeNotification)
	st.OnFinish(func(model.WorkRequest) { n.nudge() })
	return n.start(ctx), nil
}

// start runs the loop until stop is called.
func (n *notifier) start(ctx context.Context) (stop func()) {
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
	}
}

// nudge wakes the loop (the store's OnFinish hook: a notification was
// just committed); it never blocks the committing goroutine.
func (n *notifier) nudge() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// countWaiting counts the outbox for the gauge; when the database does not
// answer it says what it last counted.
func (n *notifier) countWaiting() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := n.st.PendingNotifications(ctx)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		n.waiting = float64(c)
	}
	return n.waiting
}

// run claims and delivers due notifications, batch after batch, until
// none is due; then it waits for a nudge or the poll. It returns when
// stopping is closed.
func (n *notifier) run(ctx context.Context, stopping <-chan struct{}) {
	// a claim outlives the slowest batch, so that no other replica takes
	// a notification this one is still sending
	lease := time.Duration(notifyBatch*len(n.urls))*notifyTimeout + 30*time.Second
	poll := time.NewTicker(n.poll)
	defer poll.Stop()
	for {
		for {
			select {
			case <-stopping:
				return
			default:
			}
			batch, err := n.st.ClaimNotifications(ctx, n.owner, lease, notifyBatch)
			if err != nil {
				if ctx.Err() == nil {
					n.logger.Warn("notifications not claimed", "error", err)
				}
				break
			}
			for _, nt := range batch {
				n.deliver(ctx, stopping, nt)
			}
			if len(batch) < notifyBatch {
				break
			}
		}
		select {
		case <-stopping:
			return
		case <-n.wake:
		case <-poll.C:
		}
	}
}

// deliver makes one attempt of a claimed notification to every receiver
// not yet done with it, then deletes it (all done, or attempts spent:
// given up and counted) or postpones it by the backoff. A notification
// this replica stops before sending goes back to the outbox uncounted.
func (n *notifier) deliver(ctx context.Context, stopping <-chan struct{}, nt store.Notification) {
	// the database calls after the attempt outlive a stop, briefly
	dbctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	giveBack := func(delivered string) {
		if _, err := n.st.PostponeNotification(dbctx, nt.ID, n.owner, time.Now(), true, delivered); err != nil {
			n.logger.Warn("notification not given back", "notification", nt.ID, "error", err)
		}
	}
	select {
	case <-stopping:
		giveBack(nt.Delivered)
		return
	default:
	}
	done := map[string]bool{}
	for _, f := range strings.Fields(nt.Delivered) {
		done[f] = true
	}
	body, err := json.Marshal(notification{Event: NotifyEvent, SentAt: time.Now().UTC(), WorkRequest: json.RawMessage(nt.Payload)})
	if err != nil {
		n.logger.Error("notification not encoded", "notification", nt.ID, "error", err)
		return
	}
	id := strconv.FormatInt(nt.ID, 10)
	var failing []string
	var lastErr error
	for _, u := range n.urls {
		f := urlFingerprint(u)
		if done[f] {
			continue
		}
		retry, err := n.post(ctx, u, id, body)
		switch {
		case err != nil && ctx.Err() != nil:
			giveBack(doneList(done))
			return
		case err != nil && retry:
			failing, lastErr = append(failing, u), err
			continue
		case err != nil:
			// a receiver that refuses the notification (3xx, 4xx) will
			// not take it later
			n.failed.Inc()
			n.logger.Warn("notification refused", "url", redactURL(u), "notification", nt.ID, "error", err)
		}
		done[f] = true
	}
	if len(failing) == 0 || nt.Attempts >= notifyAttempts {
		for _, u := range failing {
			n.failed.Inc()
			n.logger.Warn("notification not delivered", "url", redactURL(u), "notification", nt.ID, "attempts", nt.Attempts, "error", lastErr)
		}
		if len(failing) > 0 {
			n.dropped.Inc()
		}
		if _, err := n.st.DeleteNotification(dbctx, nt.ID, n.owner); err != nil {
			n.logger.Warn("notification not deleted", "notification", nt.ID, "error", err)
		}
		return
	}
	if _, err := n.st.PostponeNotification(dbctx, nt.ID, n.owner, time.Now().Add(n.pause(nt.Attempts)), false, doneList(done)); err != nil {
		n.logger.Warn("notification not postponed", "notification", nt.ID, "error", err)
	}
}

// pause is the wait after the attempts-th failed attempt: about n.retry,
// then twice that each time, with jitter so that receivers coming back are
// not hit by every notification at once.
func (n *notifier) pause(attempts int) time.Duration {
	b := &backoff.ExponentialBackOff{InitialInterval: n.retry, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: notifyMaxRetry}
	b.Reset()
	d := b.NextBackOff()
	for range attempts - 1 {
		d = b.NextBackOff()
	}
	return d
}

// urlFingerprint names a receiver in the outbox's delivered list without
// storing its URL, which often carries a token.
func urlFingerprint(u string) string {
	sum := sha256.Sum256([]byte(u))
	return hex.EncodeToString(sum[:6])
}

func doneList(done map[string]bool) string {
	fs := make([]string, 0, len(done))
	for f := range done {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	return strings.Join(fs, " ")
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

// deliveryOwner names this process's claims on the outbox.
func deliveryOwner() string {
	b := make([]byte, 8)
	rand.Read(b)
	host, _ := os.Hostname()
	return host + "/" + hex.EncodeToString(b)
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
