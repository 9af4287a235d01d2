package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// WriteConfig says what the write benchmark measures: the throughput of
// the two writes a busy farm does most — creating an artifact with its
// files, and submitting a work request — with the running totals kept and
// with them switched off (store.SkipTotalsForBenchmark), at each number of
// concurrent writers, on each database given.
type WriteConfig struct {
	// Postgres is the URL of an empty PostgreSQL database to fill
	// (FreshDatabase makes one). Empty: PostgreSQL is not measured.
	Postgres string
	// SQLiteDir is a directory for a fresh SQLite database. Empty: SQLite is
	// not measured.
	SQLiteDir string
	// Writers are the numbers of concurrent writers measured.
	Writers []int
	// Rounds is how many rounds of each mode a median is taken over.
	Rounds int
	// Round is how long one round writes.
	Round time.Duration
	// FoldInterval is how often the journal of total changes is folded
	// meanwhile, as a server does (store.FoldEvery); 0 means 1 s.
	FoldInterval time.Duration
	// Log receives a line per phase; may be nil.
	Log io.Writer
}

// WriteResult is one row of the write benchmark's table.
type WriteResult struct {
	Database  string
	Operation string
	Writers   int
	// With and Without are the median writes per second with the running
	// totals kept and switched off.
	With, Without float64
	// Ratio is the median of the rounds' with ÷ without ratios, each taken
	// from two neighbouring rounds; RatioLow and RatioHigh are their first
	// and third quartiles, the spread that the machine's load caused.
	Ratio, RatioLow, RatioHigh float64
	// CPUWith and CPUWithout are the median CPU time per write — this
	// process (writers, folder, SQLite) plus, for PostgreSQL on this
	// machine, the server processes serving the benchmark's database —
	// and CPURatio the median of the rounds' without ÷ with. On a loaded
	// machine throughput follows the load; CPU per write does not, and on
	// a dedicated machine where writers use every core it is what
	// throughput is inversely proportional to. Zero when unknown.
	CPUWith, CPUWithout time.Duration
	CPURatio            float64
	// Folds is how many folds merged journal rows during the rounds with
	// totals, and FoldMax the longest of them.
	Folds   int
	FoldMax time.Duration
	// Waits, for PostgreSQL, is how the database's active sessions of this
	// benchmark were spread over wait events while totals were kept,
	// sampled every 50 ms ("CPU" when not waiting).
	Waits map[string]float64
}

// writeOp is one kind of write the benchmark repeats.
type writeOp struct {
	name string
	do   func(ctx context.Context, st *store.SQL, rng *rand.Rand, wss []int64) error
}

var writeOps = []writeOp{
	{"artifact (3 files)", func(ctx context.Context, st *store.SQL, rng *rand.Rand, wss []int64) error {
		a := &model.Artifact{Category: "debian:binary-package", WorkspaceID: wss[rng.Intn(len(wss))]}
		for i := 0; i < 3; i++ {
			sum := sha256.Sum256([]byte(fmt.Sprint(rng.Int63())))
			a.Files = append(a.Files, model.ArtifactFile{Path: fmt.Sprintf("pkg_%d.deb", i), SHA256: hex.EncodeToString(sum[:]),
				Size: rng.Int63n(4 << 20)})
		}
		return st.Artifacts().Create(ctx, a)
	}},
	{"work request", func(ctx context.Context, st *store.SQL, rng *rand.Rand, wss []int64) error {
		return st.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop",
			WorkspaceID: wss[rng.Intn(len(wss))], Data: json.RawMessage(`{"host_architecture": "amd64"}`)})
	}},
}

