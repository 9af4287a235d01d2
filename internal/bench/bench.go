// Package bench measures what the public metrics endpoint costs, the way
// an operator would ask, against what they could run instead (the anchors
// of the project's benchmarks):
//
//   - Run: an uncached scrape (snapshot, families, encoding, through the
//     real HTTP handler) against the reference design's four GROUP BY
//     queries on the same seeded database, on a small farm and a large one
//     that differ only in their number of rows;
//   - RunLoad (load.go): a real `kiln server` serving cached scrapes against
//     a bare net/http handler serving the same bytes, under concurrent
//     clients.
//
// Every figure is a median of runs interleaved in one process on one
// machine, so that load from elsewhere falls on both sides alike: the
// ratios hold even where absolute times are noisy.
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
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for CREATE DATABASE

	"github.com/kiln-build/kiln/internal/openmetrics"
	"github.com/kiln-build/kiln/internal/seed"
	"github.com/kiln-build/kiln/internal/store"
)

// PrometheusAccept is the Accept header of Prometheus 2.42, which asks for
// OpenMetrics first; every benchmark scrapes with it.
const PrometheusAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// Config says what to measure.
type Config struct {
	// Postgres is a PostgreSQL URL whose user may create databases; the
	// benchmark keeps one database per farm size on it. Empty: no
	// PostgreSQL farms.
	Postgres string
	// SQLiteDir is a directory for SQLite farm files. Empty: no SQLite
	// farms.
	SQLiteDir string
	// Small and Large are the farm sizes compared.
	Small, Large seed.Sizes
	// Runs is how many interleaved runs each median is taken over; each
	// run times the reference queries once and a scrape four times.
	Runs int
	// Recount also times a scrape whose totals are all recomputed by
	// store.Recount (what `kiln metrics recount` does: every family,
	// histograms included), the comparison of earlier versions.
	Recount bool
	// Reseed drops and refills the databases even when they exist.
	Reseed bool
	// Progress draws seeding progress; may be nil.
	Progress seed.Progress
	// Log receives a line per phase; may be nil.
	Log io.Writer
}

// Result is one row of the benchmark table.
type Result struct {
	Database     store.Dialect
	Farm         string
	WorkRequests int
	Artifacts    int
	Files        int
	Series       int
	Reference    time.Duration // the four reference queries together
	Scrape       time.Duration // uncached scrape, plain
	ScrapeCPU    time.Duration // CPU time of this process (user + system) during one plain scrape
	ServerCPU    time.Duration // CPU time of the PostgreSQL server processes during one plain scrape (0: SQLite, or not readable)
	ScrapeGzip   time.Duration // uncached scrape, gzip-compressed
	Allocated    int64         // bytes allocated by one uncached scrape (plain)
	Recount      time.Duration // scrape recounting every total; 0 unless asked
}

// farm is one seeded database being measured.
type farm struct {
	name string
	sz   seed.Sizes
	st   *store.SQL
	h    http.Handler
	qs   []referenceQuery
	// meter reads the CPU time of this process and of the database's
	// server processes (PostgreSQL), on a connection of its own
	meter *cpuMeter
}

