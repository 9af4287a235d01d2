package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
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

// Labels is a label set of a running total. Label sets returned by the
// store (Snapshot, Recount) may be shared between calls: read them, never
// change them.
type Labels map[string]string

// key builds the canonical key of a family and label set.
func key(family string, l Labels) totalKey {
	return totalKey{family: family, labels: canonicalLabels(l)}
}

// canonicalLabels is json.Marshal(l), the stored form of a label set (keys
// sorted), written without reflection when every name and value is plain
// printable ASCII that JSON needs no escape for — all of kiln's labels but
// user-chosen text. Anything else goes through encoding/json itself, so
// the two forms never differ (FuzzCanonicalLabels). Every write computes a
// few of these keys.
func canonicalLabels(l Labels) string {
	if l == nil {
		return "null"
	}
	return canonical(l, false, "", "")
}

// canonicalWith is canonicalLabels of l with the label name=value added
// (replacing l's own), without copying l.
func canonicalWith(l Labels, name, value string) string {
	return canonical(l, true, name, value)
}

func canonical(l Labels, add bool, name, value string) string {
	var buf [12]string
	names := buf[:0]
	size := 2
	if add {
		if !plainJSON(name) || !plainJSON(value) {
			return marshalWith(l, add, name, value)
		}
		names = append(names, name)
		size += len(name) + len(value) + 6
	}
	for k, v := range l {
		if add && k == name {
			continue
		}
		if !plainJSON(k) || !plainJSON(v) {
			return marshalWith(l, add, name, value)
		}
		names = append(names, k)
		size += len(k) + len(v) + 6
	}
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		v := l[k]
		if add && k == name {
			v = value
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':', '"')
		b = append(b, v...)
		b = append(b, '"')
	}
	b = append(b, '}')
	return string(b)
}

