package openmetrics

import (
	dto "github.com/prometheus/client_model/go"
)

func init() { register("user_identities", userIdentities) }

// userIdentities counts SSO identities by issuer and the active flag of the
// user they are linked to. Every identity is linked to a user (the schema
// requires it), so no identity is counted without one; subjects stay
// private.
func userIdentities(b *build) (*dto.MetricFamily, error) {
	return totalsGauge(b, "user_identities",
		"Number of SSO identities linked to users, by active (1/0, of the linked user) and issuer.", "active", "issuer")
}
