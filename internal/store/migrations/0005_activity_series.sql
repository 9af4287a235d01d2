-- every label set the user-activity histograms (user_activity by scope,
-- user_identities_activity by issuer and scope) ever reported, so that a
-- series keeps reporting an empty histogram when its last user or identity
-- goes, as a gauge keeps reporting 0. Written in the same transaction as
-- the activity or identity that creates the label set; rows are never
-- updated, and go only with their scope (see store/activity.go).

-- +goose Up
CREATE TABLE activity_series (
    family TEXT NOT NULL,
    scope_id BIGINT NOT NULL,
    issuer TEXT NOT NULL,
    PRIMARY KEY (family, scope_id, issuer)
);

-- the label sets of the activity kept so far
INSERT INTO activity_series (family, scope_id, issuer)
SELECT 'user_activity', a.scope_id, '' FROM user_scope_activity a JOIN users u ON u.id = a.user_id WHERE NOT u.is_system
UNION
SELECT 'user_identities_activity', a.scope_id, i.issuer
FROM user_scope_activity a JOIN users u ON u.id = a.user_id JOIN identities i ON i.user_id = a.user_id WHERE NOT u.is_system;
