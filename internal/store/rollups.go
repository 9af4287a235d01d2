package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// The dashboard's rollups: running totals of finished work requests by
// completion hour or day × workspace × task, and of current requests by
// workspace × status, kept in the same transaction as the requests they
// count through the journal of running totals (a ledger of their own,
// statistics_totals, which scrapes never read). They are what the
// dashboard's statistics, charts and counts read instead of the work
// requests themselves (package statistics); like every running total
// they describe the requests as they are now: a request retried after a
// failure counts once, with its last outcome, and a deleted one not at
// all.
//
// Families and labels (all label values plain ASCII: ids, enumerations,
// task names; times in Unix seconds, UTC):
//
//	runs_by_hour       period (hour), workspace_id, task_type, task_name, result
//	runs_by_day        period (day), workspace_id, task_type, task_name, result, le
//	waits_by_day       period (day), workspace_id, task_type, task_name, le
//	requests_by_status workspace_id, status
//
// result is the request's result, or "aborted". le is the bucket
// (StatisticsBuckets, microseconds, "+Inf" past the last) of its run time
// in runs_by_day — absent when it has none (aborted before it ran) — and
// of its queue wait (started_at − created_at, for requests that started)
// in waits_by_day. Keeping the run time's bucket with the result (rather
// than a histogram family beside a result family) costs one key per
// request a day, where farms are sparse, and still adds up by result or by
// bucket.
const (
	runsByHour       = "runs_by_hour"
	runsByDay        = "runs_by_day"
	waitsByDay       = "waits_by_day"
	requestsByStatus = "requests_by_status"
)

// statisticsFamilies are the families of the statistics ledger.
var statisticsFamilies = []string{runsByHour, runsByDay, waitsByDay, requestsByStatus}

// statisticsLedger is the ledger of the rollups.
func statisticsLedger() ledger {
	return ledger{table: "statistics_totals", families: statisticsFamilies}
}

const (
	hourSeconds = 3600
	daySeconds  = 24 * 3600
)

// outcome is how a finished request ended, as the rollups say it.
func outcome(o *model.WorkRequest) string {
	if o.Status == model.StatusAborted {
		return "aborted"
	}
	return string(o.Result)
}

// bucketLabel is the "le" label of value in StatisticsBuckets.
func bucketLabel(us int64) string {
	i, _ := slices.BinarySearch(StatisticsBuckets, us)
	if i == len(StatisticsBuckets) {
		return InfBucket
	}
	return strconv.FormatInt(StatisticsBuckets[i], 10)
}

// rollupContributions are a work request's contributions to the rollups:
// its status in its workspace, and, once finished, its run by hour and by
// day and its wait.
func rollupContributions(o *model.WorkRequest) []contribution {
	ws := itoa(o.WorkspaceID)
	cs := []contribution{one(requestsByStatus, Labels{"workspace_id": ws, "status": string(o.Status)})}
	if !o.Status.Finished() || o.CompletedAt == nil {
		return cs
	}
	at := o.CompletedAt.Unix()
	group := func(period int64) Labels {
		return Labels{"period": strconv.FormatInt(period, 10), "workspace_id": ws, "task_type": string(o.TaskType),
			"task_name": o.TaskName}
	}
	hour := group(at / hourSeconds * hourSeconds)
	hour["result"] = outcome(o)
	day := group(at / daySeconds * daySeconds)
	day["result"] = outcome(o)
	if o.ExecutionTime != nil {
		day["le"] = bucketLabel(*o.ExecutionTime)
	}
	cs = append(cs, one(runsByHour, hour), one(runsByDay, day))
	if o.StartedAt != nil {
		wait := group(at / daySeconds * daySeconds)
		wait["le"] = bucketLabel(max(0, o.StartedAt.Sub(o.CreatedAt).Microseconds()))
		cs = append(cs, one(waitsByDay, wait))
	}
	return cs
}

// statisticsColumns are the columns of statistics_totals that its
// migration generates from the labels; journalColumns computes the same
// from a journal row, so that unfolded changes are read alike.
var statisticsColumns = []string{"period", "workspace_id", "task_type", "task_name", "result", "le", "status"}

// journalColumns is the SELECT list that gives a journal change the
// generated columns of statistics_totals, with the expressions of the
// migration.
func (s *SQL) journalColumns() string {
	js := "TEXT"
	if s.dialect == Postgres {
		js = "JSONB"
	}
	var b strings.Builder
	b.WriteString("family, value")
	for _, c := range statisticsColumns {
		e := "CAST(labels AS " + js + ") ->> '" + c + "'"
		if c == "period" || c == "workspace_id" {
			e = "CAST(" + e + " AS BIGINT)"
		}
		b.WriteString(", " + e + " AS " + c)
	}
	return b.String()
}

