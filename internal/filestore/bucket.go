package filestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/semaphore"
)

// Bucket is one bucket and key prefix of an S3-compatible object store,
// reached with one S3Config: where an S3 file store keeps its content, and
// what reports are written to. It is safe for concurrent use; open it once
// per configuration, since it holds a pool of connections.
//
// Writes stream: an object of up to one part (S3Config.PartSize) is read
// into memory, checked, and sent in one request; a bigger one is sent as a
// multipart upload, one part in memory at a time, and completed only once
// every byte has been read and checked — so that an object is either whole
// and checked under its key, or absent. A failed write aborts its
// multipart upload; one left behind by a killed process is invisible, and
// AbortAbandonedUploads removes it later.
//
// Every byte held in memory by writes in progress is counted against a
// Budget shared by all buckets of a process: when S3 is slow, writes wait
// for room instead of piling up memory.
type Bucket struct {
	cfg    S3Config
	client *minio.Client // requests without a body, retried by minio
	// once makes each request once: writes (retried by send, with a
	// fresh reader per attempt) and the probe (which answers quickly)
	once     minio.Core
	attempts int
	prefix   string
	creds    string // where the credentials come from, for messages
	budget   *Budget
	buffers  sync.Pool
	conns    *http.Transport
}

// Budget bounds the memory that S3 writes in progress may hold, in bytes.
type Budget struct{ sem *semaphore.Weighted }

// DefaultUploadMemory is the budget of a process that sets none: 16 parts
// of the default size.
const DefaultUploadMemory = 16 * DefaultPartSize

// NewBudget returns a budget of n bytes.
func NewBudget(n int64) *Budget { return &Budget{sem: semaphore.NewWeighted(n)} }

var defaultBudget = NewBudget(DefaultUploadMemory)

// BucketOption adjusts OpenBucket.
type BucketOption func(*Bucket)

// WithBudget makes writes count their memory against b instead of the
// process's default budget of DefaultUploadMemory bytes.
func WithBudget(b *Budget) BucketOption { return func(k *Bucket) { k.budget = b } }

// OpenBucket checks cfg, finds its credentials and builds a client. It
// makes no request: Probe checks that the bucket can be used.
func OpenBucket(cfg S3Config, opts ...BucketOption) (*Bucket, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	creds, source, err := cfg.Credentials()
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.Endpoint) // Check parsed it
	transport, err := s3Transport(&cfg)
	if err != nil {
		return nil, err
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle != nil {
		lookup = minio.BucketLookupDNS
		if *cfg.PathStyle {
			lookup = minio.BucketLookupPath
		}
	}
	newClient := func(retries int) (*minio.Client, error) {
		return minio.New(u.Host, &minio.Options{
			Creds: creds, Secure: u.Scheme == "https", Transport: transport,
			Region: cfg.Region, BucketLookup: lookup, MaxRetries: retries,
		})
	}
	client, err := newClient(cfg.maxAttempts()) // 200ms to 1s apart, with jitter
	if err != nil {
		return nil, configErrorf("endpoint", "%v", err)
	}
	once, err := newClient(1)
	if err != nil {
		return nil, configErrorf("endpoint", "%v", err)
	}
	b := &Bucket{cfg: cfg, client: client, once: minio.Core{Client: once}, attempts: cfg.maxAttempts(),
		prefix: cfg.prefix(), creds: source, budget: defaultBudget, conns: transport}
	for _, o := range opts {
		o(b)
	}
	size := cfg.partSize()
	b.buffers.New = func() any { buf := make([]byte, size); return &buf }
	return b, nil
}

