// Package bench measures what a scrape of the public metrics endpoint
// costs, the way an operator would ask: served from running totals versus
// recomputed with GROUP BY over the base tables (the design kiln replaced),
// and on a small farm versus a large one. Each figure is the median of
// several full scrapes (snapshot, families, OpenMetrics encoding) through
// the real HTTP handler with caching off, all measured in one run on one
// machine, so the ratios hold even where absolute times are noisy.
package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for CREATE DATABASE

	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
)

// Config says what to measure.
type Config struct {
	// Server is a PostgreSQL URL whose user may create databases; the
	// benchmark keeps one database per farm size on it.
	Server string
	// Small and Large are the farm sizes compared.
	Small, Large seed.Sizes
	// Runs is how many scrapes each median is taken over (≥ 5).
	Runs int
	// Reseed drops and refills the databases even when they exist.
	Reseed bool
	// Progress draws seeding progress; may be nil.
	Progress seed.Progress
	// Log receives a line per phase; may be nil.
	Log io.Writer
}

// Result is one row of the benchmark table.
type Result struct {
	Farm         string
	WorkRequests int
	Artifacts    int
	Files        int
	Series       int
	Totals       time.Duration // median scrape from running totals
	GroupBy      time.Duration // median scrape recounting with GROUP BY
}

// Run seeds (if needed) and measures both farms. Scrapes of the two farms
// alternate, so that load from elsewhere on the machine falls on both
// alike; the cheap running-totals scrape is repeated 4× as often as asked.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Runs < 1 {
		cfg.Runs = 5
	}
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}
	farms := []struct {
		name string
		sz   seed.Sizes
	}{{"small", cfg.Small}, {"large", cfg.Large}}
	stores := make([]*store.SQL, len(farms))
	defer func() {
		for _, st := range stores {
			if st != nil {
				st.Close()
			}
		}
	}()
	out := make([]Result, len(farms))
	for i, farm := range farms {
		dbName := fmt.Sprintf("kiln_bench_%d_%d", farm.sz.WorkRequests, farm.sz.Artifacts)
		dsn, fresh, err := ensureDatabase(ctx, cfg.Server, dbName, cfg.Reseed)
		if err != nil {
			return nil, err
		}
		st, err := store.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		stores[i] = st
		if fresh {
			logf("seeding %s farm into %s", farm.name, dbName)
			if _, err := st.Bootstrap(ctx, store.NewSecret(), ""); err != nil {
				return nil, err
			}
			if err := seed.EnsureFileStore(ctx, st); err != nil {
				return nil, err
			}
			if err := seed.Fill(ctx, st, farm.sz, rand.New(rand.NewSource(1)), cfg.Progress); err != nil {
				return nil, err
			}
		} else {
			logf("reusing seeded database %s", dbName)
		}
		out[i] = Result{Farm: farm.name, WorkRequests: farm.sz.WorkRequests, Artifacts: farm.sz.Artifacts,
			Files: farm.sz.Artifacts * farm.sz.FilesPerArtifact}
	}
	totals := make([][]time.Duration, len(farms))
	groupBy := make([][]time.Duration, len(farms))
	logf("measuring: %d running-totals and %d GROUP BY scrapes of each farm, alternating", 4*cfg.Runs, cfg.Runs)
	for run := 0; run < 4*cfg.Runs; run++ {
		for i, st := range stores {
			d, series, err := scrape(ctx, st)
			if err != nil {
				return nil, err
			}
			totals[i] = append(totals[i], d)
			out[i].Series = series
		}
	}
	for run := 0; run < cfg.Runs; run++ {
		for i, st := range stores {
			d, _, err := scrape(ctx, recounting{st})
			if err != nil {
				return nil, err
			}
			groupBy[i] = append(groupBy[i], d)
		}
	}
	for i := range out {
		out[i].Totals, out[i].GroupBy = median(totals[i]), median(groupBy[i])
	}
	return out, nil
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// recounting is a metrics source that recomputes every total from the
// base tables at each scrape: the GROUP BY design.
type recounting struct{ st *store.SQL }

func (r recounting) Snapshot(ctx context.Context) (*store.Snapshot, error) {
	snap, err := r.st.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	totals, err := r.st.Recount(ctx)
	if err != nil {
		return nil, err
	}
	snap.Totals = totals
	return snap, nil
}

// scrape times one full scrape and counts the series in the answer.
func scrape(ctx context.Context, src openmetrics.Source) (time.Duration, int, error) {
	h := openmetrics.NewHandler(src, openmetrics.Options{CacheTTL: 0})
	req := httptest.NewRequest(http.MethodGet, "/api/1.0/open-metrics/", nil).WithContext(ctx)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, req)
	d := time.Since(start)
	if rec.Code != http.StatusOK {
		return 0, 0, fmt.Errorf("scrape answered %d: %s", rec.Code, rec.Body.String())
	}
	series := 0
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series++
		}
	}
	return d, series, nil
}

// ensureDatabase returns the URL of database name on server, creating it
// (fresh = true) when it does not exist or reseed is asked.
func ensureDatabase(ctx context.Context, server, name string, reseed bool) (string, bool, error) {
	admin, err := sql.Open("pgx", server)
	if err != nil {
		return "", false, err
	}
	defer admin.Close()
	var exists bool
	if err := admin.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", false, fmt.Errorf("connect to %s: %w", server, err)
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", false, err
	}
	u.Path = "/" + name
	if exists && reseed {
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			return "", false, err
		}
		exists = false
	}
	if !exists {
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return "", false, err
		}
		return u.String(), true, nil
	}
	// a half-seeded database (interrupted run) is reseeded
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		return "", false, err
	}
	defer db.Close()
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM metric_totals").Scan(&n); err != nil || n == 0 {
		db.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			return "", false, err
		}
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return "", false, err
		}
		return u.String(), true, nil
	}
	return u.String(), false, nil
}

// Table renders results as the Markdown table of docs/benchmarks.md.
func Table(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| farm | work requests | artifacts | files | series | scrape, running totals (median) | scrape, GROUP BY (median) | GROUP BY ÷ totals |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %s | %s | %.0f× |\n", r.Farm, r.WorkRequests, r.Artifacts, r.Files, r.Series,
			r.Totals.Round(time.Microsecond*100), r.GroupBy.Round(time.Millisecond), float64(r.GroupBy)/float64(r.Totals))
	}
	if len(rs) == 2 {
		fmt.Fprintf(w, "\nGrowth of the running-totals scrape from the %s to the %s farm: %.2f× (GROUP BY: %.1f×).\n",
			rs[0].Farm, rs[1].Farm, float64(rs[1].Totals)/float64(rs[0].Totals), float64(rs[1].GroupBy)/float64(rs[0].GroupBy))
	}
}
