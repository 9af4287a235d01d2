package report

import (
	"testing"
	"time"
)

// TestSlotOf: intervals start at multiples of the interval since the Unix
// epoch, in UTC, whatever the caller's time zone.
func TestSlotOf(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, c := range []struct {
		now      time.Time
		interval time.Duration
		want     time.Time
	}{
		{time.Date(2026, 12, 1, 10, 59, 59, 0, time.UTC), time.Hour, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)},
		{time.Date(2026, 12, 1, 0, 30, 0, 0, paris), 24 * time.Hour, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)},
		{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), time.Hour, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)},
		// a week: from Thursday 1 January 1970
		{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), 7 * 24 * time.Hour, time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)},
	} {
		if got := slotOf(c.now, c.interval); !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("slotOf(%s, %s) = %s, want %s", c.now, c.interval, got, c.want)
		}
	}
}
