package openmetrics

import (
	"slices"

	dto "github.com/prometheus/client_model/go"

	"github.com/kiln-build/kiln/internal/store"
)

func init() { register("user_identities_activity", userIdentitiesActivity) }

// userIdentitiesActivity is user_activity split by the issuers of the
// user's identities: one observation per (user, issuer, scope). A user
// with identities at two issuers counts under both; a user without any
// identity contributes nothing here (never an empty issuer) and is still
// counted in user_activity. An (issuer, scope) that once had activity keeps
// its series, an empty histogram once its identities are gone.
func userIdentitiesActivity(b *build) (*dto.MetricFamily, error) {
	h := b.histograms("user_identities_activity", activityBuckets, "issuer", labelScope)
	for _, ls := range b.snap.ActivitySeries {
		if scope, ok := b.snap.ScopeNames[ls.ScopeID]; ok && ls.Family == store.IdentityActivityFamily && ls.Issuer != "" {
			h.l.set("issuer", ls.Issuer)
			h.l.set(labelScope, scope)
			h.series() // reported, empty if no identity of the issuer is left
		}
	}
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
