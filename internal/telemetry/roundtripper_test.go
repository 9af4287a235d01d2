package telemetry

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOutgoingMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/missing":
			http.NotFound(w, r)
		case "/broken":
			http.Error(w, "broken", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if host, _, _ := net.SplitHostPort(srv.Listener.Addr().String()); host != "127.0.0.1" {
		t.Fatalf("test server on %s, want 127.0.0.1", host)
	}

	// An address nothing listens on, for transport errors.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/"
	ln.Close()

	reg := prometheus.NewPedanticRegistry()
	m, err := NewOutgoingMetrics(reg, "kiln")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: m.RoundTripper("server", srv.Client().Transport)}

	if n := testutil.CollectAndCount(m.requests); n != 4 {
		t.Errorf("%d series right after RoundTripper, want the 4 outcomes initialised", n)
	}

	tests := []struct {
		url, outcome string
	}{
		{srv.URL + "/ok", OutcomeSuccess},
		{srv.URL + "/ok", OutcomeSuccess},
		{srv.URL + "/moved", OutcomeSuccess}, // the redirect and the page it leads to: two requests
		{srv.URL + "/missing", OutcomeHTTP4xx},
		{srv.URL + "/broken", OutcomeHTTP5xx},
		{closedURL, OutcomeError},
	}
	for _, tt := range tests {
		resp, err := client.Get(tt.url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if (err != nil) != (tt.outcome == OutcomeError) {
			t.Errorf("GET %s: err = %v", tt.url, err)
		}
	}

	want := map[string]float64{OutcomeSuccess: 4, OutcomeHTTP4xx: 1, OutcomeHTTP5xx: 1, OutcomeError: 1}
	for outcome, v := range want {
		if got := testutil.ToFloat64(m.requests.WithLabelValues("server", outcome)); got != v {
			t.Errorf("outcome %s = %v, want %v", outcome, got, v)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 4 {
		t.Errorf("duration has %d series, want 4", n)
	}
	if n := testutil.CollectAndCount(m.requests); n != 4 {
		t.Errorf("requests has %d series, want 4 (one service, four outcomes)", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		status  int
		err     error
		outcome string
	}{
		{200, nil, OutcomeSuccess},
		{204, nil, OutcomeSuccess},
		{304, nil, OutcomeSuccess},
		{399, nil, OutcomeSuccess},
		{400, nil, OutcomeHTTP4xx},
		{429, nil, OutcomeHTTP4xx},
		{499, nil, OutcomeHTTP4xx},
		{500, nil, OutcomeHTTP5xx},
		{599, nil, OutcomeHTTP5xx},
		{0, io.ErrUnexpectedEOF, OutcomeError},
	}
	for _, tt := range tests {
		var resp *http.Response
		if tt.err == nil {
			resp = &http.Response{StatusCode: tt.status}
		}
		if got := outcomeOf(resp, tt.err); got != tt.outcome {
			t.Errorf("outcomeOf(%d, %v) = %s, want %s", tt.status, tt.err, got, tt.outcome)
		}
	}
}
