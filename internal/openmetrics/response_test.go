package openmetrics

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGzip: a scraper that accepts gzip (Prometheus does) gets the same
// body compressed, with its length; one that refuses it gets it plain.
func TestGzip(t *testing.T) {
	e := New(&fakeSource{snap: smallSnapshot()}, Options{CacheTTL: time.Minute})
	plain := do(t, e, "GET", map[string]string{"Accept": acceptOpenMetrics})
	for _, ae := range []string{"gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8, *;q=0.1", "x-gzip", "*"} {
		rec := do(t, e, "GET", map[string]string{"Accept": acceptOpenMetrics, "Accept-Encoding": ae})
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q", ae, rec.Header().Get("Content-Encoding"))
		}
		if rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
			t.Errorf("Content-Length %q for %d bytes", rec.Header().Get("Content-Length"), rec.Body.Len())
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, plain.Body.Bytes()) {
			t.Errorf("Accept-Encoding %q: the decompressed body differs from the plain one", ae)
		}
		if rec.Header().Get("ETag") == plain.Header().Get("ETag") {
			t.Error("the gzip and the plain body share an ETag")
		}
	}
	for _, ae := range []string{"", "identity", "gzip;q=0", "deflate, gzip; q=0.000", "br"} {
		rec := do(t, e, "GET", map[string]string{"Accept": acceptOpenMetrics, "Accept-Encoding": ae})
		if rec.Header().Get("Content-Encoding") != "" || !bytes.Equal(rec.Body.Bytes(), plain.Body.Bytes()) {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want the plain body", ae, rec.Header().Get("Content-Encoding"))
		}
	}
	if v := plain.Header().Get("Vary"); v != "Accept, Accept-Encoding, Authorization" {
		t.Errorf("Vary %q", v)
	}
}

// TestETag: with caching on, each body has a strong ETag that depends on
// the bytes only, so a conditional request is answered 304 while nothing
// changed, even across refreshes; caching off sends none.
func TestETag(t *testing.T) {
	clk := &testClock{t: farmNow}
	src := &fakeSource{snap: smallSnapshot()}
	e := New(src, Options{CacheTTL: 30 * time.Second, Now: clk.Now})
	for _, h := range []http.Handler{e, e.ServiceStatus()} {
		first := do(t, h, "GET", nil)
		tag := first.Header().Get("ETag")
		if len(tag) < 10 || tag[0] != '"' || tag[len(tag)-1] != '"' {
			t.Fatalf("ETag %q", tag)
		}
		for _, inm := range []string{tag, "W/" + tag, `"other", ` + tag, "*"} {
			rec := do(t, h, "GET", map[string]string{"If-None-Match": inm})
			if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 || rec.Header().Get("ETag") != tag {
				t.Errorf("If-None-Match %s: %d, %d bytes, ETag %q; want 304", inm, rec.Code, rec.Body.Len(), rec.Header().Get("ETag"))
			}
		}
		if rec := do(t, h, "GET", map[string]string{"If-None-Match": `"other"`}); rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("another ETag: %d", rec.Code)
		}
		clk.Add(time.Minute) // a refresh with the same figures
		if rec := do(t, h, "GET", map[string]string{"If-None-Match": tag}); rec.Code != http.StatusNotModified {
			t.Errorf("same figures after a refresh: %d, want 304", rec.Code)
		}
	}
	before := do(t, e, "GET", nil).Header().Get("ETag")
	src.snap = smallSnapshot()
	src.snap.Totals[0].Value++
	clk.Add(time.Minute)
	rec := do(t, e, "GET", map[string]string{"If-None-Match": before})
	if rec.Code != 200 || rec.Header().Get("ETag") == before {
		t.Errorf("changed figures: %d, ETag %q (was %q)", rec.Code, rec.Header().Get("ETag"), before)
	}

	uncached := do(t, New(src, Options{}), "GET", nil)
	if tag := uncached.Header().Get("ETag"); tag != "" {
		t.Errorf("uncached response with ETag %q", tag)
	}
}

// TestEncodedOnce: the scrapes of one refresh that ask for the same
// variant share one encoding, even when they arrive together.
func TestEncodedOnce(t *testing.T) {
	sc := &scrape{responses: map[variant]*response{}, etags: true}
	var encodings atomic.Int32
	release := make(chan struct{})
	encode := func() []byte {
		encodings.Add(1)
		<-release
		return []byte("body")
	}
	var wg sync.WaitGroup
	got := make([]*response, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = sc.response(variant{format: "text/plain"}, encode)
		}()
	}
	waitFor(t, func() bool { return encodings.Load() == 1 })
	close(release)
	wg.Wait()
	for _, r := range got {
		if r != got[0] || string(r.body) != "body" || r.etag == "" {
			t.Fatalf("response %p %q %q, want the one shared response", r, r.body, r.etag)
		}
	}
	other := sc.response(variant{format: "text/plain", restriction: restriction{restricted: true, name: "debian"}}, func() []byte {
		encodings.Add(1)
		return []byte("debian")
	})
	if encodings.Load() != 2 || string(other.body) != "debian" {
		t.Errorf("a scope restriction is its own variant: %d encodings, %q", encodings.Load(), other.body)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, " gzip ;q=0.5": true, "gzip;q=0": false, "gzip; q=0.0": false,
		"deflate": false, "gzipx": false, "identity, *;q=0": false, "*": true, "br, x-gzip": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

// discard is a ResponseWriter that drops the body, so that benchmarks
// measure the handler rather than a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkCachedScrape is what a scrape answered from the cache costs the
// server besides sending the bytes: authentication, negotiation, headers.
func BenchmarkCachedScrape(b *testing.B) {
	e := New(&fakeSource{snap: smallSnapshot()}, Options{CacheTTL: time.Hour,
		ScopeOf: func(r *http.Request) (int64, bool, error) { return 0, false, nil }})
	req, _ := http.NewRequest("GET", "/api/1.0/open-metrics/", nil)
	req.Header.Set("Accept", acceptOpenMetrics)
	req.Header.Set("Accept-Encoding", "gzip")
	w := &discard{h: http.Header{}}
	e.ServeHTTP(w, req)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		e.ServeHTTP(w, req)
	}
}