// marshalWith is canonical through encoding/json, for names or values
// that need escaping.
func marshalWith(l Labels, add bool, name, value string) string {
	m := make(Labels, len(l)+1)
	for k, v := range l {
		m[k] = v
	}
	if add {
		m[name] = value
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// plainJSON says whether encoding/json writes s unchanged between quotes:
// printable ASCII but for the characters it escapes (" \ and, as HTML-safe
// JSON, < > &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func one(family string, l Labels) contribution { return contribution{key(family, l), 1} }

func boolLabel(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// add records a change of a running total, journaled when the transaction
// commits (commitPostgres, commitSQLite).
func (t *tx) add(k totalKey, delta int64) {
	if t.s.noTotals.Load() {
		return
	}
	if t.totals == nil {
		t.totals = map[totalKey]int64{}
	}
	t.totals[k] += delta
}

// journalEntry is the transaction's net changes as one journal row: a
// JSON array of [family, labels, value] triples, labels being the stored
// form of the label set (itself JSON) as a string. It is "" when nothing
// changed; a key whose changes cancel out is left out, so a label set that
// did not exist before the transaction does not exist after it either.
// One row per transaction, whatever it changed: the writer inserts one
// tuple, the folder deletes one.
func (t *tx) journalEntry() string {
	size := 2
	for k := range t.totals {
		size += len(k.family) + 2*len(k.labels) + 30
	}
	b := make([]byte, 0, size)
	for k, v := range t.totals {
		if v == 0 {
			continue
		}
		if len(b) == 0 {
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, k.family)
		b = append(b, ',')
		b = appendJSONString(b, k.labels)
		b = append(b, ',')
		b = strconv.AppendInt(b, v, 10)
		b = append(b, ']')
	}
	if len(b) == 0 {
		return ""
	}
	return string(append(b, ']'))
}

// appendJSONString appends s as a JSON string. s must be valid UTF-8, as
// family names (constants) and stored label sets (encoding/json's output)
// are; only the quote, the backslash and control characters need escaping.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		if c == '"' || c == '\\' {
			b = append(b, '\\', c)
		} else {
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// journalInsert writes a transaction's journal entry: one statement, one
// parameter, one text whatever the transaction changed (so it is prepared
// once per connection).
const journalInsert = "INSERT INTO metric_journal (entries) VALUES ($1)"

// writeJournal inserts the transaction's journal entry, on SQLite, as the
// transaction's last statement. The statement is kept prepared: SQLite
// spends as long parsing a statement as running this one.
func (t *tx) writeJournal(ctx context.Context) error {
	entry := t.journalEntry()
	if entry == "" {
		return nil
	}
	if t.s.faultAt(stepJournal) {
		return t.execFault(ctx, stepJournal)
	}
	var err error
	if st := t.s.journalStmt(ctx); st != nil {
		_, err = t.sqltx.StmtContext(ctx, st).ExecContext(ctx, entry)
	} else {
		_, err = t.exec(ctx, journalInsert, entry)
	}
	if err != nil {
		return fmt.Errorf("journal of running totals: %w", err)
	}
	return nil
}

// journalStmt returns SQLite's prepared journal insert, preparing it on
// first use; nil when it cannot be prepared (the caller then sends the
// text, which fails or not on its own). It lives as long as the store.
func (s *SQL) journalStmt(ctx context.Context) *sql.Stmt {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.journalPrepared == nil {
		st, err := s.db.PrepareContext(ctx, journalInsert)
		if err != nil {
			return nil
		}
		s.journalPrepared = st
	}
	return s.journalPrepared
}

// journalChanges is a query of the changes in the journal entries of
// source (a table or subquery with an entries column) as rows (family,
// labels, value), one per triple. PostgreSQL parses each entry once, as
// jsonb: the json type's operators parse an element again for every field
// (measured per artifact's entry: 8 µs of server CPU as jsonb, 13-17 µs
// as json, 6.5-9.4 µs for the same changes kept as one row each — which
// cost the writer 16 µs to insert, against 6 µs for one entry).
func (s *SQL) journalChanges(source string) string {
	if s.dialect == Postgres {
		return "SELECT c->>0 AS family, c->>1 AS labels, (c->>2)::bigint AS value FROM " + source +
			" j, jsonb_array_elements(j.entries::jsonb) c"
	}
	return "SELECT c.value->>0 AS family, c.value->>1 AS labels, c.value->>2 AS value FROM " + source +
		" j, json_each(j.entries) c"
}

// ledger is a table of running totals that the folder feeds from the
// journal: rows (family, labels, value) with primary key (family, labels),
// never deleted, so that a label set that once existed keeps reporting 0.
// A ledger keeps the families it lists; the one that lists none keeps
// every family that no other ledger lists.
//
// metric_totals is the public metrics' ledger, read whole by every scrape.
// Figures that scrapes must not pay for — the dashboard's rollups per hour
// × workspace × task name — get a ledger of their own: one table in a
// migration, one entry in SQL.ledgers, their contributions from the rows
// they count (table hooks or tx.add) and their recount queries. Journal,
// fold, rollback and the reader's view of unfolded changes
// (ledgerTotals) then work for them unchanged.
type ledger struct {
	table    string
	families []string
}

// defaultLedgers are the ledgers of a store.
func defaultLedgers() []ledger { return []ledger{{table: "metric_totals"}} }

// metricsLedger is the ledger of the public metrics.
func (s *SQL) metricsLedger() ledger {
	for _, lg := range s.ledgers {
		if lg.table == "metric_totals" {
			return lg
		}
	}
	panic("store: no metric_totals ledger")
}

// journalCondition is the SQL condition on the rows of journalChanges
// that selects lg's families.
func (s *SQL) journalCondition(lg ledger) string {
	quote := func(names []string) string {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = "'" + strings.ReplaceAll(n, "'", "''") + "'"
		}
		return strings.Join(q, ", ")
	}
	if len(lg.families) > 0 {
		return "family IN (" + quote(lg.families) + ")"
	}
	var others []string
	for _, o := range s.ledgers {
		others = append(others, o.families...)
	}
	if len(others) == 0 {
		return "1 = 1"
	}
	return "family NOT IN (" + quote(others) + ")"
}

// ledgerTotals reads lg's totals with the changes still in the journal
// added, within the caller's transaction (see ledgerRead).
func (t *tx) ledgerTotals(ctx context.Context, lg ledger) ([]Total, error) {
	lr := t.s.newLedgerRead(lg)
	if err := t.run(ctx, lr.reads()...); err != nil {
		return nil, err
	}
	return lr.totals()
}

// ledgerRead reads a ledger's totals with the changes still in the
// journal added, in the reads of one snapshot (readAll, tx.run): the
// figures are those of the rows committed so far, whether or not a fold
// has run since. Label sets are decoded once per process (labelCache).
type ledgerRead struct {
	s  *SQL
	lg ledger
	// unfolded changes, summed per key ("family\x00labels"): a handful
	// between two folds
	pending map[string]int64
	out     []Total
	// a row, scanned
	family, labels []byte
	value          int64
	key            []byte
	// the label sets of the ledger's rows as the last read returned
	// them (rowOrder), the position in it where the next row is
	// expected, and — once a row was not where expected — the sets of
	// this read's rows so far, which become the next read's order
	last     *rowOrder
	next     int
	count    int // the ledger's rows read so far
	diverged bool
	sets     []labelSet
}

func (s *SQL) newLedgerRead(lg ledger) *ledgerRead {
	return &ledgerRead{s: s, lg: lg, pending: map[string]int64{}, out: make([]Total, 0, s.totalsHint.Load()),
		last: s.labels.order(lg.table)}
}

// set returns the label set of the row just scanned (lr.key): the one
// the last read had at the expected position when its key is the same —
// a ledger's rows come back in the same order until a fold moves some,
// and comparing a key costs less than hashing it — or else the label
// cache's.
func (lr *ledgerRead) set() (labelSet, error) {
	var set labelSet
	if lr.next < len(lr.last.sets) && lr.last.sets[lr.next].key == string(lr.key) {
		set = lr.last.sets[lr.next]
		lr.next++
	} else {
		var err error
		if set, err = lr.s.labels.get(lr.key); err != nil {
			return set, err
		}
		if !lr.diverged {
			lr.diverged = true
			lr.sets = append(make([]labelSet, 0, max(len(lr.last.sets), 64)), lr.last.sets[:lr.count]...)
		}
		if i, ok := lr.last.index[set.n]; ok {
			lr.next = i + 1 // the rows after a moved one follow in the old order
		}
	}
	if lr.diverged {
		lr.sets = append(lr.sets, set)
	}
	lr.count++
	return set, nil
}

// reads are the queries of the ledger: the journal's unfolded changes,
// then the ledger's rows in no order (sorting them cost PostgreSQL 5–13 ms
// of a scrape, reading them 0.5 ms; totals groups them by family).
func (lr *ledgerRead) reads() []read {
	dest := func(r *rows) []any { return []any{r.raw(&lr.family), r.raw(&lr.labels), &lr.value} }
	return []read{{
		query: "SELECT family, labels, CAST(SUM(value) AS BIGINT) FROM (" + lr.s.journalChanges("metric_journal") + ") x WHERE " +
			lr.s.journalCondition(lr.lg) + " GROUP BY family, labels",
		dest: dest,
		row: func() error {
			lr.pending[string(lr.family)+"\x00"+string(lr.labels)] += lr.value
			return nil
		},
	}, {
		query: "SELECT family, labels, value FROM " + lr.lg.table,
		dest:  dest,
		row: func() error {
			v := lr.value
			lr.key = append(append(append(lr.key[:0], lr.family...), 0), lr.labels...)
			if len(lr.pending) > 0 {
				if d, ok := lr.pending[string(lr.key)]; ok {
					v += d
					delete(lr.pending, string(lr.key))
				}
			}
			set, err := lr.set()
			if err != nil {
				return fmt.Errorf("%s %s %s: %w", lr.lg.table, lr.family, lr.labels, err)
			}
			lr.out = append(lr.out, Total{Family: set.family, Labels: set.labels, Value: v, Set: set.n})
			return nil
		},
	}}
}

// totals returns what the reads read, grouped by family: the ledger's
// totals, then the label sets that only the journal has yet.
func (lr *ledgerRead) totals() ([]Total, error) {
	switch {
	case lr.diverged:
		lr.s.labels.setOrder(lr.lg.table, lr.sets)
	case lr.count < len(lr.last.sets): // the last rows went
		lr.s.labels.setOrder(lr.lg.table, lr.last.sets[:lr.count])
	}
	keys := make([]string, 0, len(lr.pending))
	for k := range lr.pending {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set, err := lr.s.labels.get([]byte(k))
		if err != nil {
			family, labels, _ := strings.Cut(k, "\x00")
			return nil, fmt.Errorf("metric_journal %s %s: %w", family, labels, err)
		}
		lr.out = append(lr.out, Total{Family: set.family, Labels: set.labels, Value: lr.pending[k], Set: set.n})
	}
	lr.s.totalsHint.Store(int64(len(lr.out)))
	return groupByFamily(lr.out), nil
}

// groupByFamily returns ts with each family's totals together, in the
// order the families first appear and each family's in the order of ts.
// It is ts itself when they already were.
func groupByFamily(ts []Total) []Total {
	index := map[string]int{}
	var counts []int
	changes := 0
	for i, t := range ts {
		k, ok := index[t.Family]
		if !ok {
			k = len(counts)
			index[t.Family] = k
			counts = append(counts, 0)
		}
		counts[k]++
		if i > 0 && ts[i-1].Family != t.Family {
			changes++
		}
	}
	if changes <= len(counts)-1 {
		return ts
	}
	next := make([]int, len(counts))
	for k := 1; k < len(counts); k++ {
		next[k] = next[k-1] + counts[k-1]
	}
	out := make([]Total, len(ts))
	for _, t := range ts {
		k := index[t.Family]
		out[next[k]] = t
		next[k]++
	}
	return out
}

// labelCache decodes each distinct stored label set once per process and
// hands the same Labels (and family string) to every later reader: a
// scrape then costs a map lookup per series instead of a JSON decoding.
// It also numbers each (family, label set) pair (Total.Set), so that a
// reader can remember what it derived from one without hashing it again.
// The number of entries is bounded by the label sets that ever existed,
// which is what the totals tables hold anyway.
type labelCache struct {
	mu       sync.RWMutex
	sets     map[string]labelSet // by family NUL stored labels
	labels   map[string]Labels   // by stored labels, shared by families
	families map[string]string   // one string per family name
	// orders are the label sets of each ledger table's rows in the
	// order the last read of the table returned them (ledgerRead.set)
	orders map[string]*rowOrder
}

// labelSet is a family and a decoded label set, numbered.
type labelSet struct {
	family string
	labels Labels
	n      uint32
	key    string // family NUL stored labels
}

// rowOrder is the label sets of a ledger table's rows in the order one
// read returned them, and where each set is in it. Read-only once made.
type rowOrder struct {
	sets  []labelSet
	index map[uint32]int
}

// order returns the last order recorded for table (an empty one at
// first).
func (c *labelCache) order(table string) *rowOrder {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if o := c.orders[table]; o != nil {
		return o
	}
	return &rowOrder{}
}

// setOrder records the order of table's rows that a read returned.
func (c *labelCache) setOrder(table string, sets []labelSet) {
	o := &rowOrder{sets: sets, index: make(map[uint32]int, len(sets))}
	for i, set := range sets {
		o.index[set.n] = i
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.orders == nil {
		c.orders = map[string]*rowOrder{}
	}
	c.orders[table] = o
}

// get returns the label set of a stored key, family NUL labels; the
// caller may reuse key's memory afterwards.
func (c *labelCache) get(key []byte) (labelSet, error) {
	c.mu.RLock()
	set, ok := c.sets[string(key)]
	c.mu.RUnlock()
	if ok {
		return set, nil
	}
	family, labels, found := bytes.Cut(key, []byte{0})
	if !found {
		return labelSet{}, fmt.Errorf("no family in key %q", key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if set, ok := c.sets[string(key)]; ok {
		return set, nil
	}
	l, ok := c.labels[string(labels)]
	if !ok {
		if err := json.Unmarshal(labels, &l); err != nil {
			return labelSet{}, err
		}
	}
	if c.sets == nil {
		c.sets, c.labels, c.families = map[string]labelSet{}, map[string]Labels{}, map[string]string{}
	}
	c.labels[string(labels)] = l
	f, ok := c.families[string(family)]
	if !ok {
		f = string(family)
		c.families[f] = f
	}
	k := string(key)
	set = labelSet{family: f, labels: l, n: uint32(len(c.sets) + 1), key: k}
	c.sets[k] = set
	return set, nil
}

// Total is one running total as read back for the metrics endpoint. Its
// Labels are shared with other readers: read-only.
type Total struct {
	Family string
	Labels Labels
	Value  int64
	// Set numbers the family and label set within this process, from 1:
	// totals with the same Set have the same Family and Labels, in every
	// snapshot. 0 means unnumbered (totals not read from the store's
	// tables, e.g. a recount).
	Set uint32
}
