package store

// The PostgreSQL advisory locks (one bigint key each) by which replicas
// sharing a database do something one at a time. Every key is here, so
// that no two uses take the same one: a fold skipped because a replica
// was bootstrapping, or a bootstrap waiting for a fold, is harmless but
// makes each look like the other in pg_locks.
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
	// foldLockKey: the running-totals folder, one process at a time
	// (pg_try_advisory_xact_lock: the others skip their turn). 8422 is
	// the worker pools' autoscaler's (package pool), 8424 the rollups'
	// corrections.
	foldLockKey = 8425
	// registrationLockKey: runners registering themselves, one at a
	// time, so that replicas cannot overshoot --max-pending-registrations
	// together.
	registrationLockKey = 8423
)