// Run seeds (if needed) and measures every farm: in each run, the
// reference queries once and the scrape four times per farm, farms
// alternating.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Runs < 1 {
		cfg.Runs = 5
	}
	logf := lineLogger(cfg.Log)
	var farms []*farm
	defer func() {
		for _, f := range farms {
			f.st.Close()
			if f.meter.db != nil {
				f.meter.db.Close()
			}
		}
	}()
	sizes := []struct {
		name string
		sz   seed.Sizes
	}{{"small", cfg.Small}, {"large", cfg.Large}}
	for _, db := range []store.Dialect{store.Postgres, store.SQLite} {
		if (db == store.Postgres && cfg.Postgres == "") || (db == store.SQLite && cfg.SQLiteDir == "") {
			continue
		}
		for _, size := range sizes {
			st, dsn, err := openFarm(ctx, cfg, db, size.sz, logf)
			if err != nil {
				return nil, err
			}
			qs, err := referenceQueries(db)
			if err != nil {
				st.Close()
				return nil, err
			}
			// one endpoint per farm with caching off, as a server with
			// --metrics-cache-ttl 0 runs it: every scrape reads a snapshot
			h := openmetrics.NewHandler(st, openmetrics.Options{RefreshTimeout: 10 * time.Minute})
			f := &farm{name: size.name, sz: size.sz, st: st, h: h, qs: qs, meter: &cpuMeter{}}
			farms = append(farms, f)
			if db == store.Postgres {
				if f.meter, err = newServerMeter(ctx, dsn); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(farms) == 0 {
		return nil, fmt.Errorf("no database to measure: give a PostgreSQL server, a SQLite directory or both")
	}
	out := make([]Result, len(farms))
	ref := make([][]time.Duration, len(farms))
	plain := make([][]time.Duration, len(farms))
	gz := make([][]time.Duration, len(farms))
	allocs := make([][]int64, len(farms))
	cpu := make([][]time.Duration, len(farms))
	server := make([][]time.Duration, len(farms))
	recount := make([][]time.Duration, len(farms))
	for i, f := range farms {
		// the first scrape fills the endpoint's series cache, as the first
		// scrape after a server starts does; it is not measured
		series, err := countSeries(ctx, f.h)
		if err != nil {
			return nil, err
		}
		out[i] = Result{Database: f.st.Dialect(), Farm: f.name, WorkRequests: f.sz.WorkRequests, Artifacts: f.sz.Artifacts,
			Files: f.sz.Artifacts * f.sz.FilesPerArtifact, Series: series}
	}
	logf("measuring %d runs: per farm, the reference queries once, then 2 plain and 2 gzip scrapes", cfg.Runs)
	for run := 0; run < cfg.Runs; run++ {
		for i, f := range farms {
			d, err := runReference(ctx, f.st.DB(), f.qs)
			if err != nil {
				return nil, err
			}
			ref[i] = append(ref[i], d)
			for k := 0; k < 2; k++ {
				var before, after runtime.MemStats
				reading := f.meter.read(ctx)
				runtime.ReadMemStats(&before)
				cpu0 := processCPU()
				d, err := scrape(ctx, f.h, false)
				cpu1 := processCPU()
				runtime.ReadMemStats(&after)
				if err != nil {
					return nil, err
				}
				if f.meter.db != nil {
					server[i] = append(server[i], f.meter.serverSince(ctx, reading))
				}
				plain[i] = append(plain[i], d)
				allocs[i] = append(allocs[i], int64(after.TotalAlloc-before.TotalAlloc))
				cpu[i] = append(cpu[i], cpu1-cpu0)
				if d, err = scrape(ctx, f.h, true); err != nil {
					return nil, err
				}
				gz[i] = append(gz[i], d)
			}
			logf("run %d/%d, %s %s farm: reference %s, scrape %s", run+1, cfg.Runs, f.st.Dialect(), f.name,
				d.Round(time.Millisecond), plain[i][len(plain[i])-1].Round(100*time.Microsecond))
		}
	}
	if cfg.Recount {
		logf("recounting: %d scrapes per farm with every total recomputed by store.Recount", cfg.Runs)
		for run := 0; run < cfg.Runs; run++ {
			for i, f := range farms {
				h := openmetrics.NewHandler(recounting{f.st}, openmetrics.Options{RefreshTimeout: 30 * time.Minute})
				d, err := scrape(ctx, h, false)
				if err != nil {
					return nil, err
				}
				recount[i] = append(recount[i], d)
			}
		}
	}
	for i := range out {
		out[i].Reference, out[i].Scrape, out[i].ScrapeGzip = median(ref[i]), median(plain[i]), median(gz[i])
		out[i].Allocated, out[i].ScrapeCPU = median(allocs[i]), median(cpu[i])
		if len(server[i]) > 0 {
			out[i].ServerCPU = median(server[i])
		}
		if cfg.Recount {
			out[i].Recount = median(recount[i])
		}
	}
	return out, nil
}

// openFarm opens (seeding it first if needed) the farm of size sz on
// database d.
func openFarm(ctx context.Context, cfg Config, d store.Dialect, sz seed.Sizes, logf func(string, ...any)) (*store.SQL, string, error) {
	name := fmt.Sprintf("kiln_bench_%d_%d", sz.WorkRequests, sz.Artifacts)
	var dsn string
	var fresh bool
	var err error
	if d == store.Postgres {
		dsn, fresh, err = ensureDatabase(ctx, cfg.Postgres, name, cfg.Reseed)
	} else {
		dsn, fresh, err = ensureSQLiteFile(ctx, cfg.SQLiteDir, name, cfg.Reseed)
	}
	if err != nil {
		return nil, "", err
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, "", err
	}
	if !fresh {
		logf("reusing seeded %s database %s", d, name)
		return st, dsn, nil
	}
	logf("seeding %s database %s", d, name)
	if _, err := st.Bootstrap(ctx, store.NewSecret(), ""); err == nil {
		err = seed.EnsureFileStore(ctx, st)
	}
	if err == nil {
		err = seed.Fill(ctx, st, sz, rand.New(rand.NewSource(1)), cfg.Progress)
	}
	if err != nil {
		st.Close()
		return nil, "", err
	}
	return st, dsn, nil
}

// processCPU is the CPU time this process has used (user and system):
// on a loaded machine a scrape's wall time includes waiting for a core,
// its CPU time does not (the database server's share is not in it).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median[T int64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// recounting is a metrics source that recomputes every total from the
// base tables at each scrape, with the queries of `kiln metrics recount`.
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

// scrape times one full scrape through h as Prometheus asks for it, with
// or without gzip. The body goes where a socket would take it: nowhere
// that allocates.
func scrape(ctx context.Context, h http.Handler, gzip bool) (time.Duration, error) {
	req := httptest.NewRequest(http.MethodGet, "/api/1.0/open-metrics/", nil).WithContext(ctx)
	req.Header.Set("Accept", PrometheusAccept)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	w := &discardWriter{header: http.Header{}}
	start := time.Now()
	h.ServeHTTP(w, req)
	d := time.Since(start)
	if w.code != http.StatusOK && w.code != 0 {
		return 0, fmt.Errorf("scrape answered %d: %s", w.code, w.start)
	}
	return d, nil
}

// countSeries scrapes h once and counts the sample lines of its answer.
func countSeries(ctx context.Context, h http.Handler) (int, error) {
	req := httptest.NewRequest(http.MethodGet, "/api/1.0/open-metrics/", nil).WithContext(ctx)
	req.Header.Set("Accept", PrometheusAccept)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return 0, fmt.Errorf("scrape answered %d: %s", rec.Code, rec.Body.String())
	}
	series := 0
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			series++
		}
	}
	return series, nil
}

