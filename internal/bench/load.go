package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-build/kiln/internal/config"
)

// LoadConfig says how to load a real kiln server and the bare handler.
type LoadConfig struct {
	// Kiln is the kiln binary to start (`kiln server`, `kiln dev
	// serve-bytes`); normally os.Executable().
	Kiln string
	// Server, if set, is the kiln binary whose `kiln server` is loaded
	// instead of Kiln's, to compare versions.
	Server string
	// Database is the seeded database the server reads (postgres:// URL
	// or SQLite file).
	Database string
	// CacheTTL is the server's --metrics-cache-ttl.
	CacheTTL time.Duration
	// Clients are the numbers of concurrent clients whose throughput is
	// compared, each with and without gzip.
	Clients []int
	// Scrapers is the number of concurrent scrapers (gzip, as Prometheus)
	// whose latency and the server's memory are measured.
	Scrapers int
	// Window is how long each side is loaded per round; Rounds how many
	// interleaved rounds each median is taken over.
	Window time.Duration
	Rounds int
	// Log receives a line per phase; may be nil.
	Log io.Writer
}

// LoadRow is one scenario of the load benchmark: medians over the rounds.
type LoadRow struct {
	Clients          int
	Gzip             bool
	Kiln, Bare       sideStats
	Ratio            float64 // median of the rounds' kiln ÷ bare requests/s
	KilnRSS          int64   // largest resident set of the kiln server during the rounds
	BodyBytes        int     // bytes of one response
	Requests, Errors int     // over every round, kiln and bare
}

type sideStats struct {
	RPS      float64
	P50, P99 time.Duration
	// CPU is the server process's CPU time (user + system) per request:
	// on a machine whose cores are shared, throughput follows the share of
	// CPU a process gets, this does not.
	CPU time.Duration
}

