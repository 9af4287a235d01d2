package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/dashboard"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
)

// DashboardConfig says what the dashboard benchmark measures: every page
// of the dashboard on a small and a large farm seeded alike (see
// seed.Sizes.RequestsPerDay: the large farm is older, not busier).
type DashboardConfig struct {
	Server       string
	Small, Large seed.Sizes
	// Runs is how many times each page is asked on each farm.
	Runs     int
	Reseed   bool
	Progress seed.Progress
	Log      io.Writer
}

// PageResult is one page's server time on both farms.
type PageResult struct {
	Page, Path   string
	Visitor      string
	Small, Large Timing
}

// Timing is the distribution of a page's server time: wall-clock, and
// the CPU time the page cost the server and its database (the work a page
// does, which load from elsewhere on the machine does not stretch).
type Timing struct{ Median, P99, CPU time.Duration }

// dashboardPage is one page the benchmark asks for, on a farm.
type dashboardPage struct {
	name    string
	visitor string // "anonymous" or "admin"
	path    func(f *benchFarm) string
}

// benchFarm is a seeded farm ready to be asked.
type benchFarm struct {
	st *store.SQL
	// backend is the PID of the database's process serving the farm's
	// only connection, whose CPU time a page adds to its own
	backend int
	handler http.Handler
	admin   string // a session cookie of the admin
	scope   int64
	ws      int64 // a public workspace
	wr      int64 // a completed request of it
	deep    store.Cursor
	now     time.Time
}

