package runner_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testdb"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// RequestsEnv sizes TestE2EReplicas: the number of command requests it
// submits (300 by default, what .ci/run runs; more for a manual run).
const RequestsEnv = "KILN_E2E_REPLICAS_REQUESTS"

// TestE2EReplicas is issue 11's "done when" for replicas: three `kiln
// server` processes on one PostgreSQL database, their file store a bucket
// of an S3 server process, six runners each behind a load balancer that
// prefers one replica (two per replica: one that runs a task at a time,
// one that runs two at once) and falls back to the others.
// Command requests with an output each are submitted through all three
// replicas; a running task's log is followed through a replica other than
// its runner's; a third of the way through, one replica is killed with
// SIGKILL, and its runners carry on through the others. In the end every
// request has run exactly once and succeeded, every artifact file
// downloads with the right sha256 through each surviving replica, and
// `kiln metrics recount` finds the running totals right.
func TestE2EReplicas(t *testing.T) {
	requests := 300
	if v := os.Getenv(RequestsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			t.Fatalf("%s=%q: want a number of requests, at least 10", RequestsEnv, v)
		}
		requests = n
	}
	dsn := testdb.Postgres(t)
	s3 := testpeers.StartS3(t, testpeers.S3Options{})
	secrets := []string{"KILN_S3_ACCESS_KEY_ID=" + s3.Key.ID, "KILN_S3_SECRET_ACCESS_KEY=" + s3.Key.Secret}
	var replicas []*server
	for i := range 3 {
		// the first migrates and bootstraps the database; the others find
		// it ready
		replicas = append(replicas, startReplica(t, fmt.Sprintf("replica-%d", i+1), dsn, secrets))
	}
	first := replicas[0]
	ws := first.setup(t)
	first.call(t, "POST", "/api/1.0/file-stores/", map[string]any{"name": "objects", "backend": "S3", "default": true,
		"configuration": map[string]any{"endpoint": s3.Endpoint, "bucket": s3.Bucket, "region": s3.Region, "prefix": "kiln/"}}, 201, nil)

	// runner i prefers replica i mod 3; the odd ones run two tasks at
	// once, so that each replica serves runners of both kinds (the killed
	// one's: runner-2, one at a time, and runner-5, two)
	const runners = 6
	for i := range runners {
		order := []*server{replicas[i%3], replicas[(i+1)%3], replicas[(i+2)%3]}
		lb := newBalancer(t, order)
		name := fmt.Sprintf("runner-%d", i)
		token := first.workerToken(t, name)
		start(t, name, env("KILN_TOKEN="+token), nil, "runner", "--server", lb.url, "--name", name,
			"--work-dir", filepath.Join(t.TempDir(), name), "--architectures", "amd64", "--host-architecture", "amd64",
			"--max-backoff", "500ms", "--concurrent", strconv.Itoa(1+i%2))
	}
	waitFor(t, 30*time.Second, "six connected runners", func() bool { return connectedRunners(t, first) == runners })

	// a task's log, followed through a replica its runner is not
	// connected to while the task runs
	follow := first.submit(t, map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws,
		"task_data": map[string]any{"host_architecture": "amd64", "backend": "host",
			"script": "for i in $(seq 1 15); do echo \"line $i\"; sleep 0.2; done"}})
	waitFor(t, 30*time.Second, "the followed request to start", func() bool { return first.get(t, follow.ID).Status == "running" })
	var runnerIndex int
	fmt.Sscanf(first.workers(t)[*first.get(t, follow.ID).Worker], "runner-%d", &runnerIndex)
	through := replicas[(runnerIndex+1)%3]
	seen := followLog(t, through, follow.ID)
	if len(seen) < 3 {
		t.Fatalf("following request %d through %s (its runner is on %s) saw the log grow %d times while it ran, want several: %q",
			follow.ID, through.name, replicas[runnerIndex%3].name, len(seen), seen)
	}
	t.Logf("followed request %d through %s while its runner streamed to %s: %d reads that grew the log", follow.ID, through.name,
		replicas[runnerIndex%3].name, len(seen))

	// the requests: each leaves one marker per run and outputs a file of
	// its own, submitted through the replicas in turn
	marks := t.TempDir()
	want := map[int64]string{} // request → sha256 of its output
	started := time.Now()
	for i := range requests {
		content := fmt.Sprintf("output of request %d of the replicas test\n%s\n", i, strings.Repeat(strconv.Itoa(i), 1+i%200))
		sum := sha256.Sum256([]byte(content))
		script := fmt.Sprintf("touch %s/$KILN_WORK_REQUEST.$$.$(date +%%s%%N)\nprintf '%%s' '%s' > out.txt\nsleep 0.1\necho done",
			marks, content)
		wr := replicas[i%3].submit(t, map[string]any{"task_type": "Worker", "task_name": "command", "workspace": ws,
			"task_data": map[string]any{"host_architecture": "amd64", "backend": "host", "script": script,
				"outputs": []map[string]any{{"path": "out.txt", "category": "test:output"}}}})
		want[wr.ID] = hex.EncodeToString(sum[:])
	}
	t.Logf("submitted %d requests in %s", requests, time.Since(started).Round(time.Millisecond))

	// a third of the way through, replica 3 dies
	victim := replicas[2]
	waitFor(t, 120*time.Second, "a third of the requests to start", func() bool { return countMarks(t, marks) >= requests/3 })
	victim.kill()
	killed := time.Now()
	t.Logf("killed %s after %s, %d requests started", victim.name, time.Since(started).Round(time.Millisecond), countMarks(t, marks))
	survivors := replicas[:2]

	ids := make([]int64, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	done := first.waitFinished(t, 180*time.Second, ids...)
	t.Logf("all %d requests finished %s after the first was submitted", requests, time.Since(started).Round(time.Millisecond))

	runs := map[int64]int{}
	entries, err := os.ReadDir(marks)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		id, err := strconv.ParseInt(strings.SplitN(e.Name(), ".", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("marker %q", e.Name())
		}
		runs[id]++
	}
	requeued := 0
	for _, id := range ids {
		wr := done[id]
		if wr.Status != "completed" || wr.Result != "success" {
			t.Errorf("request %d ended %s/%s: %s", id, wr.Status, wr.Result, wr.Output)
		}
		if runs[id] != 1 {
			t.Errorf("request %d ran %d times, want exactly once", id, runs[id])
		}
		requeued += wr.Retries
	}
	// A request may have been requeued without running twice: the
	// killed replica may have claimed it for a runner and died before
	// sending the task, and the runner, idle, gave it back when it came
	// back. What ran, ran once (the markers above).
	t.Logf("%d requests were requeued on the way", requeued)
	// the killed replica's runners (runner-2 and runner-5) carried on
	// through the others: some of their requests started before the kill
	// and ended after it, kept across the reconnection, and they took
	// more afterwards
	names := first.workers(t)
	kept, after := 0, 0
	for _, id := range ids {
		wr := done[id]
		if wr.Worker == nil || (names[*wr.Worker] != "runner-2" && names[*wr.Worker] != "runner-5") {
			continue
		}
		switch {
		case wr.StartedAt.Before(killed) && wr.FinishedAt.After(killed):
			kept++
		case wr.StartedAt.After(killed):
			after++
		}
	}
	t.Logf("the killed replica's runners: %d requests kept across the kill, %d taken after it", kept, after)
	if after == 0 {
		t.Error("the killed replica's runners took no work after it died")
	}
	if t.Failed() {
		t.FailNow()
	}

	// every file of every artifact of the requests, through each
	// surviving replica: outputs against the content the script wrote,
	// logs against the sha256 the runner declared
	files := artifactFiles(t, first, ids)
	checked := 0
	for _, f := range files {
		if !f.complete {
			t.Errorf("artifact %d (%s, request %d): file %s was never uploaded", f.artifact, f.category, f.request, f.path)
			continue
		}
		sha := f.sha256
		if f.category == "test:output" {
			if sha != want[f.request] {
				t.Errorf("artifact %d of request %d declares sha256 %s, want %s", f.artifact, f.request, sha, want[f.request])
			}
		}
		for _, r := range survivors {
			var body []byte
			r.call(t, "GET", fmt.Sprintf("/api/1.0/artifacts/%d/files/%s", f.artifact, f.path), nil, 200, &body)
			got := sha256.Sum256(body)
			if hex.EncodeToString(got[:]) != sha {
				t.Errorf("artifact %d file %s through %s: sha256 %x, want %s", f.artifact, f.path, r.name, got, sha)
			}
			checked++
		}
	}
	outputs := 0
	for _, f := range files {
		if f.category == "test:output" {
			outputs++
		}
	}
	if outputs != requests {
		t.Errorf("%d output files for %d requests", outputs, requests)
	}
	t.Logf("downloaded %d files through the %d surviving replicas, each with its sha256", checked, len(survivors))

	out, err := exec.Command(kilnBin, "metrics", "recount", "--database", dsn).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "agree with the recount") {
		t.Errorf("kiln metrics recount: %v\n%s", err, out)
	}
}

