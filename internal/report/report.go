package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/statistics"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/telemetry"
)

// SchemaVersion is the version of the document's layout, its
// schema_version. It changes when a field changes meaning, type or goes
// away, never when one is added: readers check it and ignore what they
// do not know.
const SchemaVersion = 1

// DefaultWindow is the statistics window of a report that names none.
const DefaultWindow = "7d"

// Document is one report, as written (docs/report.schema.json).
type Document struct {
	SchemaVersion int `json:"schema_version"`
	// GeneratedAt is when the report was made; its statistics window ends
	// with that day.
	GeneratedAt time.Time `json:"generated_at"`
	// KilnVersion is the version of the kiln that wrote it.
	KilnVersion string `json:"kiln_version"`
	// SnapshotAt is the database's time of the snapshot every figure of
	// Metrics and ServiceStatus comes from.
	SnapshotAt time.Time `json:"snapshot_at"`
	// Metrics holds every family of the public endpoint by name, with
	// every series a scrape of the same snapshot has.
	Metrics map[string]Family `json:"metrics"`
	// ServiceStatus is GET /api/1.0/service-status/ of the same snapshot.
	ServiceStatus *openmetrics.ServiceStatus `json:"service_status"`
	// Statistics are GET /api/1.0/statistics/ over the window, for the
	// whole farm.
	Statistics *statistics.Report `json:"statistics"`
}

// Family is one metric family of the public endpoint.
type Family struct {
	// Type is "gauge" or "histogram".
	Type string `json:"type"`
	// Help is the family's HELP text, which says its unit.
	Help   string   `json:"help"`
	Series []Series `json:"series"`
}

// Series is one series: its labels, and its value (a gauge) or its
// buckets, count and sum (a histogram).
type Series struct {
	Labels map[string]string `json:"labels"`
	Value  *float64          `json:"value,omitempty"`
	// Buckets are cumulative, as in the exposition, without the +Inf
	// bucket, which is Count.
	Buckets []Bucket `json:"buckets,omitempty"`
	Count   *uint64  `json:"count,omitempty"`
	Sum     *float64 `json:"sum,omitempty"`
}

// Bucket is a histogram bucket: how many observations were at most Le.
type Bucket struct {
	Le    float64 `json:"le"`
	Count uint64  `json:"count"`
}

// Source is where a report's figures come from; *store.SQL is one.
type Source interface {
	openmetrics.Source
	statistics.Source
}

// Generate reads one snapshot of the public figures and the statistics of
// the window (a number of days up to today, "7d") from src, and builds
// the report of now.
func Generate(ctx context.Context, src Source, window string, now time.Time) (*Document, error) {
	w, err := statistics.ParseWindow(window, now)
	if err != nil {
		return nil, err
	}
	snap, err := src.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the public figures: %w", err)
	}
	// kiln itself (no viewer) sees every workspace
	stats, err := statistics.Compute(ctx, src, nil, w, statistics.Selection{})
	if err != nil {
		return nil, fmt.Errorf("reading the statistics: %w", err)
	}
	return Build(snap, stats, now)
}

// Build makes the report of a snapshot and statistics: the families are
// those openmetrics.Gather builds from snap, which a scrape answering
// from snap encodes. A family that fails to build fails the report,
// which would otherwise be silently incomplete.
func Build(snap *store.Snapshot, stats *statistics.Report, now time.Time) (*Document, error) {
	if snap == nil || stats == nil {
		return nil, errors.New("report: a snapshot and statistics are required")
	}
	fams, err := openmetrics.Gather(snap)
	if err != nil {
		return nil, fmt.Errorf("building the public figures: %w", err)
	}
	doc := &Document{SchemaVersion: SchemaVersion, GeneratedAt: now.UTC(), KilnVersion: telemetry.ReadBuildInfo().Version,
		SnapshotAt: snap.Taken.UTC(), Metrics: make(map[string]Family, len(fams)),
		ServiceStatus: openmetrics.StatusOfFamilies(snap.Taken, fams), Statistics: stats}
	for _, mf := range fams {
		f, err := family(mf)
		if err != nil {
			return nil, fmt.Errorf("family %s: %w", mf.GetName(), err)
		}
		doc.Metrics[mf.GetName()] = f
	}
	return doc, nil
}

// family turns an exposition family into the report's form.
func family(mf *dto.MetricFamily) (Family, error) {
	f := Family{Type: strings.ToLower(mf.GetType().String()), Help: mf.GetHelp(), Series: make([]Series, 0, len(mf.Metric))}
	for _, m := range mf.Metric {
		s := Series{Labels: make(map[string]string, len(m.Label))}
		for _, lp := range m.Label {
			s.Labels[lp.GetName()] = lp.GetValue()
		}
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			v := m.GetGauge().GetValue()
			if err := finite(v); err != nil {
				return Family{}, err
			}
			s.Value = &v
		case dto.MetricType_HISTOGRAM:
			h := m.GetHistogram()
			count, sum := h.GetSampleCount(), h.GetSampleSum()
			if err := finite(sum); err != nil {
				return Family{}, err
			}
			s.Count, s.Sum, s.Buckets = &count, &sum, make([]Bucket, 0, len(h.Bucket))
			for _, b := range h.Bucket {
				if math.IsInf(b.GetUpperBound(), +1) {
					continue // Count
				}
				s.Buckets = append(s.Buckets, Bucket{Le: b.GetUpperBound(), Count: b.GetCumulativeCount()})
			}
		default:
			return Family{}, fmt.Errorf("type %s has no place in a report", mf.GetType())
		}
		f.Series = append(f.Series, s)
	}
	return f, nil
}

// finite refuses what JSON cannot carry.
func finite(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("value %v is not a number JSON can carry", v)
	}
	return nil
}

// Encode writes the document as indented JSON, ending with a newline.
func (d *Document) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the report: %w", err)
	}
	return append(b, '\n'), nil
}
