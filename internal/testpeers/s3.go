package testpeers

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Options shapes a test S3 server. The zero value is a plain-HTTP
// server with one bucket, "kiln", in region us-east-1.
type S3Options struct {
	// TLS serves HTTPS with a fresh self-signed certificate for 127.0.0.1,
	// written to S3.CAFile.
	TLS bool
	// Buckets replaces the default bucket list.
	Buckets []string
	// ClockOffset shifts the server's clock: -time.Hour makes every
	// multipart upload look an hour old, as if its uploader had died then.
	ClockOffset time.Duration
	// OnDisk keeps objects and the parts of multipart uploads in files
	// under the test's temporary directory, for uploads of gigabytes;
	// otherwise the server keeps everything in memory.
	OnDisk bool
}

// S3 is a running S3 server process (internal/testpeers/s3server) with its
// keys: Key may read and write, ReadOnlyKey may only read.
type S3 struct {
	Endpoint string // http://127.0.0.1:PORT or https://…
	Bucket   string // the first bucket
	Region   string
	Key      Key
	// ReadOnlyKey is refused writes with AccessDenied, as a real S3 refuses
	// a key whose policy only allows reads.
	ReadOnlyKey Key
	// CAFile is the certificate to trust when TLS is on.
	CAFile string
}

// Key is an S3 access key and its secret.
type Key struct{ ID, Secret string }

var s3Build struct {
	once sync.Once
	bin  string
	err  error
}

// s3ServerBinary builds the test server once per test process, into the
// user's cache directory under a name derived from its source and go.sum,
// so that repeated runs reuse it and a changed source rebuilds it.
func s3ServerBinary() (string, error) {
	s3Build.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		h := sha256.New()
		sources, _ := filepath.Glob(filepath.Join(root, "internal/testpeers/s3server/*.go"))
		for i := range sources {
			sources[i], _ = filepath.Rel(root, sources[i])
		}
		for _, f := range append(sources, "go.sum", "go.mod") {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				s3Build.err = err
				return
			}
			h.Write(b)
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "kiln-testpeers")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			s3Build.err = err
			return
		}
		bin := filepath.Join(dir, "s3server-"+hex.EncodeToString(h.Sum(nil))[:16])
		if _, err := os.Stat(bin); err == nil {
			s3Build.bin = bin
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			s3Build.err = fmt.Errorf("the go command is needed to build the test S3 server: %w", err)
			return
		}
		tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
		cmd := exec.Command(goTool, "build", "-buildvcs=false", "-o", tmp, "./internal/testpeers/s3server")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			s3Build.err = fmt.Errorf("building the test S3 server: %v\n%s", err, out)
			return
		}
		// concurrent test processes may race here: rename is atomic
		s3Build.err = os.Rename(tmp, bin)
		s3Build.bin = bin
	})
	return s3Build.bin, s3Build.err
}

// StartS3 starts the test S3 server as a process of its own on loopback
// and stops it when the test ends.
func StartS3(t testing.TB, o S3Options) *S3 {
	t.Helper()
	bin, err := s3ServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	s := &S3{Region: "us-east-1", Key: Key{"kilnaccess", "kilnsecret-" + randHex(8)},
		ReadOnlyKey: Key{"kilnreader", "readersecret-" + randHex(8)}}
	buckets := o.Buckets
	if len(buckets) == 0 {
		buckets = []string{"kiln"}
	}
	s.Bucket = buckets[0]
	args := []string{"-buckets", strings.Join(buckets, ","), "-region", s.Region,
		"-key", s.Key.ID + ":" + s.Key.Secret, "-read-only-key", s.ReadOnlyKey.ID + ":" + s.ReadOnlyKey.Secret}
	if o.OnDisk {
		args = append(args, "-dir", t.TempDir())
	}
	if o.ClockOffset != 0 {
		args = append(args, "-clock-offset", o.ClockOffset.String())
	}
	if o.TLS {
		cert, key := selfSigned(t)
		s.CAFile = cert
		args = append(args, "-tls-cert", cert, "-tls-key", key)
	}
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-done
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		u, found := strings.CutPrefix(l, "listening on ")
		if !ok || !found {
			t.Fatalf("test S3 server did not start: %q\n%s", l, logs)
		}
		s.Endpoint = u
	case <-time.After(30 * time.Second):
		t.Fatalf("test S3 server not ready after 30s:\n%s", logs)
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// selfSigned writes a certificate for 127.0.0.1 and ::1 and its key.
func selfSigned(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "kiln test S3"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// client is a minio client with the read-write key, for the test's own
// look at the bucket (plain HTTP servers only).
func (s *S3) client(t testing.TB) *minio.Client {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimPrefix(s.Endpoint, "http://"), "https://")
	// no keep-alive: the test's own look leaves no idle connection (and
	// no goroutine) behind, for tests that count them
	tr, err := minio.DefaultTransport(strings.HasPrefix(s.Endpoint, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	tr.DisableKeepAlives = true
	c, err := minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(s.Key.ID, s.Key.Secret, ""),
		Secure: strings.HasPrefix(s.Endpoint, "https://"), Region: s.Region, Transport: tr,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Objects lists the keys of the visible objects under prefix, sorted.
func (s *S3) Objects(t testing.TB, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range s.client(t).ListObjects(context.Background(), s.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	slices.Sort(keys)
	return keys
}

// Uploads lists the keys of the multipart uploads under prefix that were
// neither completed nor aborted.
func (s *S3) Uploads(t testing.TB, prefix string) []string {
	t.Helper()
	var keys []string
	for u := range s.client(t).ListIncompleteUploads(context.Background(), s.Bucket, prefix, true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		keys = append(keys, u.Key)
	}
	slices.Sort(keys)
	return keys
}

// StartUpload begins a multipart upload and leaves it incomplete, as a
// server killed in the middle of an upload does.
func (s *S3) StartUpload(t testing.TB, key string) {
	t.Helper()
	c := minio.Core{Client: s.client(t)}
	if _, err := c.NewMultipartUpload(context.Background(), s.Bucket, key, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Abort aborts the unfinished uploads of key, as an operator would.
func (s *S3) Abort(t testing.TB, key string) {
	t.Helper()
	if err := s.client(t).RemoveIncompleteUpload(context.Background(), s.Bucket, key); err != nil {
		t.Fatal(err)
	}
}

// Get reads an object.
func (s *S3) Get(t testing.TB, key string) []byte {
	t.Helper()
	o, err := s.client(t).GetObject(context.Background(), s.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
