package api_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// generated is a stream of n pseudo-random bytes that can be replayed
// (same seed, same bytes) without holding them in memory.
func generated(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

func generatedSum(seed uint64, n int64) string {
	h := sha256.New()
	io.Copy(h, generated(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// declare creates an artifact in debian/pub with one file of this content.
func (e *env) declare(t *testing.T, name, sha string, size int64) string {
	t.Helper()
	body := fmt.Sprintf(`{"category": "test:x", "workspace": "debian/pub", "files": [{"path": %q, "sha256": %q, "size": %d}]}`, name, sha, size)
	return "/api/1.0/artifacts/" + itoa(id(e.do("POST", "/api/1.0/artifacts/", adminSecret, body).want(t, 201).obj(t))) + "/"
}

// put uploads body as the file name of an artifact, streamed.
func (e *env) put(ctx context.Context, art, name string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, e.srv.URL+art+"files/"+name, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Token "+adminSecret)
	req.Header.Set("Content-Type", "application/octet-stream")
	return e.srv.Client().Do(req)
}

// TestS3UploadFaults: S3 failing during an upload fails the upload with a
// clear 503, leaves no object visible and nothing counted, and the upload
// succeeds when retried; what the failed multipart upload left in the
// bucket (its abort could not reach S3 either) is swept later.
func TestS3UploadFaults(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		e := newEnv(t, dsn)
		// the server's clock runs an hour behind: every unfinished upload
		// looks abandoned to a sweep with a 1-minute age
		store := e.useS3(t, testpeers.S3Options{ClockOffset: -time.Hour}, map[string]any{"abandoned_upload_age": "1m"})
		small := "build log\n"
		smallArt := e.declare(t, "build.log", sum(small), int64(len(small)))
		const bigSize = 3*filestore.MinPartSize + 1000
		bigSum := generatedSum(1, bigSize)
		bigArt := e.declare(t, "big.bin", bigSum, bigSize)
		nothingStored := func(step string) {
			t.Helper()
			if o := store.s3.Objects(t, s3Prefix); len(o) != 0 {
				t.Fatalf("%s: objects visible: %v", step, o)
			}
			if n := store.totalSize(t, e); n != 0 {
				t.Fatalf("%s: total_size %d", step, n)
			}
			for _, a := range []string{smallArt, bigArt} {
				if f := e.do("GET", a, adminSecret, nil).want(t, 200).obj(t)["files"].([]any)[0].(map[string]any); f["complete"] != false {
					t.Fatalf("%s: %v is complete", step, f)
				}
			}
		}

		// S3 down: a clear 503, to retry
		store.proxy.Set(testpeers.Fault{Down: true})
		r := e.doCT("PUT", smallArt+"files/build.log", adminSecret, "application/octet-stream", small)
		p := r.wantProblem(t, 503, "")
		if !strings.Contains(p.Detail, "file store is unavailable") || !strings.Contains(p.Detail, "nothing of build.log was stored") ||
			r.header.Get("Retry-After") == "" {
			t.Fatalf("unclear: %q (Retry-After %q)", p.Detail, r.header.Get("Retry-After"))
		}
		// S3 answering errors
		store.proxy.Set(testpeers.Fault{Status: 500})
		p = e.doCT("PUT", smallArt+"files/build.log", adminSecret, "application/octet-stream", small).wantProblem(t, 503, "")
		if !strings.Contains(p.Detail, "InternalError") {
			t.Fatalf("unclear: %q", p.Detail)
		}
		nothingStored("S3 down")

		// S3 goes down in the middle of a multipart upload
		store.proxy.Set(testpeers.Fault{})
		start := store.proxy.Relayed.Load()
		done := make(chan *http.Response, 1)
		go func() {
			resp, err := e.put(ctx, bigArt, "big.bin", generated(1, bigSize), bigSize)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		for store.proxy.Relayed.Load()-start < filestore.MinPartSize+(1<<20) {
			time.Sleep(2 * time.Millisecond)
		}
		store.proxy.Set(testpeers.Fault{Down: true})
		resp := <-done
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), "nothing of big.bin was stored") {
			t.Fatalf("upload cut by S3: %d %s", resp.StatusCode, b)
		}
		nothingStored("S3 down mid-upload")
		store.proxy.Set(testpeers.Fault{})
		if u := store.s3.Uploads(t, s3Prefix); len(u) != 1 {
			t.Fatalf("want the unfinished upload that could not be aborted, got %v", u)
		}
		if s := e.blobs.Sweep(ctx); s.Uploads != 1 || s.Errors != 0 {
			t.Fatalf("sweep: %+v", s)
		}
		if u := store.s3.Uploads(t, s3Prefix); len(u) != 0 {
			t.Fatalf("sweep left %v", u)
		}

		// retried, both go through
		e.doCT("PUT", smallArt+"files/build.log", adminSecret, "application/octet-stream", small).want(t, 201)
		resp, err := e.put(ctx, bigArt, "big.bin", generated(1, bigSize), bigSize)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("retry: %v %v", resp.Status, err)
		}
		resp.Body.Close()
		if n := store.totalSize(t, e); n != bigSize+int64(len(small)) {
			t.Fatalf("total_size %d", n)
		}
		got := e.do("GET", bigArt+"files/big.bin", adminSecret, nil).want(t, 200)
		if h := sha256.Sum256(got.body); hex.EncodeToString(h[:]) != bigSum {
			t.Fatal("downloaded content differs")
		}
	})
}

