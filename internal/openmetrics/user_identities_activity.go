package openmetrics

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("user_identities_activity", userIdentitiesActivity) }

// userIdentitiesActivity is user_activity split by the issuers of the
// user's identities: one observation per (user, issuer, scope). A user
// with identities at two issuers counts under both; a user without any
// identity contributes nothing here (never an empty issuer) and is still
// counted in user_activity.
func userIdentitiesActivity(s *store.Snapshot) (*dto.MetricFamily, error) {
	h := newHistograms(activityBuckets)
	for _, a := range s.Activity {
		scope, ok := s.ScopeNames[a.ScopeID]
		if !ok {
			continue
		}
		age := ageIn(s.Taken, a.LastWorkflowAt, day)
		seen := map[string]bool{}
		for _, issuer := range a.Issuers {
			if issuer == "" || seen[issuer] {
				continue
			}
			seen[issuer] = true
			h.observe(labelSet{"issuer": issuer, labelScope: scope}, age)
		}
	}
	return h.family("user_identities_activity",
		"Days since each user last created a root workflow in a scope, one observation per (user, identity issuer, scope), by issuer and scope.")
}
