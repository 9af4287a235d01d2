package server

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/kiln-build/kiln/internal/api"
)

// A client that sends its request a byte at a time, or never reads its
// answer, would otherwise hold a connection, a goroutine and (for a
// download) a file descriptor for as long as it likes. http.Server's own
// ReadTimeout and WriteTimeout are one number for every route, which no
// number fits: an upload of a big build output may rightly take an hour.
// So the deadlines are set per route, with http.ResponseController, from
// the route's api.Timing:
//
//   - ordinary requests: the body must arrive within Timeouts.Request, and
//     the answer, once begun, be taken within Timeouts.Request;
//   - transfers (uploads, downloads, logs): no total beyond
//     Timeouts.TransferMax, but a transfer that moves less than
//     TransferMinBytes in TransferIdle is cut (a progress-based idle cut:
//     a byte now and then is not progress);
//   - streams (the runners' WebSocket): no deadline; the connection
//     watches itself with heartbeats.
//
// A connection's deadlines outlive the request that set them (keep-alive,
// hijacked WebSockets), so every request starts by setting its own.

// Defaults of Timeouts.
const (
	DefaultRequestTimeout   = time.Minute
	DefaultTransferIdle     = time.Minute
	DefaultTransferMinBytes = 64 << 10
	DefaultTransferMax      = 12 * time.Hour
)

// Timeouts bound how long a client may take (see above). Zero fields mean
// their defaults.
type Timeouts struct {
	// Request bounds reading the body, and writing the answer, of an
	// ordinary API request.
	Request time.Duration
	// TransferIdle cuts an upload or download that moved less than
	// TransferMinBytes in this long.
	TransferIdle     time.Duration
	TransferMinBytes int64
	// TransferMax bounds a whole upload or download.
	TransferMax time.Duration
}

func (t *Timeouts) setDefaults() {
	if t.Request <= 0 {
		t.Request = DefaultRequestTimeout
	}
	if t.TransferIdle <= 0 {
		t.TransferIdle = DefaultTransferIdle
	}
	if t.TransferMinBytes <= 0 {
		t.TransferMinBytes = DefaultTransferMinBytes
	}
	if t.TransferMax <= 0 {
		t.TransferMax = DefaultTransferMax
	}
}

// reset gives every request on the public port, routed or not (probes,
// 404s), the deadlines of an ordinary request before its route, if any,
// sets its own.
func (t Timeouts) reset(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		_ = rc.SetReadDeadline(now.Add(t.Request))
		_ = rc.SetWriteDeadline(now.Add(2 * t.Request))
		h.ServeHTTP(w, r)
	})
}

// bound sets the deadlines of a route of the given timing around h.
func (t Timeouts) bound(timing api.Timing, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		switch timing {
		case api.TimingStream:
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
			h.ServeHTTP(w, r)
		case api.TimingTransfer:
			end := now.Add(t.TransferMax)
			read := &progress{set: rc.SetReadDeadline, idle: t.TransferIdle, min: t.TransferMinBytes, end: end}
			write := &progress{set: rc.SetWriteDeadline, idle: t.TransferIdle, min: t.TransferMinBytes, end: end}
			read.start(now)
			_ = rc.SetWriteDeadline(end) // nothing is written before the answer begins
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = &progressBody{ReadCloser: r.Body, p: read}
			}
			h.ServeHTTP(&deadlineWriter{ResponseWriter: w, begin: write.start, moved: write.moved}, r)
		default:
			_ = rc.SetReadDeadline(now.Add(t.Request))
			_ = rc.SetWriteDeadline(time.Time{}) // a slow database is not the client's fault
			begin := func(now time.Time) { _ = rc.SetWriteDeadline(now.Add(t.Request)) }
			h.ServeHTTP(&deadlineWriter{ResponseWriter: w, begin: begin}, r)
		}
	})
}

// progress moves one direction's deadline forward each time min more bytes
// have moved, to idle from then, never past end.
type progress struct {
	set  func(time.Time) error
	idle time.Duration
	min  int64
	end  time.Time

	mu    sync.Mutex
	since int64 // bytes moved since the deadline last moved
}

func (p *progress) start(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.since = 0
	_ = p.set(earliest(now.Add(p.idle), p.end))
}

func (p *progress) moved(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.since += int64(n)
	if p.since >= p.min {
		p.since = 0
		_ = p.set(earliest(time.Now().Add(p.idle), p.end))
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// progressBody counts what a request body delivers.
type progressBody struct {
	io.ReadCloser
	p *progress
}

// Read reads and records the progress.
func (b *progressBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if n > 0 {
		b.p.moved(n)
	}
	return n, err
}

// deadlineWriter starts the write deadline when the answer begins (begin)
// and records the progress of what is written (moved, when set). It keeps
// Flush, Hijack and the rest reachable through Unwrap.
type deadlineWriter struct {
	http.ResponseWriter
	begin   func(time.Time)
	moved   func(int)
	started bool
}

func (w *deadlineWriter) open() {
	if !w.started {
		w.started = true
		w.begin(time.Now())
	}
}

// WriteHeader begins the answer.
func (w *deadlineWriter) WriteHeader(code int) {
	w.open()
	w.ResponseWriter.WriteHeader(code)
}

// Write begins the answer and records what was written.
func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.open()
	n, err := w.ResponseWriter.Write(b)
	if w.moved != nil && n > 0 {
		w.moved(n)
	}
	return n, err
}

// Flush sends buffered data, as http.Flusher.
func (w *deadlineWriter) Flush() {
	w.open()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
