package store

import (
	"context"
	"encoding/json"
	"sort"
)

// totalKey names one running total: a metric family and one label set.
// Labels hold ids (scope_id, worker_pool_id) rather than names where names
// can change; the metrics endpoint maps them to names at scrape time.
type totalKey struct {
	family string
	labels string // canonical JSON object, keys sorted
}

// contribution is what one row adds to one running total.
type contribution struct {
	key   totalKey
	value int64
}

// Labels is a label set of a running total.
type Labels map[string]string

// key builds the canonical key of a family and label set.
func key(family string, l Labels) totalKey {
	b, _ := json.Marshal(l) // encoding/json sorts map keys
	return totalKey{family: family, labels: string(b)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func one(family string, l Labels) contribution { return contribution{key(family, l), 1} }

func boolLabel(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// add records a change of a running total, applied when the transaction
// commits (flushTotals).
func (t *tx) add(k totalKey, delta int64) {
	if t.s.noTotals.Load() {
		return
	}
	if t.totals == nil {
		t.totals = map[totalKey]int64{}
	}
	t.totals[k] += delta
}

// flushTotals writes the transaction's accumulated changes. Keys are written
// in sorted order so that concurrent transactions lock total rows in the
// same order and cannot deadlock on them. Rows are never deleted, so a label
// set that once existed keeps reporting 0.
func (t *tx) flushTotals(ctx context.Context) error {
	if len(t.totals) == 0 {
		return nil
	}
	keys := make([]totalKey, 0, len(t.totals))
	for k := range t.totals {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].family != keys[j].family {
			return keys[i].family < keys[j].family
		}
		return keys[i].labels < keys[j].labels
	})
	for _, k := range keys {
		if t.totals[k] == 0 {
			// no net change: the row, if the label set ever existed, is
			// already there
			continue
		}
		if _, err := t.exec(ctx, `INSERT INTO metric_totals (family, labels, value) VALUES ($1, $2, $3)
			ON CONFLICT (family, labels) DO UPDATE SET value = metric_totals.value + excluded.value`,
			k.family, k.labels, t.totals[k]); err != nil {
			return err
		}
	}
	return nil
}

// Total is one running total as read back for the metrics endpoint.
type Total struct {
	Family string
	Labels Labels
	Value  int64
}
