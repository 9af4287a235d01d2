package store

import (
	"context"
	"time"
)

// DeliveryKey is one thing that identifies an incoming event: a delivery
// id its sender gave it, or its signature, under the header it came in.
type DeliveryKey struct {
	Header string
	Value  string
}

// RecordDelivery remembers the keys of one incoming event of source for
// window, in one transaction, after forgetting every key older than
// window. When any key is already remembered the event is a replay: it
// fails with a Conflict FieldError naming that key's header, and records
// nothing. Replicas sharing the database see each other's events.
func (s *SQL) RecordDelivery(ctx context.Context, source string, keys []DeliveryKey, window time.Duration) error {
	now := s.now()
	return s.inTx(ctx, func(t *tx) error {
		if _, err := t.exec(ctx, "DELETE FROM webhook_deliveries WHERE received_at < $1", toMicros(now.Add(-window))); err != nil {
			return err
		}
		for _, k := range keys {
			var at int64
			err := t.queryRow(ctx, "SELECT received_at FROM webhook_deliveries WHERE source = $1 AND header = $2 AND value = $3",
				source, k.Header, k.Value).Scan(&at)
			switch {
			case err == nil:
				return conflict(k.Header, "this event was already received at %s (same %s): kiln starts the work of an event once; events are remembered for %s",
					fromMicros(at).Format(time.RFC3339), k.Header, window)
			case err != errNoRows:
				return err
			}
		}
		for _, k := range keys {
			if _, err := t.exec(ctx, "INSERT INTO webhook_deliveries (source, header, value, received_at) VALUES ($1, $2, $3, $4)",
				source, k.Header, k.Value, toMicros(now)); err != nil {
				if constraintKind(err) == "unique" { // another replica, just now
					return conflict(k.Header, "this event was received twice at the same time (same %s): kiln starts its work once", k.Header)
				}
				return err
			}
		}
		return nil
	})
}

// ForgetDelivery drops the keys of an event whose work was refused or
// failed, so that the sender may send it again once the cause is fixed.
func (s *SQL) ForgetDelivery(ctx context.Context, source string, keys []DeliveryKey) error {
	return s.inTx(ctx, func(t *tx) error {
		for _, k := range keys {
			if _, err := t.exec(ctx, "DELETE FROM webhook_deliveries WHERE source = $1 AND header = $2 AND value = $3",
				source, k.Header, k.Value); err != nil {
				return err
			}
		}
		return nil
	})
}
