// Command s3server is an S3 server for kiln's tests, never part of the kiln
// binary: github.com/johannesboyne/gofakes3 (objects in memory) behind the
// checks a real S3 endpoint makes and gofakes3 does not — AWS Signature
// Version 4 on every request (headers or a presigned query, whose expiry
// counts), an access key that may only read, a region, the payload hash a
// request declares — optionally over TLS. Tests start it as a process of
// its own and speak to it over HTTP on loopback (see testpeers.StartS3).
//
// It prints "listening on URL" once it accepts connections, and exits when
// its standard input closes, so that a test process killed without
// cleaning up does not leave it behind.
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	buckets := flag.String("buckets", "kiln", "comma-separated buckets to create")
	region := flag.String("region", "us-east-1", "the region requests must be signed for")
	key := flag.String("key", "", "ACCESS:SECRET allowed to read and write; empty turns signature checks off")
	readOnly := flag.String("read-only-key", "", "ACCESS:SECRET allowed to read only")
	cert := flag.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	tlsKey := flag.String("tls-key", "", "private key of -tls-cert (PEM)")
	offset := flag.Duration("clock-offset", 0, "shift the server's clock (upload and object times) by this much; -1h makes new uploads look an hour old")
	dir := flag.String("dir", "", "keep objects and upload parts in this directory instead of memory (for uploads of gigabytes)")
	flag.Parse()

	clock := gofakes3.TimeSource(offsetClock(*offset))
	var backend gofakes3.Backend = s3mem.New(s3mem.WithTimeSource(clock))
	if *dir != "" {
		d, err := newDiskBackend(*dir, clock)
		if err != nil {
			log.Fatal(err)
		}
		backend = d
	}
	for _, b := range strings.Split(*buckets, ",") {
		if b = strings.TrimSpace(b); b != "" {
			if err := backend.CreateBucket(b); err != nil {
				log.Fatal(err)
			}
		}
	}
	// the clock may be shifted: signatures' times are checked below
	// against the real one, not by gofakes3 against its own
	fake := gofakes3.New(backend, gofakes3.WithoutVersioning(), gofakes3.WithTimeSource(clock), gofakes3.WithTimeSkewLimit(0))
	a := &auth{region: *region, keys: map[string]credential{}}
	for _, k := range []struct {
		spec  string
		write bool
	}{{*key, true}, {*readOnly, false}} {
		if k.spec == "" {
			continue
		}
		id, secret, ok := strings.Cut(k.spec, ":")
		if !ok {
			log.Fatalf("a key is ACCESS:SECRET, got %q", k.spec)
		}
		a.keys[id] = credential{secret: secret, write: k.write}
	}
	var handler http.Handler = fake.Server()
	for _, b := range strings.Split(*buckets, ",") {
		if b = strings.TrimSpace(b); b != "" {
			primeUploads(handler, b)
		}
	}
	if len(a.keys) > 0 {
		handler = a.wrap(handler)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	scheme := "http"
	if *cert != "" {
		scheme = "https"
	}
	fmt.Printf("listening on %s://%s\n", scheme, ln.Addr())
	go func() {
		// the parent test closes our stdin when it ends, or dies
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		os.Exit(0)
	}()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	if *cert != "" {
		err = srv.ServeTLS(ln, *cert, *tlsKey)
	} else {
		err = srv.Serve(ln)
	}
	log.Fatal(err)
}

