package store

// The PostgreSQL advisory locks (one bigint key each) by which replicas
// sharing a database do something one at a time. Every key is here, so
// that no two uses take the same one: a fold skipped because a replica
// was bootstrapping is harmless but looks like the other in pg_locks, and
// a fold that shares the autoscaler's key, held for as long as its
// process lives, never happens. TestAdvisoryLockKeys keeps the keys
// distinct and SQL free of literal ones.
//
// Blob claims (blobclaims.go) lock pairs (store id, content hash) in the
// two-key space of advisory locks, which never meets these.
const (
	// migrationLockID: migrations, one replica at a time (goose's session
	// lock). It is the key kiln's earlier migration runner locked, so
	// that an old and a new replica of a rolling upgrade also wait for
	// each other.
	migrationLockID = 8420
	// bootstrapLockID: the first start's bootstrap, once per database.
	bootstrapLockID = 8421
	// AutoscalerLockKey: the worker pools' autoscaler, one process of
	// the farm, for as long as it lives (a session lock, SessionLock;
	// package pool).
	AutoscalerLockKey = 8422
	// foldLockKey: the running-totals folder, one process at a time
	// (pg_try_advisory_xact_lock: the others skip their turn). Not the
	// autoscaler's: held for hours, it would make every folder skip.
	foldLockKey = 8425
	// registrationLockKey: runners registering themselves, one at a
	// time, so that replicas cannot overshoot --max-pending-registrations
	// together.
	registrationLockKey = 8423
	// statisticsLockKey: corrections of the dashboard's rollups, one at a
	// time: two at once would both journal the same difference.
	statisticsLockKey = 8424
)
