package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRecordDelivery: a key is refused while it is remembered, by any
// store on the database, and welcome again once the window has passed or
// the event was forgotten.
func TestRecordDelivery(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		a, b := open(t, dsn), open(t, dsn)
		now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
		clock := func() time.Time { return now }
		a.SetClock(clock)
		b.SetClock(clock)
		const window = time.Hour
		id := store.DeliveryKey{Header: "X-GitHub-Delivery", Value: "d-1"}
		sig := store.DeliveryKey{Header: "X-Hub-Signature-256", Value: "sha256=00"}
		must(t, a.RecordDelivery(ctx, "github", []store.DeliveryKey{id, sig}, window))
		fieldError(t, b.RecordDelivery(ctx, "github", []store.DeliveryKey{id}, window), "X-GitHub-Delivery", store.Conflict)
		other := store.DeliveryKey{Header: "X-GitHub-Delivery", Value: "d-2"}
		fieldError(t, b.RecordDelivery(ctx, "github", []store.DeliveryKey{other, sig}, window), "X-Hub-Signature-256", store.Conflict)
		// the refused event recorded nothing: d-2 is still new
		must(t, b.RecordDelivery(ctx, "github", []store.DeliveryKey{other}, window))
		// another source has its own ids
		must(t, b.RecordDelivery(ctx, "gitlab", []store.DeliveryKey{id}, window))

		must(t, a.ForgetDelivery(ctx, "github", []store.DeliveryKey{id, sig}))
		must(t, b.RecordDelivery(ctx, "github", []store.DeliveryKey{id}, window))
		now = now.Add(window + time.Second)
		must(t, a.RecordDelivery(ctx, "github", []store.DeliveryKey{id, other}, window))
	})
}