// s3Transport is an HTTP transport with timeouts that fail a dead endpoint
// in seconds, not minutes, and the extra CA when one is configured.
func s3Transport(cfg *S3Config) (*http.Transport, error) {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // objects are served as stored
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, configErrorf("ca_file", "cannot read the CA file: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErrorf("ca_file", "%s holds no PEM certificate", cfg.CAFile)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return t, nil
}

// Close closes the bucket's idle connections; requests under way go on.
func (b *Bucket) Close() error {
	b.conns.CloseIdleConnections()
	return nil
}

// Key is the object key of name: the prefix, then name.
func (b *Bucket) Key(name string) string { return b.prefix + name }

// String names the bucket for messages: endpoint, bucket and prefix.
func (b *Bucket) String() string {
	return strings.TrimSuffix(b.cfg.Endpoint, "/") + "/" + b.cfg.Bucket + "/" + b.prefix
}

// Put writes size bytes from r as the object name (under the prefix),
// replacing any object of that name. It fails with a *MismatchError, and
// writes nothing, when r yields more or fewer bytes.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64, contentType string) error {
	return b.put(ctx, b.Key(name), r, size, contentType, nil)
}

// partSizeFor is the configured part size, raised for objects that would
// need more than S3's 10000 parts, in whole MiB.
func (b *Bucket) partSizeFor(size int64) int64 {
	p := b.cfg.partSize()
	if need := (size + maxParts - 1) / maxParts; need > p {
		p = (need + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return p
}

// put streams r to key. check, when not nil, is given the sha256 of all
// the bytes once they are read, and may refuse them: nothing is written.
func (b *Bucket) put(ctx context.Context, key string, r io.Reader, size int64, contentType string, check func(sum []byte) error) error {
	if size < 0 {
		return fmt.Errorf("S3 %s: negative size %d", b, size)
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	r = ctxReader{ctx, r}
	if part := b.partSizeFor(size); size > part {
		return b.putMultipart(ctx, key, r, size, part, contentType, check)
	}
	// One request: read everything (and one byte more, to catch a body
	// longer than declared), check, send. S3 checks the payload against
	// the sha256 the request is signed with.
	if err := b.budget.sem.Acquire(ctx, size+1); err != nil {
		return err
	}
	defer b.budget.sem.Release(size + 1)
	buf := make([]byte, size+1)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("receiving content: %w", err)
	}
	sum := sha256.Sum256(buf[:n])
	if int64(n) != size {
		return &MismatchError{WantSize: size, GotSize: int64(n), GotSHA256: hex.EncodeToString(sum[:])}
	}
	if check != nil {
		if err := check(sum[:]); err != nil {
			return err
		}
	}
	if _, err := b.send(ctx, func() error {
		_, err := b.once.PutObject(ctx, b.cfg.Bucket, key, bytes.NewReader(buf[:n]), size, "", hex.EncodeToString(sum[:]),
			minio.PutObjectOptions{ContentType: contentType, DisableContentSha256: true})
		return err
	}); err != nil {
		return b.unavailable("writing "+key, err)
	}
	return nil
}

// send makes a request that carries a body, trying it up to the
// configured number of times with backoff while it fails in a way worth
// retrying. Each attempt builds its own reader of the body: after a
// failed attempt Go's transport may still be reading the previous one
// (it closes request bodies asynchronously), and minio-go's own retries,
// which seek one reader back, would race with it. failed reports whether
// any attempt failed: the body's buffer may then still be read by such a
// transport goroutine, and must not be written again.
func (b *Bucket) send(ctx context.Context, attempt func() error) (failed bool, err error) {
	pause := 200 * time.Millisecond
	for i := 1; ; i++ {
		if err = attempt(); err == nil {
			return failed, nil
		}
		failed = true
		if i >= b.attempts || !retryable(err) {
			return failed, err
		}
		select {
		case <-ctx.Done():
			return failed, ctx.Err()
		case <-time.After(pause/2 + time.Duration(mathrand.Int64N(int64(pause/2)))):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// retryable says whether a failed request may succeed when made again:
// network failures other than TLS, and the answers S3 gives when it is
// busy or failing.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "":
		var unknownCA x509.UnknownAuthorityError
		var hostname x509.HostnameError
		var tlsErr *tls.CertificateVerificationError
		return !errors.As(err, &unknownCA) && !errors.As(err, &hostname) && !errors.As(err, &tlsErr)
	case "RequestError", "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded",
		"RequestThrottled", "InternalError", "SlowDown", "SlowDownWrite", "ServiceUnavailable", "ExpiredToken":
		return true
	}
	return resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests
}

// putMultipart sends r in parts of part bytes and completes the upload
// only after the last byte was read and checked; any failure aborts it.
func (b *Bucket) putMultipart(ctx context.Context, key string, r io.Reader, size, part int64, contentType string, check func(sum []byte) error) (err error) {
	if err := b.budget.sem.Acquire(ctx, part); err != nil {
		return err
	}
	defer b.budget.sem.Release(part)
	pooled := part == b.cfg.partSize()
	var buf []byte
	if pooled {
		buf = *b.buffers.Get().(*[]byte)
	} else {
		buf = make([]byte, part)
	}
	defer func() {
		if pooled {
			b.buffers.Put(&buf)
		}
	}()
	var id string
	if _, err := b.send(ctx, func() (err error) {
		id, err = b.once.NewMultipartUpload(ctx, b.cfg.Bucket, key, minio.PutObjectOptions{ContentType: contentType})
		return err
	}); err != nil {
		return b.unavailable("starting the upload of "+key, err)
	}
	defer func() {
		if err != nil {
			b.abort(key, id)
		}
	}()
	whole := sha256.New()
	var parts []minio.CompletePart
	for n, read := 1, int64(0); read < size; n++ {
		chunk := buf[:min(part, size-read)]
		got, err := io.ReadFull(r, chunk)
		whole.Write(chunk[:got])
		read += int64(got)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return &MismatchError{WantSize: size, GotSize: read}
		}
		if err != nil {
			return fmt.Errorf("receiving content: %w", err)
		}
		h := sha256.Sum256(chunk)
		sum := hex.EncodeToString(h[:])
		var p minio.ObjectPart
		failed, err := b.send(ctx, func() (err error) {
			p, err = b.once.PutObjectPart(ctx, b.cfg.Bucket, key, id, n, bytes.NewReader(chunk), int64(len(chunk)),
				minio.PutObjectPartOptions{Sha256Hex: sum, DisableContentSha256: true})
			return err
		})
		if failed {
			// a failed attempt's transport may still read buf: leave it
			// to the garbage collector, take a fresh one
			pooled, buf = false, make([]byte, part)
		}
		if err != nil {
			return b.unavailable(fmt.Sprintf("writing part %d of %s", n, key), err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
	}
	var extra [1]byte
	if n, _ := io.ReadFull(r, extra[:]); n > 0 {
		return &MismatchError{WantSize: size, GotSize: size + 1}
	}
	sum := whole.Sum(nil)
	if check != nil {
		if err := check(sum); err != nil {
			return err
		}
	}
	if _, err := b.send(ctx, func() error {
		_, err := b.once.CompleteMultipartUpload(ctx, b.cfg.Bucket, key, id, parts, minio.PutObjectOptions{})
		return err
	}); err != nil {
		return b.unavailable("completing the upload of "+key, err)
	}
	return nil
}

// abort cancels a multipart upload even when the request that made it
// was cancelled; a failure leaves it to AbortAbandonedUploads.
func (b *Bucket) abort(key, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	minio.Core{Client: b.client}.AbortMultipartUpload(ctx, b.cfg.Bucket, key, id)
}

// Open returns a reader of the object name that can seek (each seek
// starts a ranged GET), or an error wrapping ErrNotFound. Close it.
func (b *Bucket) Open(ctx context.Context, name string) (ReadSeekCloser, error) {
	key := b.Key(name)
	o, err := b.client.GetObject(ctx, b.cfg.Bucket, key, minio.GetObjectOptions{})
	if err == nil {
		_, err = o.Stat() // the first request: the object's size, or its absence
	}
	if err != nil {
		if o != nil {
			o.Close()
		}
		if isNotFound(err) {
			return nil, fmt.Errorf("S3 %s: %s: %w", b, key, ErrNotFound)
		}
		return nil, b.unavailable("reading "+key, err)
	}
	return o, nil
}

// ReadSeekCloser is what Open returns.
type ReadSeekCloser interface {
	io.ReadSeeker
	io.Closer
}

// Exists reports whether the object name exists.
func (b *Bucket) Exists(ctx context.Context, name string) (bool, error) {
	_, err := b.client.StatObject(ctx, b.cfg.Bucket, b.Key(name), minio.StatObjectOptions{})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, b.unavailable("looking up "+b.Key(name), err)
	}
	return true, nil
}

// Delete removes the object name; a missing object is not an error.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := b.client.RemoveObject(ctx, b.cfg.Bucket, b.Key(name), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return b.unavailable("deleting "+b.Key(name), err)
	}
	return nil
}

// PresignGet returns a URL that reads the object name without
// credentials until expiry, served with the given Content-Type and as an
// attachment named filename.
func (b *Bucket) PresignGet(ctx context.Context, name string, expiry time.Duration, filename, contentType string) (*url.URL, error) {
	params := url.Values{}
	if filename != "" {
		params.Set("response-content-disposition", `attachment; filename="`+strings.ReplaceAll(filename, `"`, "")+`"`)
	}
	if contentType != "" {
		params.Set("response-content-type", contentType)
	}
	u, err := b.client.PresignedGetObject(ctx, b.cfg.Bucket, b.Key(name), expiry, params)
	if err != nil {
		return nil, b.unavailable("presigning "+b.Key(name), err)
	}
	return u, nil
}

// AbortAbandonedUploads aborts the multipart uploads under the prefix,
// whose key keep accepts, started before olderThan ago: those of
// processes that were killed before they could complete or abort them.
// It returns how many it aborted. Running it from several processes at
// once is harmless.
func (b *Bucket) AbortAbandonedUploads(ctx context.Context, olderThan time.Duration, keep func(key string) bool) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	aborted := 0
	keyMarker, idMarker := "", ""
	for {
		core := minio.Core{Client: b.client}
		res, err := core.ListMultipartUploads(ctx, b.cfg.Bucket, b.prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return aborted, b.unavailable("listing unfinished uploads", err)
		}
		for _, u := range res.Uploads {
			if !u.Initiated.Before(cutoff) || (keep != nil && !keep(strings.TrimPrefix(u.Key, b.prefix))) {
				continue
			}
			if err := core.AbortMultipartUpload(ctx, b.cfg.Bucket, u.Key, u.UploadID); err != nil && !isCode(err, "NoSuchUpload") {
				return aborted, b.unavailable("aborting the upload of "+u.Key, err)
			}
			aborted++
		}
		if !res.IsTruncated || res.NextKeyMarker == "" {
			return aborted, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// probeName is the object Probe writes, under the prefix.
const probeName = ".kiln-probe"

// Probe checks that the bucket can be used: it writes a small object,
// reads its size back and deletes it, without retrying, and fails with a
// *ProbeError that names the configuration key to fix.
func (b *Bucket) Probe(ctx context.Context) error {
	key := b.Key(probeName + "-" + randomHex(8))
	body := []byte("kiln checks that it may write here; this object is deleted at once\n")
	sum := sha256.Sum256(body)
	_, err := b.once.PutObject(ctx, b.cfg.Bucket, key, bytes.NewReader(body), int64(len(body)), "", hex.EncodeToString(sum[:]),
		minio.PutObjectOptions{ContentType: "text/plain", DisableContentSha256: true})
	if err != nil {
		return b.probeError("write", err)
	}
	info, err := b.once.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
	if err == nil && info.Size != int64(len(body)) {
		err = fmt.Errorf("the object written has %d bytes, read back as %d", len(body), info.Size)
	}
	if err != nil {
		return b.probeError("read back", err)
	}
	if err := b.once.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return b.probeError("delete", err)
	}
	return nil
}

// UnavailableError says an object store could not do what was asked: it
// could not be reached, or it refused. Whatever was being written was not
// stored. The API answers 503, for clients to retry later.
type UnavailableError struct {
	Op  string // what kiln was doing: "writing ab/cd/…"
	Err error
}

// Error explains the failure for a person.
func (e *UnavailableError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns the client's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

func (b *Bucket) unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &UnavailableError{Op: "S3 " + b.String() + ": " + op, Err: errors.New(b.explain(err))}
}

// ProbeError is a failed Probe: Field is the configuration key that is
// most likely wrong.
type ProbeError struct {
	Field   string
	Message string
}

// Error is the message.
func (e *ProbeError) Error() string { return e.Message }

// probeError says what is wrong, with the key to fix.
func (b *Bucket) probeError(step string, err error) error {
	field := "endpoint"
	resp := minio.ToErrorResponse(err)
	var ue *url.Error
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var tlsErr *tls.CertificateVerificationError
	switch {
	case resp.Code == "NoSuchBucket":
		field = "bucket"
	case resp.Code == "AccessDenied", resp.Code == "InvalidAccessKeyId", resp.Code == "SignatureDoesNotMatch",
		resp.Code == "InvalidToken", resp.Code == "ExpiredToken":
		field = "credentials_file"
	case resp.Code == "AuthorizationHeaderMalformed", resp.Code == "PermanentRedirect", resp.Region != "" && b.cfg.Region != "" && resp.Region != b.cfg.Region:
		field = "region"
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &tlsErr):
		field = "ca_file"
	case errors.As(err, &hostname):
		field = "endpoint"
	case errors.As(err, &ue):
		field = "endpoint"
	}
	return &ProbeError{Field: field, Message: fmt.Sprintf("kiln could not %s a test object in %s: %s", step, b, b.explain(err))}
}

// explain turns a client error into a sentence that says what to check.
func (b *Bucket) explain(err error) string {
	resp := minio.ToErrorResponse(err)
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var tlsErr *tls.CertificateVerificationError
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case resp.Code == "NoSuchBucket":
		return fmt.Sprintf("bucket %q does not exist at %s", b.cfg.Bucket, b.cfg.Endpoint)
	case resp.Code == "InvalidAccessKeyId":
		return "the endpoint does not know the access key id from " + b.creds
	case resp.Code == "SignatureDoesNotMatch":
		return "the secret key from " + b.creds + " does not match its access key id"
	case resp.Code == "AccessDenied":
		return fmt.Sprintf("access denied: the keys from %s may not do this in bucket %q (%s)", b.creds, b.cfg.Bucket, resp.Message)
	case resp.Code == "AuthorizationHeaderMalformed" || resp.Code == "PermanentRedirect":
		return fmt.Sprintf("wrong region %q for bucket %q: %s", b.cfg.Region, b.cfg.Bucket, resp.Message)
	case resp.Code != "":
		return fmt.Sprintf("S3 answered %s (HTTP %d): %s", resp.Code, resp.StatusCode, resp.Message)
	case errors.As(err, &unknownCA), errors.As(err, &tlsErr):
		hint := "give the CA that signed it in ca_file"
		if b.cfg.CAFile != "" {
			hint = "it is not signed by the CA in " + b.cfg.CAFile
		}
		return fmt.Sprintf("TLS failure: the certificate of %s is not trusted (%v); %s", b.cfg.Endpoint, err, hint)
	case errors.As(err, &hostname), errors.As(err, &invalid):
		return fmt.Sprintf("TLS failure: the certificate of %s is not valid for it (%v)", b.cfg.Endpoint, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("TLS failure: %s speaks plain HTTP; use an http:// endpoint", b.cfg.Endpoint)
	case errors.Is(err, syscall.ECONNRESET) && strings.HasPrefix(b.cfg.Endpoint, "http://"):
		return fmt.Sprintf("%s closed the connection (%v); if it speaks HTTPS, use an https:// endpoint", b.cfg.Endpoint, err)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve the endpoint's host: %v", dnsErr)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Sprintf("cannot connect to %s: %v", b.cfg.Endpoint, opErr.Err)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("%s did not answer in time: %v", b.cfg.Endpoint, err)
	}
	return err.Error()
}

func isNotFound(err error) bool {
	return isCode(err, "NoSuchKey") || isCode(err, "NotFound")
}

func isCode(err error, code string) bool {
	return err != nil && minio.ToErrorResponse(err).Code == code
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