// RunWrites measures every (database, operation, writers) cell. Within a
// cell, rounds with and without totals alternate (ABBA order), so that load
// from elsewhere on the machine and the growth of the tables fall on both
// alike.
func RunWrites(ctx context.Context, cfg WriteConfig) ([]WriteResult, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 5
	}
	if cfg.Round <= 0 {
		cfg.Round = time.Second
	}
	if len(cfg.Writers) == 0 {
		cfg.Writers = []int{1, 8}
	}
	if cfg.FoldInterval <= 0 {
		cfg.FoldInterval = time.Second
	}
	logf := lineLogger(cfg.Log)
	type target struct {
		name string
		dsn  string
	}
	var targets []target
	if cfg.Postgres != "" {
		targets = append(targets, target{"PostgreSQL", cfg.Postgres})
	}
	if cfg.SQLiteDir != "" {
		targets = append(targets, target{"SQLite", filepath.Join(cfg.SQLiteDir, "kiln-bench-writes.db")})
	}
	if len(targets) == 0 {
		return nil, errors.New("nothing to measure: give a PostgreSQL server, a SQLite directory or both")
	}
	var out []WriteResult
	for _, tg := range targets {
		rs, err := runWritesOn(ctx, cfg, tg.name, tg.dsn, logf)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tg.name, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

func runWritesOn(ctx context.Context, cfg WriteConfig, name, dsn string, logf func(string, ...any)) ([]WriteResult, error) {
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	defer st.SkipTotalsForBenchmark(false)
	if _, err := st.Bootstrap(ctx, store.NewSecret(), ""); err != nil {
		return nil, err
	}
	sc := &model.Scope{Name: "bench"}
	if err := st.Scopes().Create(ctx, sc); err != nil {
		return nil, err
	}
	var wss []int64
	for i := 0; i < 2; i++ {
		ws := &model.Workspace{Name: fmt.Sprintf("bench-%d", i), ScopeID: sc.ID, Public: true}
		if err := st.Workspaces().Create(ctx, ws); err != nil {
			return nil, err
		}
		wss = append(wss, ws.ID)
	}
	var sampler *waitSampler
	meter := &cpuMeter{}
	if st.Dialect() == store.Postgres {
		// the sampler has a connection of its own, whose server process
		// the CPU meter leaves out
		conn, err := st.DB().Conn(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		sampler = &waitSampler{conn: conn}
		if err := conn.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&meter.exclude); err != nil {
			return nil, err
		}
		meter.db = st.DB()
	}
	// the folder runs throughout, as in a server
	var folds foldStats
	fctx, stopFolder := context.WithCancel(ctx)
	folderDone := make(chan struct{})
	go func() {
		defer close(folderDone)
		store.FoldEvery(fctx, st, cfg.FoldInterval, folds.observe)
	}()
	defer func() { stopFolder(); <-folderDone }()
	var out []WriteResult
	for _, op := range writeOps {
		for _, writers := range cfg.Writers {
			logf("%s: %s, %d writer(s): %d rounds of %s with and without totals, alternating", name, op.name, writers, cfg.Rounds, cfg.Round)
			// one unmeasured round warms caches and connections
			if _, _, err := writeRound(ctx, st, op, writers, cfg.Round/4, wss, nil, nil); err != nil {
				return nil, err
			}
			var with, without, ratios, cpuRatios []float64
			var cpuWith, cpuWithout []time.Duration
			waits := map[string]int{}
			var cell foldCounts
			for r := 0; r < cfg.Rounds; r++ {
				order := []bool{true, false}
				if r%2 == 1 {
					order = []bool{false, true}
				}
				var w, wo float64
				var cw, cwo time.Duration
				for _, on := range order {
					st.SkipTotalsForBenchmark(!on)
					// both modes are sampled alike, so that the
					// sampler's own load falls on both
					sample := map[string]int{}
					if on {
						sample = waits
					}
					folds.reset()
					rate, cpu, err := writeRound(ctx, st, op, writers, cfg.Round, wss, sampler.into(sample), meter)
					if err != nil {
						return nil, err
					}
					if on {
						cw = cpu
					} else {
						cwo = cpu
					}
					if c := folds.reset(); on {
						cell.add(c)
					}
					if cell.err != nil {
						return nil, fmt.Errorf("fold: %w", cell.err)
					}
					if on {
						w = rate
					} else {
						wo = rate
					}
				}
				st.SkipTotalsForBenchmark(false)
				with, without, ratios = append(with, w), append(without, wo), append(ratios, w/wo)
				if cw > 0 && cwo > 0 {
					cpuWith, cpuWithout = append(cpuWith, cw), append(cpuWithout, cwo)
					cpuRatios = append(cpuRatios, float64(cwo)/float64(cw))
				}
			}
			res := WriteResult{Database: name, Operation: op.name, Writers: writers,
				With: medianOf(with), Without: medianOf(without), Ratio: medianOf(ratios),
				RatioLow: quantile(ratios, 0.25), RatioHigh: quantile(ratios, 0.75), Folds: cell.n, FoldMax: cell.max}
			if len(cpuRatios) > 0 {
				res.CPUWith, res.CPUWithout = medianDuration(cpuWith), medianDuration(cpuWithout)
				res.CPURatio = medianOf(cpuRatios)
			}
			if len(waits) > 0 {
				res.Waits = shares(waits)
			}
			out = append(out, res)
		}
	}
	return out, nil
}

// writeRound runs writers goroutines repeating op for d and returns the
// writes per second they completed together.
func writeRound(ctx context.Context, st *store.SQL, op writeOp, writers int, d time.Duration, wss []int64, sample func(context.Context),
	meter *cpuMeter) (rate float64, cpuPerWrite time.Duration, err error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0 := meter.read(ctx)
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			for time.Now().Before(deadline) && rctx.Err() == nil {
				if err := op.do(rctx, st, rng, wss); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				done.Add(1)
			}
		}(time.Now().UnixNano() + int64(i))
	}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		if sample != nil {
			sample(rctx)
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	<-sampled
	if firstErr != nil {
		return 0, 0, firstErr
	}
	n := done.Load()
	if used := meter.since(ctx, cpu0); used > 0 && n > 0 {
		cpuPerWrite = used / time.Duration(n)
	}
	return float64(n) / elapsed.Seconds(), cpuPerWrite, nil
}