// TestS3PresignedDownloads: a store with presigned downloads answers a
// download with a redirect to S3 that works without kiln's token and
// carries the file's name and type.
func TestS3PresignedDownloads(t *testing.T) {
	e := newEnv(t, testdb.SQLite(t))
	e.useS3(t, testpeers.S3Options{}, map[string]any{"presigned_downloads": true, "presigned_expiry": "5m"})
	content := "presigned\n"
	art := e.declare(t, "out/report.txt", sum(content), int64(len(content)))
	e.doCT("PUT", art+"files/out/report.txt", adminSecret, "application/octet-stream", content).want(t, 201)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", e.srv.URL+art+"files/out/report.txt", nil)
	req.Header.Set("Authorization", "Token "+adminSecret)
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "X-Amz-Signature=") ||
		resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("ETag") != `"`+sum(content)+`"` {
		t.Fatalf("redirect: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != content || !strings.Contains(resp.Header.Get("Content-Disposition"), "report.txt") {
		t.Fatalf("presigned GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// anyone who sees the workspace gets the URL, a visitor who does not
	// gets none
	req.Header.Set("Authorization", "Token "+e.tok["bob"]) // debian/pub is public
	if resp, err := noFollow.Do(req); err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("bob: %v %v", resp.Status, err)
	}
	priv := fmt.Sprintf(`{"category": "test:x", "workspace": "debian/priv", "files": [{"path": "p", "sha256": %q, "size": %d}]}`, sum(content), len(content))
	privArt := "/api/1.0/artifacts/" + itoa(id(e.do("POST", "/api/1.0/artifacts/", adminSecret, priv).want(t, 201).obj(t))) + "/"
	e.doCT("PUT", privArt+"files/p", adminSecret, "application/octet-stream", content).want(t, 201)
	if r := e.do("GET", privArt+"files/p", e.tok["bob"], nil); r.status != 404 || strings.Contains(string(r.body), "X-Amz") {
		t.Fatalf("outsider: %d %s", r.status, r.body)
	}
}

// TestS3RangeDownloads: ranges are served from S3 with ranged reads.
func TestS3RangeDownloads(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend model.FileStoreBackend) {
		e := newEnv(t, testdb.SQLite(t))
		e.useStore(t, backend)
		content := "0123456789abcdef"
		art := e.declare(t, "r.bin", sum(content), int64(len(content)))
		e.doCT("PUT", art+"files/r.bin", adminSecret, "application/octet-stream", content).want(t, 201)
		req, _ := http.NewRequest("GET", e.srv.URL+art+"files/r.bin", nil)
		req.Header.Set("Authorization", "Token "+adminSecret)
		req.Header.Set("Range", "bytes=10-13")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || string(body) != "abcd" || resp.Header.Get("Content-Range") != "bytes 10-13/16" {
			t.Fatalf("range: %d %q %v", resp.StatusCode, body, resp.Header)
		}
	})
}

