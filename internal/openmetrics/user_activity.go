package openmetrics

import (
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("user_activity", userActivity) }

// activityBuckets are the upper bounds, in days, of the user-activity
// histograms (docs/architecture.md#public-endpoint).
var activityBuckets = []float64{1, 3, 7, 14, 30, 90, 365}

// day is the unit of the activity histograms.
const day = 24 * time.Hour

// userActivity observes, once per (user, scope) pair, the age in days of
// the user's most recent root workflow in that scope: how many people are
// still active where. The store keeps only the latest time per pair, so a
// user who started many workflows counts once, by the newest; the internal
// system user is not in the snapshot. A scope that once had activity keeps
// its series, an empty histogram once its users are gone, as gauges keep
// reporting 0.
func userActivity(b *build) (*dto.MetricFamily, error) {
	h := b.histograms("user_activity", activityBuckets, labelScope)
	for _, ls := range b.snap.ActivitySeries {
		if scope, ok := b.snap.ScopeNames[ls.ScopeID]; ok && ls.Family == store.UserActivityFamily {
			h.l.set(labelScope, scope)
			h.series() // reported, empty if nobody is left
		}
	}
	for _, a := range b.snap.Activity {
		scope, ok := b.snap.ScopeNames[a.ScopeID]
		if !ok {
			continue // the scope was deleted with its activity
		}
		h.l.set(labelScope, scope)
		h.observe(ageIn(b.snap.Taken, a.LastWorkflowAt, day))
	}
	return h.family(
		"Days since each user last created a root workflow in a scope, one observation per (user, scope), by scope.")
}
