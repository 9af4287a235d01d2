package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// The notification outbox (migration 0016): the transaction that
// finishes a work request also writes the notification of it, so that a
// replica that dies before sending it loses nothing — any replica's
// delivery loop sends it later. Delivery is at least once: a row is
// deleted only after its receivers answered, so a replica that dies
// between the two has it sent again, with the same id.

// NotificationEncoder turns a finished work request into the payload its
// notification carries. It runs inside the finishing transaction and
// must not block.
type NotificationEncoder func(wr model.WorkRequest) string

// KeepNotifications makes every transaction that finishes a work request
// write its notification (encode's payload) to the outbox, in the same
// commit. Without it the store writes none: a server without receivers
// pays nothing. Call it before the store is shared between goroutines.
func (s *SQL) KeepNotifications(encode NotificationEncoder) { s.notifications = encode }

// Notification is a row of the outbox, claimed for delivery.
type Notification struct {
	// ID identifies the notification across every attempt and replica:
	// receivers de-duplicate on it.
	ID            int64
	WorkRequestID int64
	Payload       string
	CreatedAt     time.Time
	// Attempts counts the claims of the row, this one included.
	Attempts int
	// Delivered is what the last PostponeNotification recorded: the
	// deliverer's own note of the receivers already done with.
	Delivered string
}

const notificationInsert = "INSERT INTO notification_outbox (work_request_id, payload, created_at, due_at) VALUES ($1, $2, $3, $3)"

// outboxRow is a notification a transaction writes at commit.
type outboxRow struct {
	workRequest int64
	payload     string
}

// writeOutbox inserts the notifications the transaction collected
// (SQLite; PostgreSQL queues them in the commit's batch).
func (t *tx) writeOutbox(ctx context.Context) error {
	now := toMicros(t.s.now())
	for _, r := range t.outbox {
		if _, err := t.exec(ctx, notificationInsert, r.workRequest, r.payload, now); err != nil {
			return fmt.Errorf("write the notification of work request %d: %w", r.workRequest, err)
		}
	}
	return nil
}

// ClaimNotifications claims up to limit notifications that are due for
// owner, for lease: until it ends no other claim takes them. One
// statement claims (SKIP LOCKED on PostgreSQL, so replicas claiming at
// once take different rows; SQLite has one writer).
func (s *SQL) ClaimNotifications(ctx context.Context, owner string, lease time.Duration, limit int) ([]Notification, error) {
	if owner == "" || lease <= 0 || limit <= 0 {
		return nil, errors.New("claim notifications: an owner, a positive lease and a positive limit are required")
	}
	skip := ""
	if s.dialect == Postgres {
		skip = " FOR UPDATE SKIP LOCKED"
	}
	now := s.now()
	var out []Notification
	err := s.inTx(ctx, func(t *tx) error {
		out = out[:0]
		rows, err := t.query(ctx, `UPDATE notification_outbox SET claimed_by = $1, due_at = $2, attempts = attempts + 1
			WHERE id IN (SELECT id FROM notification_outbox WHERE due_at <= $3 ORDER BY due_at, id LIMIT $4`+skip+`)
			RETURNING id, work_request_id, payload, created_at, attempts, delivered`,
			owner, toMicros(now.Add(lease)), toMicros(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n Notification
			var created int64
			if err := rows.Scan(&n.ID, &n.WorkRequestID, &n.Payload, &created, &n.Attempts, &n.Delivered); err != nil {
				return err
			}
			n.CreatedAt = fromMicros(created)
			out = append(out, n)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim notifications: %w", err)
	}
	return out, nil
}

// DeleteNotification removes a notification owner holds — delivered, or
// given up on. It reports false when owner no longer holds it (its lease
// ran out and another replica claimed it): that one decides now.
func (s *SQL) DeleteNotification(ctx context.Context, id int64, owner string) (bool, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM notification_outbox WHERE id = $1 AND claimed_by = $2", id, owner)
	if err != nil {
		return false, fmt.Errorf("delete notification %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PostponeNotification makes a notification owner holds due again at
// at, for another attempt, recording delivered (Notification.Delivered);
// uncount takes back the attempt its claim counted (one that was never
// made, as when a replica stops). It reports false when owner no longer
// holds the notification.
func (s *SQL) PostponeNotification(ctx context.Context, id int64, owner string, at time.Time, uncount bool, delivered string) (bool, error) {
	back := 0
	if uncount {
		back = 1
	}
	res, err := s.db.ExecContext(ctx, "UPDATE notification_outbox SET due_at = $1, claimed_by = NULL, attempts = attempts - $2, delivered = $3 WHERE id = $4 AND claimed_by = $5",
		toMicros(at), back, delivered, id, owner)
	if err != nil {
		return false, fmt.Errorf("postpone notification %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PendingNotifications counts the notifications not yet delivered, due
// or not.
func (s *SQL) PendingNotifications(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM notification_outbox").Scan(&n)
	return n, err
}
