package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBrowsePlansReadOneIndexRange asks each database how it would run
// every kind of page of the dashboard's lists, and refuses a plan that
// sorts (the order would not come from an index, so the whole match set
// is read first) or reads the table in full. The tables are nearly empty,
// so sequential scans are switched off on PostgreSQL: the question is
// whether an index can serve the page, not whether the planner needs one
// yet.
func TestBrowsePlansReadOneIndexRange(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	pages := map[string]Browse{
		"workspace":              {},
		"workflows":              {Workflows: true},
		"status":                 {Status: model.StatusPending},
		"task":                   {TaskName: "sbuild"},
		"status, time, next":     {Status: model.StatusCompleted, From: at, To: at.Add(time.Hour), Before: &Cursor{at, 9}},
		"task, next":             {TaskName: "sbuild", Before: &Cursor{at, 9}},
		"architecture":           {Architecture: "amd64"},
		"result (a walk)":        {Result: model.ResultFailure},
		"status and task (walk)": {Status: model.StatusPending, TaskName: "sbuild", WorkerID: 3, Result: model.ResultSuccess},
		"workflows, time (walk)": {Workflows: true, Status: model.StatusRunning, From: at},
	}
	testdb.Each(t, func(t *testing.T, dsn string) {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		conn, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		explain := "EXPLAIN QUERY PLAN "
		if s.dialect == Postgres {
			explain = "EXPLAIN "
			if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
				t.Fatal(err)
			}
		}
		type explained struct {
			q     string
			args  []any
			index string
		}
		plans := map[string]explained{}
		for name, b := range pages {
			b.WorkspaceID = 1
			q, args, walk, index := browseQuery(s.dialect, b, 50)
			if walk {
				// and the window's end, where a short page stops
				eq, eargs := windowEndQuery(s.dialect, b)
				plans[name+" (window end)"] = explained{eq, eargs, index}
			}
			plans[name] = explained{q, args, index}
		}
		for name, e := range plans {
			q, args, index := e.q, e.args, e.index
			rows, err := conn.QueryContext(ctx, explain+q, args...)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var plan []string
			for rows.Next() {
				cols, _ := rows.Columns()
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				if s, ok := vals[len(vals)-1].(string); ok {
					plan = append(plan, s)
				} else if b, ok := vals[len(vals)-1].([]byte); ok {
					plan = append(plan, string(b))
				}
			}
			rows.Close()
			text := strings.Join(plan, "\n")
			for _, bad := range []string{"Sort", "Seq Scan", "TEMP B-TREE", "SCAN work_requests\n"} {
				if strings.Contains(text+"\n", bad) {
					t.Errorf("%s: the plan has %q:\n%s\n%s", name, bad, q, text)
				}
			}
			if !strings.Contains(text, index+" ") {
				t.Errorf("%s: the plan does not use %s:\n%s\n%s", name, index, q, text)
			}
		}
	})
}
