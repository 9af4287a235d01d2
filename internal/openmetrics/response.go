package openmetrics

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// The encoded responses of a refresh. Encoding every series costs far more
// than sending the bytes, so each variant of a response — exposition
// format (or JSON for the service status) and scope restriction — is
// encoded once per refresh, by the first request that asks for it, while
// the others asking for it at the same time wait; every later request of
// the refresh is answered with the same bytes. The gzip copy is made the
// same way, the first time a scraper accepts gzip.

// variant names one encoded response of a refresh.
type variant struct {
	format string // Content-Type
	restriction
}

// response is one variant's body, plain and gzip-compressed.
type response struct {
	once sync.Once
	body []byte
	etag string // "" when the refresh serves no ETags

	gzOnce sync.Once
	gz     []byte
	gzETag string
}

// gzipLevel trades size for time: the body is mostly repeated label names,
// which the fastest level already shrinks about 15×; the default level
// takes 5× longer for 20 % less.
const gzipLevel = gzip.BestSpeed

// response returns the response of variant v, encoding it with encode if
// no request of this refresh did yet.
func (sc *scrape) response(v variant, encode func() []byte) *response {
	sc.mu.Lock()
	r := sc.responses[v]
	if r == nil {
		r = &response{}
		sc.responses[v] = r
	}
	sc.mu.Unlock()
	r.once.Do(func() {
		r.body = encode()
		if sc.etags {
			r.etag = etag(r.body)
		}
	})
	return r
}

// gzipped returns the gzip-compressed body, compressing it with a writer
// of e's pool the first time.
func (e *Endpoint) gzipped(r *response) ([]byte, string) {
	r.gzOnce.Do(func() {
		buf := bytes.NewBuffer(e.gzBodies.get())
		buf.Grow(len(r.body)/8 + 512)
		zw, _ := e.gzips.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(buf, gzipLevel)
		} else {
			zw.Reset(buf)
		}
		// writes to a bytes.Buffer cannot fail
		zw.Write(r.body)
		zw.Close()
		e.gzips.Put(zw)
		r.gz = buf.Bytes()
		if r.etag != "" {
			r.gzETag = strings.TrimSuffix(r.etag, `"`) + `-gzip"`
		}
	})
	return r.gz, r.gzETag
}

// etag is a strong entity tag of body: the same bytes get the same tag
// from every refresh and every replica, so a client's conditional request
// is answered 304 as long as nothing changed. The gzip copy gets its own
// tag (suffix), as RFC 9110 requires of a different representation.
func etag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// write answers r with resp: gzip-compressed when the client accepts it,
// with Content-Length and, when the refresh serves them, an ETag; a
// matching If-None-Match is answered 304 without a body.
func (e *Endpoint) write(w http.ResponseWriter, r *http.Request, resp *response, contentType string) {
	body, tag := resp.body, resp.etag
	h := w.Header()
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body, tag = e.gzipped(resp)
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", contentType)
	if tag != "" {
		h.Set("ETag", tag)
		if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatch(inm, tag) {
			h.Del("Content-Type")
			h.Del("Content-Encoding")
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// acceptsGzip tells whether an Accept-Encoding header accepts gzip: it
// names gzip (or x-gzip, or *) without q=0.
func acceptsGzip(header string) bool {
	for header != "" {
		var item string
		item, header, _ = strings.Cut(header, ",")
		coding, params, _ := strings.Cut(item, ";")
		switch strings.ToLower(strings.TrimSpace(coding)) {
		case "gzip", "x-gzip", "*":
			return !zeroQ(params)
		}
	}
	return false
}

// zeroQ tells whether parameters ";q=0", ";q=0.0", ";q=0.000" say "not
// acceptable".
func zeroQ(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(name), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			return err == nil && q == 0
		}
	}
	return false
}

// noneMatch tells whether an If-None-Match header matches tag: "*" or a
// list holding tag, compared weakly (W/ ignored) as RFC 9110 §13.1.2 says.
func noneMatch(header, tag string) bool {
	for header != "" {
		var item string
		item, header, _ = strings.Cut(header, ",")
		item = strings.TrimSpace(item)
		if item == "*" || strings.TrimPrefix(item, "W/") == tag {
			return true
		}
	}
	return false
}

// sizeHint is the body size of a variant at the last refresh (and a
// little more), so that the next encoding allocates its buffer once.
func (e *Endpoint) sizeHint(v variant) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sizes[v]
}

func (e *Endpoint) noteSize(v variant, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sizes[v] = n + n/16
}

// bufferPool recycles byte slices.
type bufferPool struct{ p sync.Pool }

// get returns an empty slice, with the capacity of one put back if any.
func (b *bufferPool) get() []byte {
	if p, _ := b.p.Get().(*[]byte); p != nil {
		return (*p)[:0]
	}
	return nil
}

// put gives buf back for another get; its content must no longer be
// used.
func (b *bufferPool) put(buf []byte) {
	if cap(buf) > 0 {
		b.p.Put(&buf)
	}
}