// startReplica starts a server on the shared database, with the S3 keys
// in its environment as an operator would give them, and a short
// heartbeat timeout.
func startReplica(t *testing.T, name, dsn string, secrets []string) *server {
	t.Helper()
	return launchServer(t, name, env(append([]string{"KILN_BOOTSTRAP_TOKEN=" + adminToken}, secrets...)...),
		"--database", dsn, "--heartbeat-timeout", "10s")
}

// connectedRunners counts the external workers marked connected.
func connectedRunners(t *testing.T, s *server) int {
	var page struct {
		Results []struct {
			ConnectedAt *time.Time `json:"connected_at"`
		} `json:"results"`
	}
	s.call(t, "GET", "/api/1.0/workers/?worker_type=external&limit=1000", nil, 200, &page)
	n := 0
	for _, w := range page.Results {
		if w.ConnectedAt != nil {
			n++
		}
	}
	return n
}

// followLog reads request id's log through s as `kiln work logs --follow`
// does, from where the last read ended, until the request finishes; it
// returns the reads that brought something new from the live log while
// the request ran.
func followLog(t *testing.T, s *server, id int64) []string {
	t.Helper()
	var grew []string
	offset := 0
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		status := s.get(t, id).Status
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/1.0/work-requests/%d/logs/?offset=%d", s.url, id, offset), nil)
		req.Header.Set("Authorization", "Token "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("log of %d through %s: %d %s", id, s.name, resp.StatusCode, b)
		}
		if len(b) > 0 && status == "running" && resp.Header.Get("X-Kiln-Log-Source") == "live" {
			grew = append(grew, string(b))
		}
		offset += len(b)
		if status == "completed" || status == "aborted" {
			return grew
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("request %d did not finish", id)
	return nil
}

func countMarks(t *testing.T, dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// artifactFile is a file of an artifact of one of the test's requests.
type artifactFile struct {
	artifact, request int64
	category, path    string
	sha256            string
	complete          bool
}

// artifactFiles lists every file of the artifacts the requests made.
func artifactFiles(t *testing.T, s *server, ids []int64) []artifactFile {
	t.Helper()
	ours := map[int64]bool{}
	for _, id := range ids {
		ours[id] = true
	}
	var out []artifactFile
	after := int64(0)
	for {
		var page struct {
			Results []struct {
				ID          int64  `json:"id"`
				Category    string `json:"category"`
				WorkRequest *int64 `json:"created_by_work_request"`
				Files       []struct {
					Path     string `json:"path"`
					SHA256   string `json:"sha256"`
					Complete bool   `json:"complete"`
				} `json:"files"`
			} `json:"results"`
		}
		s.call(t, "GET", fmt.Sprintf("/api/1.0/artifacts/?limit=1000&after=%d", after), nil, 200, &page)
		for _, a := range page.Results {
			after = a.ID
			if a.WorkRequest == nil || !ours[*a.WorkRequest] {
				continue
			}
			for _, f := range a.Files {
				out = append(out, artifactFile{artifact: a.ID, request: *a.WorkRequest, category: a.Category,
					path: f.Path, sha256: f.SHA256, complete: f.Complete})
			}
		}
		if len(page.Results) < 1000 {
			return out
		}
	}
}

// balancer is a TCP load balancer in front of the replicas, as an
// operator runs one: each connection goes to the first replica, in its
// order, that accepts it; when a replica dies its connections close and
// the clients' next ones go to the next.
type balancer struct {
	url string
}

func newBalancer(t *testing.T, order []*server) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var backends []string
	for _, s := range order {
		backends = append(backends, strings.TrimPrefix(s.url, "http://"))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer client.Close()
				var backend net.Conn
				for _, b := range backends {
					if backend, err = net.DialTimeout("tcp", b, time.Second); err == nil {
						break
					}
				}
				if backend == nil {
					return
				}
				defer backend.Close()
				track(client, true)
				track(backend, true)
				defer track(client, false)
				defer track(backend, false)
				done := make(chan struct{}, 2)
				go func() { io.Copy(backend, client); done <- struct{}{} }()
				go func() { io.Copy(client, backend); done <- struct{}{} }()
				<-done // either side ended: end both
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &balancer{url: "http://" + ln.Addr().String()}
}
