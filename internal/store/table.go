package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Viewer is who asks. A nil *Viewer is kiln itself and sees everything;
// an admin sees everything too. Other users see public workspaces and the
// private ones they are members of (directly or through a group), and a
// scope-restricted token sees only its scope.
type Viewer struct {
	UserID  int64
	Admin   bool
	ScopeID *int64
}

// SeesScope reports whether a scope restriction lets the viewer see
// objects of scope id (scopes themselves have no workspace, so the
// store's visibility does not narrow them: callers ask this).
func (v *Viewer) SeesScope(id int64) bool {
	return v == nil || v.ScopeID == nil || *v.ScopeID == id
}

// Query selects a page of a collection. Pages are keyset-paginated on id:
// After is the last id of the previous page.
type Query struct {
	Limit  int
	After  int64
	Filter map[string]string
	Viewer *Viewer
}

// MaxPageSize bounds Query.Limit so that one list call stays cheap.
const MaxPageSize = 1000

// DefaultPageSize is the page size when Query.Limit is 0.
const DefaultPageSize = 100

// Table is the create/read/update/delete contract shared by kiln's plain
// resources. See the package comment for its transaction guarantees.
type Table[T any] interface {
	// Create inserts obj and sets its id and creation time.
	Create(ctx context.Context, obj *T) error
	// Get returns the object with id, if the viewer may see it.
	Get(ctx context.Context, id int64, v *Viewer) (*T, error)
	// Lookup resolves a reference by id ("12") or, for tables with a unique
	// name, by name.
	Lookup(ctx context.Context, ref string, v *Viewer) (*T, error)
	// List returns one page, ordered by id.
	List(ctx context.Context, q Query) ([]T, error)
	// Update applies fn to the current object and stores the result in one
	// transaction; fn's error aborts it.
	Update(ctx context.Context, id int64, v *Viewer, fn func(*T) error) (*T, error)
	// Delete removes the object; it fails with a Conflict FieldError while
	// other objects still refer to it.
	Delete(ctx context.Context, id int64, v *Viewer) error
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// tableDef describes how one resource maps onto its table. The generic
// table[T] turns it into a Table[T]; hooks carry what differs between
// resources (validation, running totals, side tables).
type tableDef[T any] struct {
	name    string // resource name in error messages, e.g. "scope"
	table   string
	columns []string // all columns but id, in the order of values()
	// fields names the input field of a column where the two differ
	// ("data" of a work request is its "task_data"), for FieldErrors.
	fields map[string]string
	id     func(*T) *int64
	// values returns the column values of obj in columns order; stamp sets
	// its creation time before insert.
	values func(*T) []any
	stamp  func(*T, int64)
	// scan reads id then columns.
	scan func(scanner) (*T, error)
	// filters maps query filter names to columns.
	filters map[string]string
	// nameColumn is a globally unique name, for Lookup by name.
	nameColumn string
	// workspaceColumn holds the workspace id of workspace-owned objects
	// ("id" for workspaces themselves); "" when visibility does not apply.
	workspaceColumn string
	// check validates obj inside the transaction (old is nil on create):
	// references exist, names are free. It returns FieldErrors.
	check func(ctx context.Context, t *tx, old, obj *T) error
	// totals lists obj's contributions to the running totals.
	totals func(ctx context.Context, t *tx, obj *T) ([]contribution, error)
	// load fills side-table fields after a scan (e.g. group members).
	load func(ctx context.Context, t *tx, obj *T) error
	// afterWrite writes side tables and cross-object totals after the row
	// (old is nil on create, obj nil on delete).
	afterWrite func(ctx context.Context, t *tx, old, obj *T) error
	// inUse names, for a Conflict on delete, what still refers to obj.
	inUse func(ctx context.Context, t *tx, obj *T) error
}

type table[T any] struct {
	s   *SQL
	def *tableDef[T]
}

func (tb *table[T]) selectSQL() string {
	return "SELECT id, " + strings.Join(tb.def.columns, ", ") + " FROM " + tb.def.table
}

func (tb *table[T]) Create(ctx context.Context, obj *T) error {
	return tb.s.inTx(ctx, func(t *tx) error { return tb.create(ctx, t, obj) })
}

func (tb *table[T]) create(ctx context.Context, t *tx, obj *T) error {
	if tb.def.stamp != nil {
		tb.def.stamp(obj, toMicros(t.s.now()))
	}
	// before check, whose lookups would carry the text to the database
	if err := tb.checkValues(tb.def.values(obj)); err != nil {
		return err
	}
	if tb.def.check != nil {
		if err := tb.def.check(ctx, t, nil, obj); err != nil {
			return err
		}
	}
	values := tb.def.values(obj)
	ph := make([]string, len(tb.def.columns))
	for i := range ph {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	q := "INSERT INTO " + tb.def.table + " (" + strings.Join(tb.def.columns, ", ") + ") VALUES (" + strings.Join(ph, ", ") + ") RETURNING id"
	if err := t.queryRow(ctx, q, values...).Scan(tb.def.id(obj)); err != nil {
		return tb.writeError(err)
	}
	if tb.def.afterWrite != nil {
		if err := tb.def.afterWrite(ctx, t, nil, obj); err != nil {
			return err
		}
	}
	return tb.adjust(ctx, t, obj, +1)
}

func (tb *table[T]) adjust(ctx context.Context, t *tx, obj *T, sign int64) error {
	if tb.def.totals == nil || obj == nil || t.s.noTotals.Load() {
		return nil
	}
	cs, err := tb.def.totals(ctx, t, obj)
	if err != nil {
		return err
	}
	for _, c := range cs {
		t.add(c.key, sign*c.value)
	}
	return nil
}

// checkValues refuses what no column of either database may hold (see
// text.go), naming the field of the column.
func (tb *table[T]) checkValues(values []any) error {
	for i, v := range values {
		field := tb.def.columns[i]
		if f, ok := tb.def.fields[field]; ok {
			field = f
		}
		if err := checkText(field, v); err != nil {
			return err
		}
	}
	return nil
}

func (tb *table[T]) writeError(err error) error {
	switch constraintKind(err) {
	case "unique":
		return conflict("", "a %s with these values already exists", tb.def.name)
	case "foreign":
		return invalid("", "a referenced object does not exist, or the %s is still in use", tb.def.name)
	case "check":
		return invalid("", "the %s violates a constraint: %v", tb.def.name, err)
	}
	return fmt.Errorf("write %s: %w", tb.def.name, err)
}

func (tb *table[T]) Get(ctx context.Context, id int64, v *Viewer) (*T, error) {
	var out *T
	err := tb.s.readTx(ctx, func(t *tx) error {
		var err error
		out, err = tb.get(ctx, t, id, v, false)
		return err
	})
	return out, err
}

func (tb *table[T]) get(ctx context.Context, t *tx, id int64, v *Viewer, lock bool) (*T, error) {
	var w where
	w.add("id = ?", id)
	tb.visibility(&w, v)
	q := tb.selectSQL() + w.sql()
	if lock {
		q += t.forUpdate()
	}
	obj, err := tb.def.scan(t.queryRow(ctx, q, w.args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s %d: %w", tb.def.name, id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s %d: %w", tb.def.name, id, err)
	}
	if tb.def.load != nil {
		if err := tb.def.load(ctx, t, obj); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

func (tb *table[T]) Lookup(ctx context.Context, ref string, v *Viewer) (*T, error) {
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
		return tb.Get(ctx, id, v)
	}
	if tb.def.nameColumn == "" {
		return nil, fmt.Errorf("%s %q: %w (refer to it by id)", tb.def.name, ref, ErrNotFound)
	}
	if checkText("", ref) != nil {
		return nil, fmt.Errorf("%s %q: %w (no name holds a NUL character)", tb.def.name, ref, ErrNotFound)
	}
	var out *T
	err := tb.s.readTx(ctx, func(t *tx) error {
		var w where
		w.add(tb.def.nameColumn+" = ?", ref)
		tb.visibility(&w, v)
		obj, err := tb.def.scan(t.queryRow(ctx, tb.selectSQL()+w.sql(), w.args...))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s %q: %w", tb.def.name, ref, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if tb.def.load != nil {
			if err := tb.def.load(ctx, t, obj); err != nil {
				return err
			}
		}
		out = obj
		return nil
	})
	return out, err
}

func (tb *table[T]) List(ctx context.Context, q Query) ([]T, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	if limit > MaxPageSize {
		limit = MaxPageSize
	}
	var w where
	if q.After > 0 {
		w.add("id > ?", q.After)
	}
	for name, val := range q.Filter {
		col, ok := tb.def.filters[name]
		if !ok {
			return nil, invalid(name, "unknown filter for %s lists", tb.def.name)
		}
		if err := checkText(name, val); err != nil {
			return nil, err
		}
		w.add(col+" = ?", filterValue(val))
	}
	tb.visibility(&w, q.Viewer)
	var out []T
	err := tb.s.readTx(ctx, func(t *tx) error {
		rows, err := t.query(ctx, tb.selectSQL()+w.sql()+" ORDER BY id LIMIT "+strconv.Itoa(limit), w.args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			obj, err := tb.def.scan(rows)
			if err != nil {
				return err
			}
			out = append(out, *obj)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if tb.def.load != nil {
			for i := range out {
				if err := tb.def.load(ctx, t, &out[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if out == nil {
		out = []T{}
	}
	return out, err
}

// filterValue turns the query-string spelling of booleans into values both
// databases compare correctly with BOOLEAN columns.
func filterValue(v string) any {
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	return v
}

func (tb *table[T]) Update(ctx context.Context, id int64, v *Viewer, fn func(*T) error) (*T, error) {
	var out *T
	err := tb.s.inTx(ctx, func(t *tx) error {
		var err error
		out, err = tb.update(ctx, t, id, v, fn)
		return err
	})
	return out, err
}

func (tb *table[T]) update(ctx context.Context, t *tx, id int64, v *Viewer, fn func(*T) error) (*T, error) {
	old, err := tb.get(ctx, t, id, v, true)
	if err != nil {
		return nil, err
	}
	cp, err := tb.get(ctx, t, id, v, false)
	if err != nil {
		return nil, err
	}
	if err := fn(cp); err != nil {
		return nil, err
	}
	*tb.def.id(cp) = id
	if err := tb.checkValues(tb.def.values(cp)); err != nil {
		return nil, err
	}
	if tb.def.check != nil {
		if err := tb.def.check(ctx, t, old, cp); err != nil {
			return nil, err
		}
	}
	sets := make([]string, len(tb.def.columns))
	for i, c := range tb.def.columns {
		sets[i] = c + " = $" + strconv.Itoa(i+1)
	}
	args := append(tb.def.values(cp), id)
	q := "UPDATE " + tb.def.table + " SET " + strings.Join(sets, ", ") + " WHERE id = $" + strconv.Itoa(len(args))
	if _, err := t.exec(ctx, q, args...); err != nil {
		return nil, tb.writeError(err)
	}
	if err := tb.adjust(ctx, t, old, -1); err != nil {
		return nil, err
	}
	if tb.def.afterWrite != nil {
		if err := tb.def.afterWrite(ctx, t, old, cp); err != nil {
			return nil, err
		}
	}
	if err := tb.adjust(ctx, t, cp, +1); err != nil {
		return nil, err
	}
	return cp, nil
}

func (tb *table[T]) Delete(ctx context.Context, id int64, v *Viewer) error {
	return tb.s.inTx(ctx, func(t *tx) error { return tb.delete(ctx, t, id, v) })
}

func (tb *table[T]) delete(ctx context.Context, t *tx, id int64, v *Viewer) error {
	old, err := tb.get(ctx, t, id, v, true)
	if err != nil {
		return err
	}
	if tb.def.inUse != nil {
		if err := tb.def.inUse(ctx, t, old); err != nil {
			return err
		}
	}
	if err := tb.adjust(ctx, t, old, -1); err != nil {
		return err
	}
	if tb.def.afterWrite != nil {
		if err := tb.def.afterWrite(ctx, t, old, nil); err != nil {
			return err
		}
	}
	if _, err := t.exec(ctx, "DELETE FROM "+tb.def.table+" WHERE id = $1", id); err != nil {
		if constraintKind(err) == "foreign" {
			return conflict("", "the %s is still in use", tb.def.name)
		}
		return err
	}
	return nil
}

// visibility restricts a query to what v may see.
func (tb *table[T]) visibility(w *where, v *Viewer) {
	if tb.def.workspaceColumn == "" {
		return
	}
	visibleWorkspaces(w, tb.def.workspaceColumn, v)
}

// visibleWorkspaces restricts a query to rows whose workspace, in column,
// v may see: the one rule of who sees what, for the tables and for the
// rollups alike.
func visibleWorkspaces(w *where, column string, v *Viewer) {
	if v == nil {
		return
	}
	if v.ScopeID != nil {
		w.add(column+" IN (SELECT id FROM workspaces WHERE scope_id = ?)", *v.ScopeID)
	}
	if v.Admin {
		return
	}
	w.add(column+` IN (SELECT vw.id FROM workspaces vw WHERE vw.public OR EXISTS (
		SELECT 1 FROM workspace_members vm WHERE vm.workspace_id = vw.id AND (vm.user_id = ?
			OR vm.group_id IN (SELECT gm.group_id FROM group_members gm WHERE gm.user_id = ?))))`, v.UserID, v.UserID)
}

// where builds a WHERE clause; each ? becomes the next $N.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, w.bind(cond, args...))
}

// bind numbers the ? of cond as add does and returns it, without adding
// it to the clause: for an expression elsewhere in the same statement.
func (w *where) bind(cond string, args ...any) string {
	for _, a := range args {
		w.args = append(w.args, a)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(w.args)), 1)
	}
	return cond
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// exists reports whether q (a SELECT 1 …) returns a row.
func (t *tx) exists(ctx context.Context, q string, args ...any) (bool, error) {
	if err := checkArgs(args); err != nil {
		return false, err
	}
	var one int
	err := t.queryRow(ctx, q, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
