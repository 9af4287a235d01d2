package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

func sum(b string) string {
	h := sha256.Sum256([]byte(b))
	return hex.EncodeToString(h[:])
}

func TestArtifactUploadDownloadDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend model.FileStoreBackend) {
		testdb.Each(t, func(t *testing.T, dsn string) {
			e := newEnv(t, dsn)
			store := e.useStore(t, backend)
			content := "hello artifact\n"
			body := fmt.Sprintf(`{"category": "test:output", "workspace": "debian/priv", "data": {"k": 1},
			"files": [{"path": "out/hello.txt", "sha256": %q, "size": %d}]}`, sum(content), len(content))
			e.do("POST", "/api/1.0/artifacts/", e.tok["bob"], body).wantProblem(t, 400, "workspace")
			art := e.do("POST", "/api/1.0/artifacts/", e.tok["alice"], body).want(t, 201).obj(t)
			files := "/api/1.0/artifacts/" + itoa(id(art)) + "/files/"
			if f := art["files"].([]any)[0].(map[string]any); f["complete"] != false {
				t.Fatalf("new file is complete: %v", f)
			}
			e.do("GET", files+"out/hello.txt", e.tok["alice"], nil).wantProblem(t, 409, "path")

			// a body that is not what was declared: 400, nothing stored
			e.doCT("PUT", files+"out/hello.txt", e.tok["alice"], "application/octet-stream", "hello ARTIFACT\n").wantProblem(t, 400, "sha256")
			e.doCT("PUT", files+"out/hello.txt", e.tok["alice"], "application/octet-stream", "short").wantProblem(t, 400, "size")
			e.doCT("PUT", files+"nope.txt", e.tok["alice"], "application/octet-stream", content).wantProblem(t, 404, "path")
			e.doCT("PUT", files+"out/hello.txt", e.tok["bob"], "application/octet-stream", content).wantProblem(t, 404, "")
			if n := store.stored(t); n != 0 {
				t.Fatalf("refused uploads left %d files", n)
			}
			// the real thing, then a retry
			up := e.doCT("PUT", files+"out/hello.txt", e.tok["alice"], "application/octet-stream", content).want(t, 201).obj(t)
			if f := up["files"].([]any)[0].(map[string]any); f["complete"] != true {
				t.Fatalf("uploaded file is not complete: %v", up)
			}
			e.doCT("PUT", files+"out/hello.txt", e.tok["alice"], "application/octet-stream", content).want(t, 200)

			// download: anyone who sees the workspace
			got := e.do("GET", files+"out/hello.txt", e.tok["alice"], nil).want(t, 200)
			if string(got.body) != content || got.header.Get("ETag") != `"`+sum(content)+`"` ||
				!strings.HasPrefix(got.header.Get("Content-Type"), "text/plain") {
				t.Fatalf("download: %q %v", got.body, got.header)
			}
			e.do("GET", files+"out/hello.txt", e.tok["bob"], nil).wantProblem(t, 404, "")
			e.do("GET", files+"missing.txt", e.tok["alice"], nil).wantProblem(t, 404, "path")

			// a second artifact with the same content shares it
			art2 := e.do("POST", "/api/1.0/artifacts/", e.tok["alice"], body).want(t, 201).obj(t)
			e.doCT("PUT", "/api/1.0/artifacts/"+itoa(id(art2))+"/files/out/hello.txt", e.tok["alice"], "application/octet-stream", content).want(t, 201)
			if n := store.totalSize(t, e); n != int64(len(content)) {
				t.Fatalf("shared content counted twice: total_size %d", n)
			}

			list, _ := e.do("GET", "/api/1.0/artifacts/?category=test:output&workspace=debian/priv", e.tok["alice"], nil).want(t, 200).list(t)
			if len(list) != 2 {
				t.Fatalf("list: %v", ids(list))
			}
			// deleting releases content only when no artifact uses it any more
			e.do("DELETE", "/api/1.0/artifacts/"+itoa(id(art))+"/", e.tok["alice"], nil).want(t, 204)
			if n := store.stored(t); n != 1 {
				t.Fatalf("content still used was deleted (%d files)", n)
			}
			e.do("DELETE", "/api/1.0/artifacts/"+itoa(id(art2))+"/", e.tok["alice"], nil).want(t, 204)
			if n := store.stored(t); n != 0 {
				t.Fatalf("released content stays in the store (%d files)", n)
			}
			if n := store.totalSize(t, e); n != 0 {
				t.Fatalf("total_size %d after deleting everything", n)
			}
		})
	})
}

