package openmetrics

import (
	"slices"

	dto "github.com/prometheus/client_model/go"
)

func init() { register("user_identities_activity", userIdentitiesActivity) }

// userIdentitiesActivity is user_activity split by the issuers of the
// user's identities: one observation per (user, issuer, scope). A user
// with identities at two issuers counts under both; a user without any
// identity contributes nothing here (never an empty issuer) and is still
// counted in user_activity.
func userIdentitiesActivity(b *build) (*dto.MetricFamily, error) {
	h := b.histograms("user_identities_activity", activityBuckets, "issuer", labelScope)
	for _, a := range b.snap.Activity {
		scope, ok := b.snap.ScopeNames[a.ScopeID]
		if !ok {
			continue
		}
		age := ageIn(b.snap.Taken, a.LastWorkflowAt, day)
		for i, issuer := range a.Issuers {
			if issuer == "" || slices.Contains(a.Issuers[:i], issuer) {
				continue
			}
			h.l.set("issuer", issuer)
			h.l.set(labelScope, scope)
			h.observe(age)
		}
	}
	return h.family(
		"Days since each user last created a root workflow in a scope, one observation per (user, identity issuer, scope), by issuer and scope.")
}