// rollupSource is a FROM item with the statistics ledger's rows and the
// journal's unfolded changes to them, both with the generated columns,
// each branch narrowed by cond (over those columns; its placeholders
// appear twice).
func (s *SQL) rollupSource(cond string) string {
	return "(SELECT family, value, " + strings.Join(statisticsColumns, ", ") + " FROM statistics_totals WHERE " + cond +
		" UNION ALL SELECT * FROM (SELECT " + s.journalColumns() + " FROM (" + s.statisticsJournal() + ") jc) j WHERE " + cond + ") x"
}

// statisticsJournal is a query of the journal's unfolded changes to the
// rollups, as rows (family, labels, value).
func (s *SQL) statisticsJournal() string {
	fams := make([]string, len(statisticsFamilies))
	for i, f := range statisticsFamilies {
		fams[i] = "'" + f + "'"
	}
	return "SELECT family, labels, value FROM (" + s.journalChanges("metric_journal") + ") c WHERE family IN (" +
		strings.Join(fams, ", ") + ")"
}

// RollupQuery selects what Rollup reads: the days [From, To) (UTC
// midnights), the workspaces — those the viewer sees, narrowed to one scope
// or one workspace when set — and whether the series is by hour (else by
// day).
type RollupQuery struct {
	From, To    time.Time
	ScopeID     int64
	WorkspaceID int64
	Hourly      bool
	// SeriesOnly skips the groups: for charts of runs over time, whose
	// window need not be whole days.
	SeriesOnly bool
	Viewer     *Viewer
}

// Rollup is what the rollups hold about a query, read in one snapshot.
type Rollup struct {
	// Groups are the figures per workspace and task over the window.
	Groups []RollupGroup
	// Series are the runs per period and result over the window.
	Series []RollupPoint
	// Workspaces names the workspaces of the groups, with their scope.
	Workspaces map[int64]WorkspaceName
}

// RollupGroup is one workspace's one task over a window: its runs by
// result, and the bucket counts (StatisticsBuckets, the last one past
// the last bound) of its run times and queue waits.
type RollupGroup struct {
	WorkspaceID int64
	TaskType    model.TaskType
	TaskName    string
	Runs        map[string]int64
	Durations   []int64
	Waits       []int64
}

// RollupPoint is the runs of one period (Unix seconds) with one result.
type RollupPoint struct {
	Period int64
	Result string
	Runs   int64
}

// WorkspaceName is a workspace's name and scope, as statistics show them.
type WorkspaceName struct {
	Name      string
	ScopeID   int64
	ScopeName string
}

// bucketIndex maps "le" labels to the index of their bucket.
var bucketIndex = func() map[string]int {
	m := map[string]int{InfBucket: len(StatisticsBuckets)}
	for i, b := range StatisticsBuckets {
		m[strconv.FormatInt(b, 10)] = i
	}
	return m
}()

// rollupWhere is the condition of q on the rollups' columns, for family.
func rollupWhere(w *where, q RollupQuery, family string, from, to int64) {
	w.add("family = ?", family)
	if family != requestsByStatus {
		w.add("period >= ?", from)
		w.add("period < ?", to)
	}
	if q.WorkspaceID != 0 {
		w.add("workspace_id = ?", q.WorkspaceID)
	}
	if q.ScopeID != 0 {
		w.add("workspace_id IN (SELECT id FROM workspaces WHERE scope_id = ?)", q.ScopeID)
	}
	visibleWorkspaces(w, "workspace_id", q.Viewer)
}

