package openmetrics

import (
	"errors"
	"fmt"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"

	"github.com/kiln-build/kiln/internal/store"
)

// familyFunc builds one metric family from a refresh's snapshot (b.snap,
// b.rows) with the builders of series.go. It may return a family without
// series (nothing to report yet); Gather leaves such families out, since
// the text format cannot encode them.
type familyFunc func(b *build) (*dto.MetricFamily, error)

// families holds every family of the endpoint by name; each family's file
// adds itself in init.
var families = map[string]familyFunc{}

// register adds a family source. It panics on a duplicate name, which can
// only be a programming error.
func register(name string, f familyFunc) {
	if _, dup := families[name]; dup {
		panic("openmetrics: family " + name + " registered twice")
	}
	families[name] = f
}

// familyNames returns the registered family names, sorted.
func familyNames() []string {
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Gather builds every metric family of the public endpoint from one
// snapshot, sorted by name. A family that fails (an error, a panic, or an
// invalid result) is left out and its error is included in the returned
// error, joined with the others; the families that worked are always
// returned, so callers log the error and serve the rest. Families without
// series are left out silently.
//
// Gather only reads snap; it is safe to call concurrently on the same
// snapshot.
func Gather(snap *store.Snapshot) ([]*dto.MetricFamily, error) {
	return gatherCached(snap, newSeriesCache())
}

// gatherCached is Gather on a series cache kept between refreshes.
func gatherCached(snap *store.Snapshot, cache *seriesCache) ([]*dto.MetricFamily, error) {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	b := newBuild(snap, cache)
	defer cache.sweep()
	var out []*dto.MetricFamily
	var errs []error
	for _, name := range familyNames() {
		mf, err := runFamily(name, families[name], b)
		if err != nil {
			errs = append(errs, fmt.Errorf("family %s: %w", name, err))
			continue
		}
		if len(mf.Metric) > 0 {
			out = append(out, mf)
		}
	}
	return out, errors.Join(errs...)
}

// runFamily runs one family source, turning a panic into an error and
// checking that the result is something the encoder can write correctly.
func runFamily(name string, f familyFunc, b *build) (mf *dto.MetricFamily, err error) {
	defer func() {
		if p := recover(); p != nil {
			mf, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	mf, err = f(b)
	if err != nil {
		return nil, err
	}
	if err := checkFamily(name, mf); err != nil {
		return nil, err
	}
	return mf, nil
}

// checkFamily rejects what would make the encoder write invalid output: a
// wrong name, no help, or a value of the wrong type. Label names are
// checked once per family by its builder, which also makes every series
// unique.
func checkFamily(name string, mf *dto.MetricFamily) error {
	if mf == nil {
		return errors.New("no family returned")
	}
	if mf.GetName() != name || !model.IsValidLegacyMetricName(name) {
		return fmt.Errorf("family is named %q", mf.GetName())
	}
	if mf.GetHelp() == "" {
		return errors.New("no help text")
	}
	for _, m := range mf.Metric {
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			if m.Gauge == nil {
				return errors.New("gauge series without a gauge value")
			}
		case dto.MetricType_HISTOGRAM:
			if m.Histogram == nil {
				return errors.New("histogram series without a histogram value")
			}
		default:
			return fmt.Errorf("unexpected type %s", mf.GetType())
		}
	}
	return nil
}
