package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrLockHeld is returned by SessionLock when another process holds the
// lock.
var ErrLockHeld = errors.New("the lock is held by another process")

// Lock is a lock SessionLock took. It is held for as long as the process
// that took it lives and has not released it; Held tells whether that is
// still so.
type Lock interface {
	// Held returns nil while the lock is held, and an error once it is
	// lost (the database connection that holds it broke): whoever acts
	// under the lock must stop.
	Held(ctx context.Context) error
	// Release lets the lock go.
	Release()
}

// SessionLock tries to take the lock key without waiting, for work that
// one process of a farm does at a time (the worker pools' autoscaler). On
// PostgreSQL it is a session advisory lock on a connection of its own,
// taken out of the pool: when the process dies, PostgreSQL ends its
// session and the lock passes to the next process that tries. On SQLite,
// where one server serves a database, it always succeeds.
func (s *SQL) SessionLock(ctx context.Context, key int64) (Lock, error) {
	if s.dialect != Postgres {
		return noLock{}, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
		conn.Close()
		return nil, fmt.Errorf("advisory lock %d: %w", key, err)
	}
	if !got {
		conn.Close()
		return nil, ErrLockHeld
	}
	return &pgLock{conn: conn, key: key}, nil
}

// pgLock is a session advisory lock and the connection whose session
// holds it.
type pgLock struct {
	conn *sql.Conn
	key  int64
}

// Held asks the session that holds the lock whether it still does: a
// broken connection has lost its session, and its lock with it.
func (l *pgLock) Held(ctx context.Context) error {
	var held bool
	err := l.conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
		AND pid = pg_backend_pid() AND granted AND ((classid::bigint << 32) | objid::bigint) = $1)`, l.key).Scan(&held)
	if err != nil {
		return fmt.Errorf("advisory lock %d lost: %w", l.key, err)
	}
	if !held {
		return fmt.Errorf("advisory lock %d is not held any more", l.key)
	}
	return nil
}

func (l *pgLock) Release() {
	ctx := context.Background()
	l.conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", l.key)
	l.conn.Close()
}

// noLock is SQLite's lock: the database has one server.
type noLock struct{}

func (noLock) Held(context.Context) error { return nil }
func (noLock) Release()                   {}
