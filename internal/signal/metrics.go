package signal

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a signal is not sent to the other processes (the dropped
// counter's label).
const (
	dropInvalid    = "invalid"     // over MaxPayload, or a NUL byte
	dropQueueFull  = "queue_full"  // the database does not keep up
	dropSendFailed = "send_failed" // the NOTIFY statement failed
)

// metrics are the bus's figures on the server's internal listener. The
// topic label holds the topics of kiln's code only; the reason label the
// three constants above.
type metrics struct {
	published   *prometheus.CounterVec
	received    *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	listening   prometheus.Gauge
	connections prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, b *Bus) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_signals_published_total",
			Help: "Signals this server process published to every kiln process of the database, by topic.",
		}, []string{"topic"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_signals_received_total",
			Help: "Signals this server process received from the other kiln processes of the database, by topic.",
		}, []string{"topic"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_signals_dropped_total",
			Help: "Signals not sent to the other processes (they notice at their next poll instead), by reason: invalid, queue_full, send_failed.",
		}, []string{"reason"}),
		listening: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_signals_listening",
			Help: "1 while this server process hears the signals of the others (its LISTEN connection is up; always 1 on SQLite), else 0.",
		}),
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_signals_connections_total",
			Help: "LISTEN connections this server process opened; more than one means the connection dropped and came back.",
		}),
	}
	for _, r := range []string{dropInvalid, dropQueueFull, dropSendFailed} {
		m.dropped.WithLabelValues(r)
	}
	if b.pg == nil {
		m.listening.Set(1)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.published, m.received, m.dropped, m.listening, m.connections}
	if b.pg != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kiln_signals_queue_usage",
			Help: "How full PostgreSQL's NOTIFY queue is, 0 to 1 (pg_notification_queue_usage()); it grows only while some listener of the database stops reading, and NOTIFY fails when it is full. -1 when it cannot be read.",
		}, b.pg.queueUsage))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// topic makes the series of a subscribed topic exist from the start.
func (m *metrics) topic(t Topic) {
	m.published.WithLabelValues(string(t))
	m.received.WithLabelValues(string(t))
}

// queueUsage reads pg_notification_queue_usage() for a scrape.
func (p *pgTransport) queueUsage() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var v float64
	if err := p.db.QueryRowContext(ctx, "SELECT pg_notification_queue_usage()").Scan(&v); err != nil {
		return -1
	}
	return v
}