// cpuMeter reads the CPU time used by this process and by the PostgreSQL
// server processes serving the benchmark's database (from /proc, when
// the server runs on this machine).
type cpuMeter struct {
	db      *sql.DB // nil: this process only (SQLite)
	exclude int     // a server process not to count (the sampler's)
}

// cpuReading is one reading: this process's CPU time, and each database
// server process's.
type cpuReading struct {
	self     time.Duration
	backends map[int]time.Duration
}

func (m *cpuMeter) read(ctx context.Context) cpuReading {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	r := cpuReading{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), backends: map[int]time.Duration{}}
	if m == nil || m.db == nil {
		return r
	}
	rows, err := m.db.QueryContext(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return r
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) != nil {
			continue
		}
		if t, ok := procCPU(pid); ok && pid != m.exclude {
			r.backends[pid] = t
		}
	}
	return r
}

// since is the CPU time used since an earlier reading: a server process
// that appeared meanwhile counts whole, one that ended is lost (the pool
// keeps its connections through a round). Zero when the database's
// processes cannot be read.
func (m *cpuMeter) since(ctx context.Context, from cpuReading) time.Duration {
	to := m.read(ctx)
	if m != nil && m.db != nil && len(to.backends) == 0 {
		return 0
	}
	used := to.self - from.self
	for pid, t := range to.backends {
		used += t - from.backends[pid]
	}
	return used
}

// procCPU is a single-threaded process's CPU time: from
// /proc/PID/schedstat (nanoseconds), else from /proc/PID/stat (user +
// system, in the kernel's clock ticks of 10 ms — coarse for a round).
func procCPU(pid int) (time.Duration, bool) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid)); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return time.Duration(ns), true
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// the command name, in parentheses, may hold spaces: fields count
	// from the last ")"; utime and stime are fields 14 and 15
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * 10 * time.Millisecond, true
}

// foldCounts are the folds that merged journal rows, and the longest.
type foldCounts struct {
	n   int
	max time.Duration
	err error
}

func (f *foldCounts) add(o foldCounts) {
	f.n += o.n
	f.max = max(f.max, o.max)
	if f.err == nil {
		f.err = o.err
	}
}

// foldStats collects foldCounts from the folder's goroutine.
type foldStats struct {
	mu sync.Mutex
	c  foldCounts
}

