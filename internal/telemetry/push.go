package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
)

// DefaultPushTimeout bounds one push to the Pushgateway. A short-lived job
// must not hang at exit because the gateway does not answer.
const DefaultPushTimeout = 10 * time.Second

// PushConfig says where and under which grouping key PushRun sends the
// metrics of one run of a short-lived job: a one-shot runner
// (kiln runner --once) or a maintenance command (kiln expire).
type PushConfig struct {
	// URL is the Pushgateway's base URL, e.g. http://pushgateway:9091.
	URL string
	// Job is the job grouping label, e.g. "kiln_expire".
	Job string
	// Instance is the instance grouping label; "" means the host name.
	Instance string
	// Namespace prefixes the run's timestamp gauges:
	// <Namespace>_last_success_timestamp_seconds and
	// <Namespace>_last_failure_timestamp_seconds.
	Namespace string
	// Client sends the request; nil means a plain http.Client.
	Client push.HTTPDoer
	// Timeout bounds the push; 0 means DefaultPushTimeout.
	Timeout time.Duration
}

// CheckPushURL refuses what cannot be a Pushgateway's URL, so that
// --pushgateway fails at start-up rather than at exit, when the run's
// metrics would be lost.
func CheckPushURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid Pushgateway URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid Pushgateway URL %q: want http://host:port or https://host:port", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("invalid Pushgateway URL %q: no query or fragment allowed", s)
	}
	return nil
}

// PushRun sends what g gathers to the Pushgateway, in the group
// {job=<Job>, instance=<Instance>}, and records the run's end time in
// <Namespace>_last_success_timestamp_seconds when success is true, or in
// <Namespace>_last_failure_timestamp_seconds when it is false.
//
// It uses the gateway's POST ("Add"), never PUT ("Push"): POST replaces the
// metrics of the same names in the group and keeps the others. A failed run
// therefore leaves the previous run's last_success_timestamp_seconds in
// place, which is what the usual alert needs:
//
//	time() - kiln_expire_last_success_timestamp_seconds > 2 * 86400
//
// A PUT would have deleted it, and with it the only record of when the job
// last worked. at is the time to record (normally time.Now()).
func PushRun(ctx context.Context, cfg PushConfig, g prometheus.Gatherer, success bool, at time.Time) error {
	if cfg.Job == "" || cfg.Namespace == "" {
		return errors.New("telemetry.PushRun: Job and Namespace are required")
	}
	if err := CheckPushURL(cfg.URL); err != nil {
		return err
	}
	instance := cfg.Instance
	if instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		instance = host
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultPushTimeout
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}

	name, help := cfg.Namespace+"_last_success_timestamp_seconds", "Time of the last successful run, in seconds since the epoch."
	if !success {
		name, help = cfg.Namespace+"_last_failure_timestamp_seconds", "Time of the last failed run, in seconds since the epoch."
	}
	stamp := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	stamp.Set(float64(at.UnixNano()) / 1e9)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := push.New(strings.TrimSuffix(cfg.URL, "/"), cfg.Job).
		Grouping("instance", instance).
		Gatherer(g).
		Collector(stamp).
		Client(client).
		AddContext(ctx)
	if err != nil {
		return fmt.Errorf("pushing to the Pushgateway: %w", err)
	}
	return nil
}

// WithPrefix returns a gatherer of the families of g whose names start with
// prefix. Short-lived jobs push their own figures with it and leave out the
// Go and process collectors, whose values describe a process that is gone
// by the time anybody reads the gateway.
func WithPrefix(g prometheus.Gatherer, prefix string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), prefix) {
				out = append(out, mf)
			}
		}
		return out, err
	})
}