// TestFileStoreFull is "done when" 4: a store at its max_size refuses the
// next upload with a clear error, writes nothing, and total_size stays
// exact.
func TestFileStoreFull(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend model.FileStoreBackend) {
		testdb.Each(t, func(t *testing.T, dsn string) {
			e := newEnv(t, dsn)
			store := e.useStore(t, backend)
			e.do("PATCH", "/api/1.0/file-stores/"+itoa(store.fs.ID)+"/", adminSecret, `{"max_size": 100}`).want(t, 200)

			upload := func(content string) resp {
				body := fmt.Sprintf(`{"category": "test:x", "workspace": "debian/pub", "files": [{"path": "f", "sha256": %q, "size": %d}]}`,
					sum(content), len(content))
				art := e.do("POST", "/api/1.0/artifacts/", adminSecret, body).want(t, 201).obj(t)
				return e.doCT("PUT", "/api/1.0/artifacts/"+itoa(id(art))+"/files/f", adminSecret, "application/octet-stream", content)
			}
			upload(strings.Repeat("a", 60)).want(t, 201)
			upload(strings.Repeat("b", 40)).want(t, 201) // exactly full
			p := upload("c").wantProblem(t, 409, "size")
			if !strings.Contains(p.Detail, "full") || !strings.Contains(p.Detail, "100") {
				t.Fatalf("unclear error: %q", p.Detail)
			}
			// content already stored costs nothing and still fits
			upload(strings.Repeat("a", 60)).want(t, 201)
			if n := store.totalSize(t, e); n != 100 {
				t.Fatalf("total_size %d, want 100", n)
			}
			if n := store.stored(t); n != 2 {
				t.Fatalf("%d files in the store, want 2", n)
			}
		})
	})
}

func TestRunnerArtifacts(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, backend model.FileStoreBackend) {
		testdb.Each(t, func(t *testing.T, dsn string) {
			e := newEnv(t, dsn)
			e.useStore(t, backend)
			w, err := e.st.Workers().Get(ctx, e.ids["worker"], nil)
			e.must(err)
			_, _, err = e.st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64"}, Backends: []string{"host"}})
			e.must(err)
			wr, err := e.st.ClaimWorkRequest(ctx, w.ID) // the fixture request in the private workspace
			e.must(err)
			content := "log\n"
			body := func(wrID int64) string {
				return fmt.Sprintf(`{"category": "kiln:work-request-debug-logs", "created_by_work_request": %d,
				"files": [{"path": "cmd-output.log", "sha256": %q, "size": %d}]}`, wrID, sum(content), len(content))
			}
			// while it runs, its log is what the runner streamed (through
			// whichever replica); once nothing is new, the uploaded log
			// artifact has the rest, and until it is uploaded the answer
			// is the live log as it is
			logs := "/api/1.0/work-requests/" + itoa(wr.ID) + "/logs/"
			liveAt := func(offset int, want string) {
				t.Helper()
				r := e.do("GET", logs+"?offset="+strconv.Itoa(offset), e.tok["alice"], nil).want(t, 200)
				if string(r.body) != want || r.header.Get("X-Kiln-Log-Source") != "live" || r.header.Get("X-Kiln-Log-Offset") != strconv.Itoa(offset) {
					t.Fatalf("live log from %d: %q %v, want %q", offset, r.body, r.header, want)
				}
			}
			liveAt(0, "")
			e.must(e.st.AppendLiveLog(ctx, wr.ID, wr.Retries, 0, []byte("lo")))
			liveAt(0, "lo")
			liveAt(2, "")
			art := e.do("POST", "/api/1.0/artifacts/", e.tok["worker"], body(wr.ID)).want(t, 201).obj(t)
			if art["workspace"] != float64(e.ids["priv"]) || art["created_by_work_request"] != float64(wr.ID) {
				t.Fatalf("runner artifact: %v", art)
			}
			liveAt(2, "") // declared, not uploaded yet
			e.doCT("PUT", "/api/1.0/artifacts/"+itoa(id(art))+"/files/cmd-output.log", e.tok["worker"], "text/plain", content).want(t, 201)
			if r := e.do("GET", logs+"?offset=2", e.tok["alice"], nil).want(t, 200); string(r.body) != "g\n" || r.header.Get("X-Kiln-Log-Source") != "artifact" {
				t.Fatalf("after the upload, still running: %q %v", r.body, r.header)
			}
			// not for a request it does not run
			e.do("POST", "/api/1.0/artifacts/", e.tok["worker"], body(wr.ID+1000)).wantProblem(t, 403, "")
			_, err = e.st.CompleteWorkRequest(ctx, wr.ID, w.ID, store.Completion{Result: model.ResultSuccess})
			e.must(err)
			e.do("POST", "/api/1.0/artifacts/", e.tok["worker"], body(wr.ID)).wantProblem(t, 403, "")
			// the log of the finished request is readable
			log := e.do("GET", "/api/1.0/work-requests/"+itoa(wr.ID)+"/logs/", e.tok["alice"], nil).want(t, 200)
			if string(log.body) != content || log.header.Get("X-Kiln-Log-Source") != "artifact" {
				t.Fatalf("log: %q %v", log.body, log.header)
			}
			if tail := e.do("GET", "/api/1.0/work-requests/"+itoa(wr.ID)+"/logs/?offset=2", e.tok["alice"], nil).want(t, 200); string(tail.body) != "g\n" {
				t.Fatalf("log from offset 2: %q", tail.body)
			}
		})
	})
}