// heapAndGoroutines measures live heap (after a GC) and goroutines.
func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, runtime.NumGoroutine()
}

// TestS3Slow: with S3 slow, concurrent uploads wait for room in the
// upload memory budget instead of piling up memory; their goroutines do
// not grow while they wait, and when the clients give up everything is
// released. The figures are logged.
func TestS3Slow(t *testing.T) {
	const uploads, size = 8, 2*filestore.MinPartSize + 1
	const budget = 2 * filestore.MinPartSize
	e := newEnv(t, testdb.SQLite(t))
	e.srv.Close()
	e.serve(e.st, blobs.Options{UploadMemory: budget})
	store := e.useS3(t, testpeers.S3Options{}, nil)
	arts := make([]string, uploads)
	for i := range arts {
		arts[i] = e.declare(t, "f", generatedSum(uint64(i), size), size)
	}
	heap0, g0 := heapAndGoroutines()
	store.proxy.Set(testpeers.Fault{BytesPerSecond: 256 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range arts {
		wg.Go(func() {
			resp, err := e.put(ctx, arts[i], "f", generated(uint64(i), size), size)
			if err == nil {
				resp.Body.Close()
				t.Errorf("upload %d finished (%s) while S3 was slow", i, resp.Status)
			}
		})
	}
	// all requests in, two holding the budget and sending to S3
	for store.proxy.Relayed.Load() < 256<<10 {
		time.Sleep(10 * time.Millisecond)
	}
	var heapPeak uint64
	var gs []int
	for range 5 {
		time.Sleep(400 * time.Millisecond)
		h, g := heapAndGoroutines()
		heapPeak = max(heapPeak, h)
		gs = append(gs, g)
	}
	cancel()
	wg.Wait()
	store.proxy.Set(testpeers.Fault{})
	e.srv.CloseClientConnections()
	e.srv.Client().Transport.(*http.Transport).CloseIdleConnections()
	// the aborted uploads' aborts reach S3; then the S3 connections idle,
	// and closing them leaves what was there before
	be, err := e.blobs.Backend(context.Background(), store.fs.ID)
	e.must(err)
	deadline := time.Now().Add(10 * time.Second)
	var heap1 uint64
	var g1 int
	for {
		be.(io.Closer).Close()
		heap1, g1 = heapAndGoroutines()
		if g1 <= g0+2 && len(store.s3.Uploads(t, s3Prefix)) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d uploads of %d bytes, S3 at 256 KiB/s, upload budget %d bytes", uploads, size, budget)
	t.Logf("goroutines: before %d, while waiting %v, after %d", g0, gs, g1)
	t.Logf("live heap: before %.1f MiB, peak while waiting %.1f MiB, after %.1f MiB",
		float64(heap0)/(1<<20), float64(heapPeak)/(1<<20), float64(heap1)/(1<<20))
	if grow := int64(heapPeak) - int64(heap0); grow > budget+8<<20 {
		t.Errorf("heap grew by %d bytes while uploads waited: more than the budget of %d", grow, budget)
	}
	if gs[len(gs)-1] > gs[0]+4 {
		t.Errorf("goroutines grew while uploads waited: %v", gs)
	}
	if g1 > g0+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", g0, g1, buf[:runtime.Stack(buf, true)])
	}
	if u := store.s3.Uploads(t, s3Prefix); len(u) != 0 {
		t.Errorf("cancelled uploads left %v", u)
	}
	if o := store.s3.Objects(t, s3Prefix); len(o) != 0 {
		t.Errorf("cancelled uploads published %v", o)
	}
}

// TestBlobRaceTwoReplicas: two API servers on one PostgreSQL database.
// Replica B has written content X and waits to attach it (the test holds
// the lock of B's artifact row); meanwhile replica A fails an upload of X
// (its artifact is deleted under it) and deletes an artifact that held X.
// Both clean-ups must leave X alone: B then attaches it, and X downloads
// through both replicas.
func TestBlobRaceTwoReplicas(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, backend model.FileStoreBackend) {
		dsn := testdb.Postgres(t)
		a := newEnv(t, dsn)
		store := a.useStore(t, backend)
		b := a.replica(t, dsn, blobs.Options{})
		content := strings.Repeat("shared content\n", 1000)
		x := sum(content)
		art1, art2, art3 := a.declare(t, "x", x, int64(len(content))), a.declare(t, "x", x, int64(len(content))), a.declare(t, "x", x, int64(len(content)))
		a.doCT("PUT", art1+"files/x", adminSecret, "application/octet-stream", content).want(t, 201)

		// hold art2's row: B's attach will wait for it
		db, err := sql.Open("pgx", dsn)
		a.must(err)
		defer db.Close()
		lock, err := db.BeginTx(ctx, nil)
		a.must(err)
		defer lock.Rollback()
		art2ID := strings.TrimSuffix(strings.TrimPrefix(art2, "/api/1.0/artifacts/"), "/")
		if _, err := lock.ExecContext(ctx, "SELECT id FROM artifacts WHERE id = $1 FOR UPDATE", art2ID); err != nil {
			t.Fatal(err)
		}
		bDone := make(chan resp, 1)
		go func() {
			bDone <- b.doCT("PUT", art2+"files/x", adminSecret, "application/octet-stream", content)
		}()
		// B has written X when its attach waits for the row lock
		waitFor(t, func() bool {
			var n int
			db.QueryRowContext(ctx, "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'").Scan(&n)
			return n == 1
		})

		// A: an upload of X whose artifact is deleted before it attaches
		pr, pw := io.Pipe()
		aDone := make(chan *http.Response, 1)
		go func() {
			r, err := a.put(ctx, art3, "x", pr, int64(len(content)))
			if err != nil {
				t.Error(err)
			}
			aDone <- r
		}()
		pw.Write([]byte(content[:len(content)-1]))
		a.do("DELETE", art3, adminSecret, nil).want(t, 204)
		pw.Write([]byte(content[len(content)-1:]))
		pw.Close()
		if r := <-aDone; r.StatusCode != 404 {
			t.Fatalf("upload to a deleted artifact: %s", r.Status)
		}
		// A: the last artifact holding X goes
		a.do("DELETE", art1, adminSecret, nil).want(t, 204)

		if ok, err := backendExists(ctx, a, store, x); !ok || err != nil {
			t.Fatalf("a clean-up deleted the content B is attaching: %v", err)
		}
		a.must(lock.Commit())
		(<-bDone).want(t, 201)
		for _, r := range []*env{a, b} {
			if got := r.do("GET", art2+"files/x", adminSecret, nil).want(t, 200); string(got.body) != content {
				t.Fatal("downloaded content differs")
			}
		}
		if n := store.totalSize(t, a); n != int64(len(content)) {
			t.Fatalf("total_size %d", n)
		}
		var claims int
		db.QueryRowContext(ctx, "SELECT count(*) FROM blob_claims").Scan(&claims)
		if claims != 0 {
			t.Fatalf("%d claims left", claims)
		}
	})
}

func backendExists(ctx context.Context, e *env, s *storeUnderTest, sha string) (bool, error) {
	be, err := e.blobs.Backend(ctx, s.fs.ID)
	if err != nil {
		return false, err
	}
	return be.Exists(ctx, sha)
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
