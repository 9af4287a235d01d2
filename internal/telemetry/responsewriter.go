package telemetry

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// statusRecorder remembers the status code a handler sends. It forwards
// Flush and Hijack, and exposes Unwrap for http.ResponseController, so that
// instrumenting a route never takes streaming or connection upgrades away
// from it.
type statusRecorder struct {
	http.ResponseWriter
	status int       // final status sent; 0 until then
	start  time.Time // when the request arrived
	// outer marks the recorder of CountUnmatched; handled is set by the
	// route below it that counted the request itself (or opted out).
	outer, handled bool
}

func (w *statusRecorder) WriteHeader(code int) {
	// 1xx responses other than 101 are interim; the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends buffered data to the client, as http.Flusher.
func (w *statusRecorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection over to the handler, as http.Hijacker.
func (w *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code is the status to report: what was sent, or 200, which net/http sends
// for a handler that writes nothing.
func (w *statusRecorder) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
