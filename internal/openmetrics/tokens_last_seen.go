package openmetrics

import (
	"fmt"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("tokens_last_seen", tokensLastSeen) }

// tokensLastSeen is the distribution of the time since each enabled token
// was last used, to spot forgotten credentials. Its buckets are the
// store's (store.TokenAgeBounds: a minute, the granularity of
// last_seen_at, an hour, a day, a week, 30, 90 and 365 days), which the
// database counts the tokens into. Tokens that were never used are not
// observed: an infinite age would make _sum +Inf and every average
// meaningless. Their number is sum(tokens{enabled="1"}) −
// tokens_last_seen_count, both from the same snapshot.
func tokensLastSeen(b *build) (*dto.MetricFamily, error) {
	bounds := make([]float64, len(store.TokenAgeBounds))
	for i, v := range store.TokenAgeBounds {
		bounds[i] = float64(v)
	}
	h := b.histograms("tokens_last_seen", bounds)
	counts, sum := h.series() // one series even when no token was ever used
	if got := b.snap.TokenLastSeen.Counts; got != nil {
		if len(got) != len(counts) {
			return nil, fmt.Errorf("tokens_last_seen: %d bucket counts for %d buckets", len(got), len(counts))
		}
		copy(counts, got)
	}
	*sum = b.snap.TokenLastSeen.Sum
	return h.family(
		"Seconds since each enabled token was last used (to the minute); tokens never used are not observed.")
}
