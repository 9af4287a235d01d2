package bench

import (
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
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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
	// from two neighbouring rounds.
	Ratio float64
	// Waits, for PostgreSQL, is how the database's active sessions of this
	// benchmark were spread over wait events while totals were kept,
	// sampled every 20 ms ("CPU" when not waiting).
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
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}
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
	if st.Dialect() == store.Postgres {
		sampler = &waitSampler{db: st.DB()}
	}
	var out []WriteResult
	for _, op := range writeOps {
		for _, writers := range cfg.Writers {
			logf("%s: %s, %d writer(s): %d rounds of %s with and without totals, alternating", name, op.name, writers, cfg.Rounds, cfg.Round)
			// one unmeasured round warms caches and connections
			if _, err := writeRound(ctx, st, op, writers, cfg.Round/4, wss, nil); err != nil {
				return nil, err
			}
			var with, without, ratios []float64
			waits := map[string]int{}
			for r := 0; r < cfg.Rounds; r++ {
				order := []bool{true, false}
				if r%2 == 1 {
					order = []bool{false, true}
				}
				var w, wo float64
				for _, on := range order {
					st.SkipTotalsForBenchmark(!on)
					// both modes are sampled alike, so that the
					// sampler's own load falls on both
					sample := map[string]int{}
					if on {
						sample = waits
					}
					rate, err := writeRound(ctx, st, op, writers, cfg.Round, wss, sampler.into(sample))
					if err != nil {
						return nil, err
					}
					if on {
						w = rate
					} else {
						wo = rate
					}
				}
				st.SkipTotalsForBenchmark(false)
				with, without, ratios = append(with, w), append(without, wo), append(ratios, w/wo)
			}
			res := WriteResult{Database: name, Operation: op.name, Writers: writers,
				With: medianOf(with), Without: medianOf(without), Ratio: medianOf(ratios)}
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
func writeRound(ctx context.Context, st *store.SQL, op writeOp, writers int, d time.Duration, wss []int64, sample func(context.Context)) (float64, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
	if sample != nil {
		go sample(rctx)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}

// waitSampler counts, every 20 ms, what the benchmark's active
// PostgreSQL sessions are waiting on.
type waitSampler struct {
	db *sql.DB
	mu sync.Mutex
}

// into returns a sampling loop adding to counts, or nil when there is
// nothing to sample.
func (w *waitSampler) into(counts map[string]int) func(context.Context) {
	if w == nil || counts == nil {
		return nil
	}
	return func(ctx context.Context) {
		for ctx.Err() == nil {
			rows, err := w.db.QueryContext(ctx, `SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU'), state
				FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND state IN ('active', 'idle in transaction')`)
			if err != nil {
				return
			}
			w.mu.Lock()
			for rows.Next() {
				var ev, state string
				if rows.Scan(&ev, &state) == nil {
					if state == "idle in transaction" {
						ev = "idle in transaction (" + ev + ")"
					}
					counts[ev]++
				}
			}
			w.mu.Unlock()
			rows.Close()
			time.Sleep(20 * time.Millisecond)
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
	fmt.Fprintln(w, "| database | write | writers | with totals (writes/s, median) | without totals (writes/s, median) | with ÷ without (median of rounds) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f | %.2f |\n", r.Database, r.Operation, r.Writers, r.With, r.Without, r.Ratio)
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