// dashboardPages are the pages measured: each page of the dashboard with
// its default view, and the lists and statistics with their filters.
var dashboardPages = []dashboardPage{
	{"overview", "anonymous", func(*benchFarm) string { return "/" }},
	{"scope", "anonymous", func(f *benchFarm) string { return "/scopes/" + itoa(f.scope) + "/" }},
	{"workspace: newest requests", "anonymous", func(f *benchFarm) string { return "/workspaces/" + itoa(f.ws) + "/" }},
	{"workspace: a page deep in the list", "anonymous", func(f *benchFarm) string {
		return "/workspaces/" + itoa(f.ws) + "/?before=" + f.deep.String()
	}},
	{"workspace: status completed", "anonymous", func(f *benchFarm) string { return "/workspaces/" + itoa(f.ws) + "/?status=completed" }},
	{"workspace: task name", "anonymous", func(f *benchFarm) string { return "/workspaces/" + itoa(f.ws) + "/?task=sbuild" }},
	{"workspace: architecture", "anonymous", func(f *benchFarm) string { return "/workspaces/" + itoa(f.ws) + "/?arch=amd64" }},
	{"workspace: status and result (a walk)", "anonymous", func(f *benchFarm) string {
		return "/workspaces/" + itoa(f.ws) + "/?status=completed&result=failure"
	}},
	{"workspace: last 7 days", "anonymous", func(f *benchFarm) string {
		return "/workspaces/" + itoa(f.ws) + "/?from=" + f.now.AddDate(0, 0, -6).Format(time.DateOnly) + "&to=" + f.now.Format(time.DateOnly)
	}},
	{"workspace: workflows", "anonymous", func(f *benchFarm) string { return "/workspaces/" + itoa(f.ws) + "/?view=workflows" }},
	{"work request", "anonymous", func(f *benchFarm) string { return "/work-requests/" + itoa(f.wr) + "/" }},
	{"workers", "admin", func(*benchFarm) string { return "/workers/" }},
	{"statistics (7 days)", "anonymous", func(*benchFarm) string { return "/statistics/" }},
	{"statistics (7 days), admin", "admin", func(*benchFarm) string { return "/statistics/" }},
	{"statistics of a scope", "anonymous", func(f *benchFarm) string { return "/statistics/?scope=" + itoa(f.scope) }},
	{"statistics of a workspace", "anonymous", func(f *benchFarm) string { return "/statistics/?workspace=" + itoa(f.ws) }},
	{"statistics (30 days)", "anonymous", func(*benchFarm) string { return "/statistics/?window=30d" }},
	{"statistics as JSON", "anonymous", func(*benchFarm) string { return "/api/1.0/statistics/" }},
	{"sign-in form", "anonymous", func(*benchFarm) string { return "/sign-in/" }},
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// RunDashboard seeds (once) and measures both farms. The two farms are
// asked in turn, page by page, so that load from elsewhere on the machine
// falls on both alike.
func RunDashboard(ctx context.Context, cfg DashboardConfig) ([]PageResult, error) {
	if cfg.Runs < 5 {
		cfg.Runs = 5
	}
	logf := lineLogger(cfg.Log)
	sizes := []seed.Sizes{cfg.Small, cfg.Large}
	farms := make([]*benchFarm, len(sizes))
	defer func() {
		for _, f := range farms {
			if f != nil {
				f.st.Close()
			}
		}
	}()
	for i, sz := range sizes {
		name := fmt.Sprintf("kiln_bench_dash_%d_%d_%d", sz.WorkRequests, sz.Artifacts, sz.RequestsPerDay)
		dsn, fresh, err := ensureDatabase(ctx, cfg.Server, name, cfg.Reseed)
		if err != nil {
			return nil, err
		}
		st, err := store.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		farms[i] = &benchFarm{st: st}
		if fresh {
			logf("seeding %d work requests into %s", sz.WorkRequests, name)
			if _, err := st.Bootstrap(ctx, store.NewSecret(), ""); err != nil {
				return nil, err
			}
			if err := seed.EnsureFileStore(ctx, st); err != nil {
				return nil, err
			}
			if err := seed.Fill(ctx, st, sz, rand.New(rand.NewSource(1)), cfg.Progress); err != nil {
				return nil, err
			}
			// a farm in its steady state: autovacuum has been through the
			// bulk load (it would otherwise run during the measurements,
			// on the large farm far longer than on the small one)
			logf("vacuuming %s", name)
			if _, err := st.DB().ExecContext(ctx, "VACUUM ANALYZE"); err != nil {
				return nil, err
			}
		} else {
			logf("reusing seeded database %s", name)
		}
		if err := farms[i].prepare(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	out := make([]PageResult, len(dashboardPages))
	times := make([][2][]time.Duration, len(dashboardPages))
	cpus := make([][2][]time.Duration, len(dashboardPages))
	logf("measuring %d pages, %d times each on each farm, in turn", len(dashboardPages), cfg.Runs)
	for run := 0; run < cfg.Runs; run++ {
		for p, page := range dashboardPages {
			for i, f := range farms {
				d, cpu, err := f.ask(ctx, page)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", page.name, err)
				}
				times[p][i] = append(times[p][i], d)
				cpus[p][i] = append(cpus[p][i], cpu)
			}
		}
	}
	for p, page := range dashboardPages {
		out[p] = PageResult{Page: page.name, Visitor: page.visitor, Path: page.path(farms[1]),
			Small: timing(times[p][0], cpus[p][0]), Large: timing(times[p][1], cpus[p][1])}
	}
	return out, nil
}

// prepare finds what the pages name, opens the admin's session and builds
// the handler with the farm's clock: the seed's last request, so that the
// windows of days hold the same work however long ago the farm was seeded.
func (f *benchFarm) prepare(ctx context.Context) error {
	db := f.st.DB()
	// one connection, kept: its server process does all the farm's
	// queries, so its CPU time is the database's part of a page
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&f.backend); err != nil {
		return err
	}
	var last int64
	if err := db.QueryRowContext(ctx, "SELECT MAX(created_at) FROM work_requests").Scan(&last); err != nil {
		return err
	}
	f.now = time.UnixMicro(last + 1e6).UTC()
	// the busiest public workspace (its pages are full on both farms)
	if err := db.QueryRowContext(ctx, `SELECT w.id, w.scope_id FROM workspaces w JOIN work_requests r ON r.workspace_id = w.id
		WHERE w.public GROUP BY w.id, w.scope_id ORDER BY COUNT(*) DESC, w.id LIMIT 1`).Scan(&f.ws, &f.scope); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT id FROM work_requests WHERE workspace_id = $1 AND status = 'completed'
		ORDER BY created_at DESC, id DESC LIMIT 1`, f.ws).Scan(&f.wr); err != nil {
		return err
	}
	// a position ten pages down the workspace's list (or its last page)
	var at int64
	if err := db.QueryRowContext(ctx, `SELECT created_at, id FROM (SELECT created_at, id FROM work_requests WHERE workspace_id = $1
		ORDER BY created_at DESC, id DESC LIMIT 500) x ORDER BY created_at, id LIMIT 1`, f.ws).Scan(&at, &f.deep.ID); err != nil {
		return err
	}
	f.deep.CreatedAt = time.UnixMicro(at).UTC()
	admin, err := f.st.Users().Lookup(ctx, store.AdminUsername, nil)
	if err != nil {
		return err
	}
	tok, err := f.st.CreateToken(ctx, model.Token{UserID: &admin.ID, Enabled: true, Comment: "dashboard benchmark"})
	if err != nil {
		return err
	}
	if _, _, f.admin, err = f.st.OpenSession(ctx, tok.Secret, time.Hour); err != nil {
		return err
	}
	clock := func() time.Time { return f.now }
	logger := slog.New(slog.DiscardHandler)
	a := api.New(f.st, logger, api.Options{Now: clock})
	d, err := dashboard.New(f.st, a, dashboard.Options{Logger: logger, Now: clock})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	for _, r := range append(a.Routes(), d.Routes()...) {
		mux.Handle(r.Pattern, r.Handler)
	}
	f.handler = mux
	return nil
}

// ask times one request of a page — from the request to the last byte of
// the answer, in the server, without the network — and the CPU time it
// cost this process and the database's.
func (f *benchFarm) ask(ctx context.Context, p dashboardPage) (time.Duration, time.Duration, error) {
	req := httptest.NewRequest(http.MethodGet, p.path(f), nil).WithContext(ctx)
	req.Header.Set("Accept", "text/html")
	if p.visitor == "admin" {
		req.AddCookie(&http.Cookie{Name: "kiln_session", Value: f.admin})
	}
	rec := httptest.NewRecorder()
	cpu0, err := f.cpu()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	f.handler.ServeHTTP(rec, req)
	d := time.Since(start)
	cpu1, err := f.cpu()
	if err != nil {
		return 0, 0, err
	}
	if rec.Code != http.StatusOK {
		return 0, 0, fmt.Errorf("%s answered %d: %.300s", req.URL, rec.Code, rec.Body.String())
	}
	return d, cpu1 - cpu0, nil
}

// cpu is the CPU time so far of this process (getrusage, every thread)
// and of the farm's database process (/proc/PID/schedstat, in ns: the
// database runs on this machine).
func (f *benchFarm) cpu() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	own := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", f.backend))
	if err != nil {
		return 0, fmt.Errorf("the CPU time of the database's process (the benchmark needs PostgreSQL on this machine): %w", err)
	}
	var ns int64
	if _, err := fmt.Sscan(string(b), &ns); err != nil {
		return 0, err
	}
	return own + time.Duration(ns), nil
}

func timing(ds, cpus []time.Duration) Timing {
	s := slices.Clone(ds)
	slices.Sort(s)
	c := slices.Clone(cpus)
	slices.Sort(c)
	return Timing{Median: s[len(s)/2], P99: s[(99*len(s)+99)/100-1], CPU: c[len(c)/2]}
}

// DashboardTable renders results as the Markdown table of
// docs/benchmarks.md.
func DashboardTable(w io.Writer, small, large int, rs []PageResult) {
	s, l := humanCount(small), humanCount(large)
	fmt.Fprintf(w, "| page | visitor | %s: median | p99 | CPU | %s: median | p99 | CPU | %s ÷ %s: median | CPU |\n", s, l, l, s)
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.2f× | %.2f× |\n", r.Page, r.Visitor,
			ms(r.Small.Median), ms(r.Small.P99), ms(r.Small.CPU), ms(r.Large.Median), ms(r.Large.P99), ms(r.Large.CPU),
			float64(r.Large.Median)/float64(r.Small.Median), float64(r.Large.CPU)/float64(r.Small.CPU))
	}
}

func humanCount(n int) string {
	if n >= 1_000_000 && n%1_000_000 == 0 {
		return strconv.Itoa(n/1_000_000) + "M"
	}
	return strconv.Itoa(n/1000) + "k"
}
