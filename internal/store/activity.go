package store

import (
	"context"
	"database/sql"
	"strconv"
)

// The user-activity histograms of the metrics endpoint (user_activity by
// scope, user_identities_activity by issuer and scope) are not running
// totals: each scrape observes every (user, scope) row of
// user_scope_activity with its age. Their label sets would therefore
// vanish with their last row — an identity or a user deleted — while the
// gauges keep reporting 0. So activity_series remembers every label set
// they ever reported, written in the same transaction as the activity or
// identity that creates it, and the endpoint reports each as an empty
// histogram once it has no observation left. Its rows are never updated;
// a scope's rows go with the scope, whose name can no longer be reported.

// Families of the user-activity histograms, as activity_series names them.
const (
	UserActivityFamily     = "user_activity"
	IdentityActivityFamily = "user_identities_activity"
)

// ActivitySeries is a label set the user-activity histograms once had.
type ActivitySeries struct {
	Family  string // UserActivityFamily or IdentityActivityFamily
	ScopeID int64
	Issuer  string // "" for UserActivityFamily
}

// currentActivitySeries is every label set that the activity rows give
// now: what activity_series must hold at least. The internal system user
// is never observed.
const currentActivitySeries = `SELECT '` + UserActivityFamily + `' AS family, a.scope_id AS scope_id, '' AS issuer
	FROM user_scope_activity a JOIN users u ON u.id = a.user_id WHERE NOT u.is_system
	UNION
	SELECT '` + IdentityActivityFamily + `', a.scope_id, i.issuer
	FROM user_scope_activity a JOIN users u ON u.id = a.user_id JOIN identities i ON i.user_id = a.user_id WHERE NOT u.is_system`

// rememberActivity records the label sets of a user's activity in a
// scope: the scope, and each issuer of the user's identities in it.
func (t *tx) rememberActivity(ctx context.Context, userID, scopeID int64) error {
	_, err := t.exec(ctx, `INSERT INTO activity_series (family, scope_id, issuer)
		SELECT '`+UserActivityFamily+`', CAST($2 AS BIGINT), '' FROM users u WHERE u.id = $1 AND NOT u.is_system
		UNION
		SELECT '`+IdentityActivityFamily+`', CAST($2 AS BIGINT), i.issuer FROM identities i JOIN users u ON u.id = i.user_id
		WHERE i.user_id = $1 AND NOT u.is_system
		ON CONFLICT DO NOTHING`, userID, scopeID)
	return err
}

// rememberIdentity records the label sets of a user's identity at issuer:
// one per scope the user has activity in.
func (t *tx) rememberIdentity(ctx context.Context, userID int64, issuer string) error {
	_, err := t.exec(ctx, `INSERT INTO activity_series (family, scope_id, issuer)
		SELECT '`+IdentityActivityFamily+`', a.scope_id, CAST($2 AS TEXT) FROM user_scope_activity a JOIN users u ON u.id = a.user_id
		WHERE a.user_id = $1 AND NOT u.is_system
		ON CONFLICT DO NOTHING`, userID, issuer)
	return err
}

// activitySeries reads every remembered label set, for a snapshot.
func (t *tx) activitySeries(ctx context.Context) ([]ActivitySeries, error) {
	var out []ActivitySeries
	err := t.each(ctx, "SELECT family, scope_id, issuer FROM activity_series ORDER BY family, scope_id, issuer", nil, func(r *sql.Rows) error {
		var a ActivitySeries
		err := r.Scan(&a.Family, &a.ScopeID, &a.Issuer)
		out = append(out, a)
		return err
	})
	return out, err
}

// Differences checkActivity reports, by the Family of a Difference.
const (
	// activity_series lacks a label set that the activity rows give (Kept
	// 0, Counted 1).
	missingActivitySeries = "activity_series"
	// a user's activity in a scope is missing (Kept 0) or older than the
	// newest root workflow the user created there (Counted, microseconds).
	staleActivity = "user_scope_activity.last_workflow_at"
)

// checkActivity compares what the user-activity histograms read with the
// base tables, for `kiln metrics recount`: every (user, scope) with a root
// workflow must have its activity row, no older than that workflow (a
// newer row is right: the workflow it records may have been deleted since),
// and every label set the activity rows give must be remembered.
func (s *SQL) checkActivity(ctx context.Context, t *tx) ([]Difference, error) {
	var diffs []Difference
	if err := t.each(ctx, `SELECT r.created_by, w.scope_id, MAX(r.created_at), COALESCE(MAX(a.last_workflow_at), 0)
		FROM work_requests r JOIN workspaces w ON w.id = r.workspace_id
		LEFT JOIN user_scope_activity a ON a.user_id = r.created_by AND a.scope_id = w.scope_id
		WHERE r.task_type = 'Workflow' AND r.parent_id IS NULL AND r.created_by IS NOT NULL
		GROUP BY r.created_by, w.scope_id`, nil, func(r *sql.Rows) error {
		var user, scope, newest, kept int64
		if err := r.Scan(&user, &scope, &newest, &kept); err != nil {
			return err
		}
		if kept < newest {
			diffs = append(diffs, Difference{staleActivity, Labels{"user_id": itoa(user), "scope_id": itoa(scope)}, kept, newest})
		}
		return nil
	}); err != nil {
		return nil, err
	}
	err := t.each(ctx, `SELECT c.family, c.scope_id, c.issuer FROM (`+currentActivitySeries+`) c
		LEFT JOIN activity_series s ON s.family = c.family AND s.scope_id = c.scope_id AND s.issuer = c.issuer
		WHERE s.family IS NULL`, nil, func(r *sql.Rows) error {
		var a ActivitySeries
		if err := r.Scan(&a.Family, &a.ScopeID, &a.Issuer); err != nil {
			return err
		}
		diffs = append(diffs, Difference{missingActivitySeries, Labels{"family": a.Family, "scope_id": itoa(a.ScopeID), "issuer": a.Issuer}, 0, 1})
		return nil
	})
	return diffs, err
}

// fixActivity repairs what checkActivity reported in d; it returns false
// for a difference of another kind.
func (t *tx) fixActivity(ctx context.Context, d Difference) (bool, error) {
	switch d.Family {
	case staleActivity:
		user, errUser := strconv.ParseInt(d.Labels["user_id"], 10, 64)
		scope, errScope := strconv.ParseInt(d.Labels["scope_id"], 10, 64)
		if errUser != nil || errScope != nil {
			return true, invalid("labels", "bad difference %s", d)
		}
		return true, t.recordWorkflowActivity(ctx, user, scope, d.Counted)
	case missingActivitySeries:
		scope, err := strconv.ParseInt(d.Labels["scope_id"], 10, 64)
		if err != nil {
			return true, invalid("labels", "bad difference %s", d)
		}
		_, err = t.exec(ctx, "INSERT INTO activity_series (family, scope_id, issuer) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
			d.Labels["family"], scope, d.Labels["issuer"])
		return true, err
	}
	return false, nil
}