// discardWriter is a ResponseWriter that keeps of the body only its start
// (for an error's message).
type discardWriter struct {
	header http.Header
	code   int
	start  []byte
}

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *discardWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.code != http.StatusOK && len(w.start) < 512 {
		w.start = append(w.start, b[:min(len(b), 512-len(w.start))]...)
	}
	return len(b), nil
}

// newServerMeter returns a CPU meter of st's PostgreSQL server processes
// that reads them on a connection of its own, which it leaves out.
func newServerMeter(ctx context.Context, dsn string) (*cpuMeter, error) {
	m := &cpuMeter{}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&m.exclude); err != nil {
		db.Close()
		return nil, err
	}
	m.db = db
	return m, nil
}

// serverSince is the CPU time the database's server processes used since
// an earlier reading (see since).
func (m *cpuMeter) serverSince(ctx context.Context, from cpuReading) time.Duration {
	to := m.read(ctx)
	var used time.Duration
	for pid, t := range to.backends {
		used += t - from.backends[pid]
	}
	return used
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
	if exists && !reseed && seeded(ctx, "pgx", u.String()) {
		return u.String(), false, nil
	}
	if exists {
		// asked to, or a half-seeded database (interrupted run)
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			return "", false, err
		}
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", false, err
	}
	return u.String(), true, nil
}

// ensureSQLiteFile is ensureDatabase for a SQLite file in dir.
func ensureSQLiteFile(ctx context.Context, dir, name string, reseed bool) (string, bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	path := filepath.Join(dir, name+".db")
	if _, err := os.Stat(path); err == nil && !reseed && seeded(ctx, "sqlite", path) {
		return path, false, nil
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !os.IsNotExist(err) {
			return "", false, err
		}
	}
	return path, true, nil
}

// seeded tells whether a database holds running totals, i.e. its seeding
// finished.
func seeded(ctx context.Context, driver, dsn string) bool {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return false
	}
	defer db.Close()
	var n int64
	err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM metric_totals").Scan(&n)
	return err == nil && n > 0
}

// Table renders results as the Markdown table of docs/benchmarks.md.
func Table(w io.Writer, rs []Result) {
	recount := rs[0].Recount > 0
	fmt.Fprint(w, "| database | farm | work requests | artifacts | files | series | reference, 4 queries | uncached scrape | µs per series | kiln CPU per scrape | PostgreSQL CPU per scrape | CPU µs per series | allocated per scrape | uncached scrape, gzip | reference ÷ scrape |")
	if recount {
		fmt.Fprint(w, " scrape recounting every total (`kiln metrics recount`'s queries) |")
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	if recount {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		server := "–"
		if r.ServerCPU > 0 {
			server = r.ServerCPU.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %s | %s | %.2f | %s | %s | %.2f | %.1f MB | %s | **%.0f×** |", r.Database, r.Farm, r.WorkRequests,
			r.Artifacts, r.Files, r.Series, r.Reference.Round(time.Millisecond), r.Scrape.Round(100*time.Microsecond),
			float64(r.Scrape.Microseconds())/float64(r.Series), r.ScrapeCPU.Round(100*time.Microsecond), server,
			float64((r.ScrapeCPU+r.ServerCPU).Microseconds())/float64(r.Series), float64(r.Allocated)/1e6,
			r.ScrapeGzip.Round(100*time.Microsecond),
			float64(r.Reference)/float64(r.Scrape))
		if recount {
			fmt.Fprintf(w, " %s |", r.Recount.Round(time.Millisecond))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	for i := 0; i+1 < len(rs); i += 2 {
		small, large := rs[i], rs[i+1]
		fmt.Fprintf(w, "%s: the uncached scrape grows %.2f× from the %s to the %s farm (series %+.1f %%); the reference queries %.1f×.\n",
			small.Database, float64(large.Scrape)/float64(small.Scrape), small.Farm, large.Farm,
			100*float64(large.Series-small.Series)/float64(small.Series), float64(large.Reference)/float64(small.Reference))
	}
}

// lineLogger returns a printf that writes one line to w, or nothing when
// w is nil: the progress lines every benchmark prints.
func lineLogger(w io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		if w != nil {
			fmt.Fprintf(w, format+"\n", args...)
		}
	}
}