func (f *foldStats) observe(res store.FoldResult, d time.Duration, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if res.Entries > 0 {
		f.c.add(foldCounts{n: 1, max: d})
	}
	f.c.add(foldCounts{err: err})
}

// reset returns the counts so far and starts again.
func (f *foldStats) reset() foldCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.c
	f.c = foldCounts{}
	return out
}

// waitSampler counts, every 50 ms, what the benchmark's active
// PostgreSQL sessions are waiting on.
type waitSampler struct {
	conn *sql.Conn
}

// into returns a sampling loop adding to counts, or nil when there is
// nothing to sample.
func (w *waitSampler) into(counts map[string]int) func(context.Context) {
	if w == nil || counts == nil {
		return nil
	}
	return func(ctx context.Context) {
		for {
			// every round gets at least one sample, however short
			qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			rows, err := w.conn.QueryContext(qctx, `SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU'), state
				FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND state IN ('active', 'idle in transaction')`)
			if err != nil {
				cancel()
				return
			}
			for rows.Next() {
				var ev, state string
				if rows.Scan(&ev, &state) == nil {
					if state == "idle in transaction" {
						ev = "idle in transaction (" + ev + ")"
					}
					counts[ev]++
				}
			}
			rows.Close()
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func shares(counts map[string]int) map[string]float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	out := map[string]float64{}
	for k, n := range counts {
		out[k] = float64(n) / float64(total)
	}
	return out
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(medianOf(xs))
}

// quantile is the q-quantile of xs, interpolated between neighbours.
func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

func medianOf(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// FreshDatabase drops and recreates database name on the PostgreSQL server
// at URL server and returns the new database's URL.
func FreshDatabase(ctx context.Context, server, name string) (string, error) {
	admin, err := sql.Open("pgx", server)
	if err != nil {
		return "", err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("connect to %s: %w", server, err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// WriteTable renders write results as the Markdown tables of
// docs/benchmarks.md: throughput, then PostgreSQL's wait events.
func WriteTable(w io.Writer, rs []WriteResult) {
	fmt.Fprintln(w, "| database | write | writers | with totals (writes/s, median) | without totals (writes/s, median) | with ÷ without (median of rounds) | quartiles of the ratio | folds (longest) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f | %.2f | %.2f–%.2f | %d (%s) |\n", r.Database, r.Operation, r.Writers, r.With, r.Without,
			r.Ratio, r.RatioLow, r.RatioHigh, r.Folds, r.FoldMax.Round(time.Millisecond))
	}
	fmt.Fprintln(w, "\nCPU time per write (this process, and PostgreSQL's processes serving the benchmark's database):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| database | write | writers | with totals (median) | without totals (median) | without ÷ with (median of rounds) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, r := range rs {
		if r.CPURatio == 0 {
			fmt.Fprintf(w, "| %s | %s | %d | n/a | n/a | n/a |\n", r.Database, r.Operation, r.Writers)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %.2f |\n", r.Database, r.Operation, r.Writers,
			r.CPUWith.Round(time.Microsecond), r.CPUWithout.Round(time.Microsecond), r.CPURatio)
	}
	var waits []WriteResult
	for _, r := range rs {
		if len(r.Waits) > 0 {
			waits = append(waits, r)
		}
	}
	if len(waits) == 0 {
		return
	}
	fmt.Fprintln(w, "\nPostgreSQL sessions of the benchmark while totals were kept, by wait event (share of samples):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| write | writers | wait events |")
	fmt.Fprintln(w, "|---|---:|---|")
	for _, r := range waits {
		type kv struct {
			k string
			v float64
		}
		var evs []kv
		for k, v := range r.Waits {
			evs = append(evs, kv{k, v})
		}
		sort.Slice(evs, func(i, j int) bool { return evs[i].v > evs[j].v || evs[i].v == evs[j].v && evs[i].k < evs[j].k })
		var parts []string
		for i, e := range evs {
			if i == 6 {
				break
			}
			parts = append(parts, fmt.Sprintf("%s %.0f %%", e.k, 100*e.v))
		}
		fmt.Fprintf(w, "| %s | %d | %s |\n", r.Operation, r.Writers, strings.Join(parts, ", "))
	}
}