// primeUploads starts and aborts one multipart upload in bucket: gofakes3
// answers NoSuchUpload when asked to list the uploads of a bucket that
// never had one, where S3 answers an empty list.
func primeUploads(h http.Handler, bucket string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/"+bucket+"/.prime?uploads", nil))
	var res struct {
		UploadID string `xml:"UploadId"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &res); err != nil || res.UploadID == "" {
		log.Fatalf("priming the uploads of %s: %v %s", bucket, err, rec.Body)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodDelete, "/"+bucket+"/.prime?uploadId="+res.UploadID, nil))
}

// offsetClock is a time source shifted from the real clock.
type offsetClock time.Duration

func (o offsetClock) Now() time.Time                  { return time.Now().Add(time.Duration(o)) }
func (o offsetClock) Since(t time.Time) time.Duration { return o.Now().Sub(t) }

type credential struct {
	secret string
	write  bool
}

// auth checks AWS Signature Version 4 the way S3 does: the signature of
// the canonical request, the region of the credential scope, the expiry of
// a presigned URL, that a read-only key does not write, and that a body
// matches the sha256 its request declares.
type auth struct {
	region string
	keys   map[string]credential
}

// s3Error writes an S3 error document.
func s3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	xml.NewEncoder(w).Encode(struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		RequestID string `xml:"RequestId"`
	}{Code: code, Message: message, RequestID: "test"})
}

func (a *auth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, code, msg := a.check(r)
		if status != 0 {
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
			s3Error(w, status, code, msg)
			return
		}
		if want := r.Header.Get("X-Amz-Content-Sha256"); len(want) == 64 && r.Body != nil {
			r.Body = &payloadCheck{ReadCloser: r.Body, h: sha256.New(), want: want}
		}
		next.ServeHTTP(w, r)
	})
}

// payloadCheck fails the read that reaches the end of a body whose sha256
// is not the declared one, so that the backend stores nothing.
type payloadCheck struct {
	io.ReadCloser
	h    hash.Hash
	want string
}

func (p *payloadCheck) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	p.h.Write(b[:n])
	if errors.Is(err, io.EOF) && hex.EncodeToString(p.h.Sum(nil)) != p.want {
		return n, errors.New("XAmzContentSHA256Mismatch: the body does not match x-amz-content-sha256")
	}
	return n, err
}

func (a *auth) check(r *http.Request) (int, string, string) {
	q := r.URL.Query()
	var credentialField, signedHeaders, signature, amzDate, payload string
	presigned := q.Get("X-Amz-Signature") != ""
	header := r.Header.Get("Authorization")
	switch {
	case presigned && header != "":
		return 400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified"
	case presigned:
		if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" {
			return 400, "AuthorizationQueryParametersError", "X-Amz-Algorithm must be AWS4-HMAC-SHA256"
		}
		credentialField, signedHeaders, signature = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature")
		amzDate, payload = q.Get("X-Amz-Date"), "UNSIGNED-PAYLOAD"
		t, err := time.Parse("20060102T150405Z", amzDate)
		expires, eerr := strconv.Atoi(q.Get("X-Amz-Expires"))
		if err != nil || eerr != nil {
			return 400, "AuthorizationQueryParametersError", "X-Amz-Date and X-Amz-Expires are required"
		}
		if time.Now().After(t.Add(time.Duration(expires) * time.Second)) {
			return 403, "AccessDenied", "Request has expired"
		}
	case strings.HasPrefix(header, "AWS4-HMAC-SHA256 "):
		for _, part := range strings.Split(strings.TrimPrefix(header, "AWS4-HMAC-SHA256 "), ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "Credential":
				credentialField = v
			case "SignedHeaders":
				signedHeaders = v
			case "Signature":
				signature = v
			}
		}
		amzDate, payload = r.Header.Get("X-Amz-Date"), r.Header.Get("X-Amz-Content-Sha256")
		if payload == "" {
			return 400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
		}
		if t, err := time.Parse("20060102T150405Z", amzDate); err != nil || time.Since(t).Abs() > 15*time.Minute {
			return 403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large."
		}
	default:
		return 403, "AccessDenied", "Access Denied"
	}
	scope := strings.Split(credentialField, "/")
	if len(scope) != 5 || scope[3] != "s3" || scope[4] != "aws4_request" {
		return 400, "AuthorizationHeaderMalformed", "the credential is malformed"
	}
	cred, ok := a.keys[scope[0]]
	if !ok {
		return 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
	}
	if scope[2] != a.region {
		return 400, "AuthorizationHeaderMalformed", fmt.Sprintf("the region '%s' is wrong; expecting '%s'", scope[2], a.region)
	}
	want := a.sign(r, cred.secret, scope, amzDate, signedHeaders, payload, presigned)
	if !hmac.Equal([]byte(want), []byte(signature)) {
		return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."
	}
	if !cred.write && r.Method != http.MethodGet && r.Method != http.MethodHead {
		return 403, "AccessDenied", "Access Denied"
	}
	return 0, "", ""
}

// sign computes the signature of r as SigV4 defines it.
func (a *auth) sign(r *http.Request, secret string, scope []string, amzDate, signedHeaders, payload string, presigned bool) string {
	q := r.URL.Query()
	q.Del("X-Amz-Signature")
	query := strings.ReplaceAll(q.Encode(), "+", "%20")
	var canon strings.Builder
	names := strings.Split(signedHeaders, ";")
	sort.Strings(names)
	for _, h := range names {
		v := r.Header.Values(h)
		if h == "host" {
			v = []string{r.Host}
		}
		if h == "content-length" {
			v = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
		for i := range v {
			v[i] = strings.Join(strings.Fields(v[i]), " ")
		}
		canon.WriteString(h + ":" + strings.Join(v, ",") + "\n")
	}
	path, _, _ := strings.Cut(r.RequestURI, "?") // as sent, already escaped
	request := strings.Join([]string{r.Method, path, query, canon.String(), signedHeaders, payload}, "\n")
	sum := sha256.Sum256([]byte(request))
	toSign := strings.Join([]string{"AWS4-HMAC-SHA256", amzDate, strings.Join(scope[1:], "/"), hex.EncodeToString(sum[:])}, "\n")
	key := []byte("AWS4" + secret)
	for _, s := range scope[1:] {
		key = hmacSum(key, s)
	}
	return hex.EncodeToString(hmacSum(key, toSign))
}

func hmacSum(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
