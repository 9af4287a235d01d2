package openmetrics

import (
	"time"

	dto "github.com/prometheus/client_model/go"
)

func init() { register("tokens_last_seen", tokensLastSeen) }

// tokensLastSeenBuckets are upper bounds in seconds: a minute (the
// granularity of last_seen_at), an hour, a day, a week, 30, 90 and 365
// days.
var tokensLastSeenBuckets = []float64{60, 3600, 86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400}

// tokensLastSeen is the distribution of the time since each enabled token
// was last used, to spot forgotten credentials. Tokens that were never used
// are not observed: an infinite age would make _sum +Inf and every average
// meaningless. Their number is sum(tokens{enabled="1"}) −
// tokens_last_seen_count, both from the same snapshot.
func tokensLastSeen(b *build) (*dto.MetricFamily, error) {
	h := b.histograms("tokens_last_seen", tokensLastSeenBuckets)
	h.series() // one series even when no token was ever used
	for _, seen := range b.snap.TokenLastSeen {
		if !seen.IsZero() {
			h.observe(ageIn(b.snap.Taken, seen, time.Second))
		}
	}
	return h.family(
		"Seconds since each enabled token was last used (to the minute); tokens never used are not observed.")
}
