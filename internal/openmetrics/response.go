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

// response is one variant's body, plain and gzip-compressed, with the
// values of its headers made once: a cached scrape is answered thousands
// of times a second, and building, checking and allocating the header
// values was a third of the handler's own CPU time (see header).
type response struct {
	once        sync.Once
	body        []byte
	etag        string   // "" when the refresh serves no ETags
	contentType []string // header values
	length      []string
	etagHeader  []string // nil without an ETag

	gzOnce       sync.Once
	gz           []byte
	gzETag       string
	gzLength     []string
	gzETagHeader []string
}

// Header values that every answer shares. net/http only reads the values
// of a handler's header (it copies them when the header is written), and
// Header.Set or Add elsewhere replace a slice or grow a copy of it, so
// one slice can serve every response.
var (
	varyHeader    = []string{"Accept, Accept-Encoding, Authorization"}
	noStoreHeader = []string{"no-store"}
	gzipHeader    = []string{"gzip"}
)

// header returns the one-value header slice of v.
func header(v string) []string { return []string{v} }

// ageHeader returns the Age header's value for an age in seconds: one of
// e.ages, made once, up to the cache's lifetime.
func (e *Endpoint) ageHeader(seconds int) []string {
	if seconds >= 0 && seconds < len(e.ages) {
		return e.ages[seconds]
	}
	return header(strconv.Itoa(seconds))
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
		r.contentType, r.length = header(v.format), header(strconv.Itoa(len(r.body)))
		if sc.etags {
			r.etag = etag(r.body)
			r.etagHeader = header(r.etag)
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
		r.gzLength = header(strconv.Itoa(len(r.gz)))
		if r.etag != "" {
			r.gzETag = strings.TrimSuffix(r.etag, `"`) + `-gzip"`
			r.gzETagHeader = header(r.gzETag)
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
func (e *Endpoint) write(w http.ResponseWriter, r *http.Request, resp *response) {
	body, tag, length, tagHeader := resp.body, resp.etag, resp.length, resp.etagHeader
	// the header's keys are written in canonical form, so it is filled
	// directly: Set would check and canonicalize each key again
	h := w.Header()
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body, tag = e.gzipped(resp)
		length, tagHeader = resp.gzLength, resp.gzETagHeader
		h["Content-Encoding"] = gzipHeader
	}
	h["Content-Type"] = resp.contentType
	if tag != "" {
		h["Etag"] = tagHeader
		if inm := r.Header.Get("If-None-Match"); inm != "" && noneMatch(inm, tag) {
			delete(h, "Content-Type")
			delete(h, "Content-Encoding")
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h["Content-Length"] = length
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
