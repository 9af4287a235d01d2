package runner

import (
	"testing"
	"time"
)

// Reconnection waits start near 250 ms, double, spread ±50 %, never pass
// MaxBackoff, and start over after a session the server welcomed.
func TestReconnectBackoff(t *testing.T) {
	for _, maxWait := range []time.Duration{DefaultMaxBackoff, 100 * time.Millisecond} {
		b := reconnectBackoff(maxWait)
		first := min(250*time.Millisecond, maxWait*2/3)
		for round := range 2 {
			var waits []time.Duration
			for range 20 {
				waits = append(waits, b.NextBackOff())
			}
			if w := waits[0]; w < first/2 || w > first*3/2 {
				t.Errorf("max %v, round %d: first wait %v, want %v ± 50 %%", maxWait, round, w, first)
			}
			for i, w := range waits {
				if w <= 0 || w > maxWait {
					t.Fatalf("max %v: wait %d is %v, outside (0, %v]", maxWait, i, w, maxWait)
				}
			}
			if last := waits[len(waits)-1]; last < maxWait/3 {
				t.Errorf("max %v: after 20 attempts the wait is still %v", maxWait, last)
			}
			b.Reset() // a welcomed session
		}
	}
}