// Rollup reads the figures of q in one read transaction: per workspace and
// task over the window, the series, and the names. Its cost is that of the
// rollups' rows in the window, not of the work requests.
func (s *SQL) Rollup(ctx context.Context, q RollupQuery) (*Rollup, error) {
	from, to := q.From.Unix(), q.To.Unix()
	out := &Rollup{Workspaces: map[int64]WorkspaceName{}}
	err := s.readTx(ctx, func(t *tx) error {
		out.Groups, out.Series = nil, nil
		groups := map[[3]string]*RollupGroup{}
		group := func(ws int64, tt, tn string) *RollupGroup {
			k := [3]string{itoa(ws), tt, tn}
			g := groups[k]
			if g == nil {
				g = &RollupGroup{WorkspaceID: ws, TaskType: model.TaskType(tt), TaskName: tn, Runs: map[string]int64{},
					Durations: make([]int64, len(StatisticsBuckets)+1), Waits: make([]int64, len(StatisticsBuckets)+1)}
				groups[k] = g
			}
			return g
		}
		fams := []string{runsByDay, waitsByDay}
		if q.SeriesOnly {
			fams = nil
		}
		for _, fam := range fams {
			var w where
			rollupWhere(&w, q, fam, from, to)
			cond := strings.TrimPrefix(w.sql(), " WHERE ")
			err := t.each(ctx, "SELECT workspace_id, task_type, task_name, COALESCE(result, ''), COALESCE(le, ''), SUM(value) FROM "+
				s.rollupSource(cond)+" GROUP BY workspace_id, task_type, task_name, result, le", w.args, func(r *sql.Rows) error {
				var ws, n int64
				var tt, tn, result, le string
				if err := r.Scan(&ws, &tt, &tn, &result, &le, &n); err != nil {
					return err
				}
				g := group(ws, tt, tn)
				if fam == waitsByDay {
					g.Waits[bucketIndex[le]] += n
					return nil
				}
				g.Runs[result] += n
				if i, ok := bucketIndex[le]; ok {
					g.Durations[i] += n
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("read %s: %w", fam, err)
			}
		}
		for _, g := range groups {
			out.Groups = append(out.Groups, *g)
		}
		slices.SortFunc(out.Groups, func(a, b RollupGroup) int {
			return strings.Compare(fmt.Sprint(a.WorkspaceID, a.TaskType, a.TaskName), fmt.Sprint(b.WorkspaceID, b.TaskType, b.TaskName))
		})
		fam := runsByDay
		if q.Hourly {
			fam = runsByHour
		}
		var w where
		rollupWhere(&w, q, fam, from, to)
		err := t.each(ctx, "SELECT period, result, SUM(value) FROM "+s.rollupSource(strings.TrimPrefix(w.sql(), " WHERE "))+
			" GROUP BY period, result ORDER BY period, result", w.args, func(r *sql.Rows) error {
			var p RollupPoint
			err := r.Scan(&p.Period, &p.Result, &p.Runs)
			if p.Runs != 0 {
				out.Series = append(out.Series, p)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("read %s: %w", fam, err)
		}
		return t.workspaceNames(ctx, out)
	})
	return out, err
}

// workspaceNames names the workspaces of r's groups.
func (t *tx) workspaceNames(ctx context.Context, r *Rollup) error {
	var ids []int64
	for _, g := range r.Groups {
		if _, ok := r.Workspaces[g.WorkspaceID]; !ok {
			r.Workspaces[g.WorkspaceID] = WorkspaceName{}
			ids = append(ids, g.WorkspaceID)
		}
	}
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(len(ids), start+500)]
		var w where
		w.add("w.id IN ("+placeholders(len(chunk))+")", anyInts(chunk)...)
		if err := t.each(ctx, "SELECT w.id, w.name, s.id, s.name FROM workspaces w JOIN scopes s ON s.id = w.scope_id"+w.sql(), w.args,
			func(r2 *sql.Rows) error {
				var id int64
				var n WorkspaceName
				err := r2.Scan(&id, &n.Name, &n.ScopeID, &n.ScopeName)
				r.Workspaces[id] = n
				return err
			}); err != nil {
			return err
		}
	}
	return nil
}

// StatusCount is how many requests of a workspace are in a status now.
type StatusCount struct {
	WorkspaceID int64
	Status      model.Status
	N           int64
}

// StatusCounts reads how many requests are in each status now, per
// workspace the viewer sees (narrowed to scopeID or to workspaceIDs when
// given), from the rollups: O(workspaces × statuses), however many
// requests there are.
func (s *SQL) StatusCounts(ctx context.Context, v *Viewer, scopeID int64, workspaceIDs ...int64) ([]StatusCount, error) {
	var out []StatusCount
	var w where
	rollupWhere(&w, RollupQuery{ScopeID: scopeID, Viewer: v}, requestsByStatus, 0, 0)
	if len(workspaceIDs) > 0 {
		w.add("workspace_id IN ("+placeholders(len(workspaceIDs))+")", anyInts(workspaceIDs)...)
	}
	err := s.readTx(ctx, func(t *tx) error {
		out = nil
		return t.each(ctx, "SELECT workspace_id, status, SUM(value) FROM "+s.rollupSource(strings.TrimPrefix(w.sql(), " WHERE "))+
			" GROUP BY workspace_id, status ORDER BY workspace_id, status", w.args, func(r *sql.Rows) error {
			var c StatusCount
			var status string
			err := r.Scan(&c.WorkspaceID, &status, &c.N)
			c.Status = model.Status(status)
			if c.N != 0 {
				out = append(out, c)
			}
			return err
		})
	})
	return out, err
}