// RunLoad starts a kiln server on cfg.Database and a bare handler serving
// the very bytes the server answers, and loads them in turn with the same
// clients (as Prometheus asks: OpenMetrics, keep-alive, gzip when the row
// says so).
func RunLoad(ctx context.Context, cfg LoadConfig) ([]LoadRow, error) {
	logf := lineLogger(cfg.Log)
	raiseFileLimit()
	dir, err := os.MkdirTemp("", "kiln-bench-load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	server := cfg.Kiln
	if cfg.Server != "" {
		server = cfg.Server
	}
	kiln, err := start(ctx, server, filepath.Join(dir, "server.log"), "server", "--database", cfg.Database, "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--metrics-cache-ttl", cfg.CacheTTL.String(), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer kiln.stop()
	kilnURL := kiln.url + "/api/1.0/open-metrics/"
	logf("kiln server (pid %d) at %s, metrics cache %s", kiln.cmd.Process.Pid, kilnURL, cfg.CacheTTL)

	// the bare handler serves what the server answers
	plain, contentType, err := get(ctx, kilnURL, false)
	if err != nil {
		return nil, err
	}
	gz, _, err := get(ctx, kilnURL, true)
	if errors.Is(err, errNotCompressed) && cfg.Server != "" {
		// an older server: the gzip rows compare uncompressed bodies
		logf("the server under test does not compress: both sides answer gzip requests uncompressed")
		gz, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{"plain": plain, "gzip": gz, "content-type": []byte(contentType)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	bare, err := start(ctx, cfg.Kiln, filepath.Join(dir, "bare.log"), "dev", "serve-bytes", "--listen", "127.0.0.1:0", "--dir", dir)
	if err != nil {
		return nil, err
	}
	defer bare.stop()
	bareURL := bare.url + "/api/1.0/open-metrics/"
	logf("bare handler (pid %d) at %s: %d bytes plain, %d gzip", bare.cmd.Process.Pid, bareURL, len(plain), len(gz))

	type scenario struct {
		clients int
		gzip    bool
	}
	var scenarios []scenario
	for _, c := range cfg.Clients {
		scenarios = append(scenarios, scenario{c, true}, scenario{c, false})
	}
	if cfg.Scrapers > 0 {
		scenarios = append(scenarios, scenario{cfg.Scrapers, true})
	}
	var rows []LoadRow
	for _, sc := range scenarios {
		row := LoadRow{Clients: sc.clients, Gzip: sc.gzip, BodyBytes: len(plain)}
		if sc.gzip && len(gz) > 0 {
			row.BodyBytes = len(gz)
		}
		var kilnRuns, bareRuns []loadStats
		var ratios []float64
		for round := 0; round < cfg.Rounds; round++ {
			var k, b loadStats
			first, second := &k, &b
			firstURL, secondURL := kilnURL, bareURL
			if round%2 == 1 {
				first, second, firstURL, secondURL = second, first, secondURL, firstURL
			}
			firstPID, secondPID := kiln.cmd.Process.Pid, bare.cmd.Process.Pid
			if round%2 == 1 {
				firstPID, secondPID = secondPID, firstPID
			}
			rss := watchRSS(kiln.cmd.Process.Pid)
			*first = loadProcess(ctx, firstPID, firstURL, sc.clients, sc.gzip, cfg.Window)
			*second = loadProcess(ctx, secondPID, secondURL, sc.clients, sc.gzip, cfg.Window)
			row.KilnRSS = max(row.KilnRSS, rss())
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			kilnRuns, bareRuns = append(kilnRuns, k), append(bareRuns, b)
			ratios = append(ratios, k.rps()/b.rps())
			row.Requests += k.requests + b.requests
			row.Errors += k.errors + b.errors
			logf("%d clients, gzip %v, round %d/%d: kiln %.0f req/s (p99 %s, %s CPU each), bare %.0f req/s (p99 %s, %s CPU each), %d errors",
				sc.clients, sc.gzip, round+1, cfg.Rounds, k.rps(), k.quantile(0.99).Round(time.Millisecond), k.cpuPerRequest().Round(100*time.Nanosecond),
				b.rps(), b.quantile(0.99).Round(time.Millisecond), b.cpuPerRequest().Round(100*time.Nanosecond), k.errors+b.errors)
			if k.firstErr != nil || b.firstErr != nil {
				logf("first errors: kiln %v, bare %v", k.firstErr, b.firstErr)
			}
		}
		row.Kiln, row.Bare = summarize(kilnRuns), summarize(bareRuns)
		row.Ratio = slices.Sorted(slices.Values(ratios))[len(ratios)/2]
		rows = append(rows, row)
	}
	return rows, nil
}

// LoadTable renders the rows as the Markdown tables of docs/benchmarks.md.
func LoadTable(w io.Writer, rows []LoadRow) {
	fmt.Fprintln(w, "| clients | encoding | body | cached scrape, req/s | bare handler, req/s | cached ÷ bare | server CPU per request, cached / bare | p50 cached / bare | p99 cached / bare | p99 ratio | errors | server RSS (max) |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		enc := "identity"
		if r.Gzip {
			enc = "gzip"
		}
		fmt.Fprintf(w, "| %d | %s | %d kB | %.0f | %.0f | **%.0f %%** | %s / %s | %s / %s | %s / %s | %.2f× | %d of %d | %.0f MB |\n",
			r.Clients, enc, r.BodyBytes/1000, r.Kiln.RPS, r.Bare.RPS, 100*r.Ratio,
			r.Kiln.CPU.Round(100*time.Nanosecond), r.Bare.CPU.Round(100*time.Nanosecond),
			r.Kiln.P50.Round(100*time.Microsecond), r.Bare.P50.Round(100*time.Microsecond),
			r.Kiln.P99.Round(100*time.Microsecond), r.Bare.P99.Round(100*time.Microsecond),
			float64(r.Kiln.P99)/float64(r.Bare.P99), r.Errors, r.Requests, float64(r.KilnRSS)/1e6)
	}
}

// loadStats is one side's round.
type loadStats struct {
	elapsed   time.Duration
	cpu       time.Duration // the server's
	requests  int
	errors    int
	firstErr  error
	latencies []time.Duration // sorted
}

func (s loadStats) rps() float64 { return float64(s.requests) / s.elapsed.Seconds() }

func (s loadStats) cpuPerRequest() time.Duration {
	if s.requests == 0 {
		return 0
	}
	return s.cpu / time.Duration(s.requests)
}

func (s loadStats) quantile(q float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	return s.latencies[min(len(s.latencies)-1, int(q*float64(len(s.latencies))))]
}

// summarize takes the median over rounds of each figure.
func summarize(runs []loadStats) sideStats {
	var rps []float64
	var p50, p99, cpu []time.Duration
	for _, r := range runs {
		rps, p50, p99 = append(rps, r.rps()), append(p50, r.quantile(0.5)), append(p99, r.quantile(0.99))
		cpu = append(cpu, r.cpuPerRequest())
	}
	slices.Sort(rps)
	return sideStats{RPS: rps[len(rps)/2], P50: median(p50), P99: median(p99), CPU: median(cpu)}
}

// loadProcess is load on the server process pid, whose CPU time it
// measures.
func loadProcess(ctx context.Context, pid int, url string, clients int, gzip bool, window time.Duration) loadStats {
	before := processCPUOf(pid)
	s := load(ctx, url, clients, gzip, window)
	s.cpu = processCPUOf(pid) - before
	return s
}

// processCPUOf reads the CPU time (user + system) of process pid from
// /proc (Linux); 0 when it cannot.
func processCPUOf(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime and stime fields 14 and 15
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is the unit of /proc CPU times, USER_HZ: 100 on every Linux
// kiln supports.
const clockTicks = 100

// load sends requests to url from clients goroutines, each on its own
// keep-alive connection, for window, and reads every body in full. A
// request fails on a transport error, a status other than 200 or a body
// shorter than its Content-Length.
func load(ctx context.Context, url string, clients int, gzip bool, window time.Duration) loadStats {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var mu sync.Mutex
	var out loadStats
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var n, errs int
			var first error
			buf := make([]byte, 64<<10)
			for ctx.Err() == nil {
				t0 := time.Now()
				err := fetch(client, url, gzip, buf)
				if ctx.Err() != nil && err != nil {
					break // cut off by the end of the window
				}
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				n++
			}
			mu.Lock()
			out.requests += n
			out.errors += errs
			if out.firstErr == nil {
				out.firstErr = first
			}
			out.latencies = append(out.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	slices.Sort(out.latencies)
	return out
}

func fetch(client *http.Client, url string, gzip bool, buf []byte) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", PrometheusAccept)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("%d of %d bytes", n, resp.ContentLength)
	}
	return nil
}

// errNotCompressed says that a server answered a request accepting gzip
// uncompressed.
var errNotCompressed = errors.New("answered uncompressed although gzip was accepted")

// get fetches url once as Prometheus would, returning the body as sent
// (still compressed with gzip) and its Content-Type.
func get(ctx context.Context, url string, gzip bool) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", PrometheusAccept)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %d: %s", url, resp.StatusCode, body)
	}
	if gzip && resp.Header.Get("Content-Encoding") != "gzip" {
		return nil, "", fmt.Errorf("GET %s: %w (Content-Encoding %q)", url, errNotCompressed, resp.Header.Get("Content-Encoding"))
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// process is a child process that printed the URL it listens on.
type process struct {
	cmd *exec.Cmd
	url string
}

var listeningOn = regexp.MustCompile(`(?:listening|serving) on (http://\S+)`)

// start runs bin with args, its output going to logPath, and waits until
// it prints the URL it listens on. The child gets no KILN_ settings from
// this environment.
func start(ctx context.Context, bin, logPath string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = config.WithoutKilnSettings(os.Environ())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			if m := listeningOn.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p.url = <-found:
		return p, nil
	case <-time.After(2 * time.Minute):
		err = errors.New("did not print the URL it listens on within 2 minutes")
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stop()
	log, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, log)
}

// stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// watchRSS samples the resident set of process pid every 20 ms until the
// returned function is called, which returns the largest sample.
func watchRSS(pid int) func() int64 {
	var mu sync.Mutex
	var peak int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := residentSet(pid); rss > 0 {
				mu.Lock()
				peak = max(peak, rss)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// residentSet reads VmRSS of pid from /proc (Linux), in bytes; 0 when it
// cannot.
func residentSet(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// raiseFileLimit lifts the soft limit on open files to the hard one: 500
// scrapers hold 500 connections on each side, and the children inherit it.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// ServeBytes is the bare handler of the load benchmark: the simplest
// net/http handler that serves fixed bytes — the ceiling of a cached
// scrape. It answers the gzip copy, if there is one, when the client
// accepts gzip.
func ServeBytes(plain, gz []byte, contentType string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := plain
		h := w.Header()
		if len(gz) > 0 && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			body = gz
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("Content-Type", contentType)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
}

// LoadServeBytes reads what ServeBytes serves from dir (files plain, gzip
// and content-type, as RunLoad writes them).
func LoadServeBytes(dir string) (http.Handler, error) {
	var files [3][]byte
	for i, name := range []string{"plain", "gzip", "content-type"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		files[i] = b
	}
	return ServeBytes(files[0], files[1], string(files[2])), nil
}
