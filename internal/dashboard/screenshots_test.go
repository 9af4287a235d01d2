package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's screenshots of the dashboard to docs/")

// screenshots are the pages the README shows, by file name in docs/.
var screenshots = []struct{ file, path string }{
	{"dashboard-overview.png", "/"},
	{"dashboard-work-request.png", "/work-requests/{shown}/"},
	{"dashboard-statistics.png", "/statistics/"},
}

// TestScreenshots takes the README's screenshots of a farm with a week of
// varied work and two worker pools, in Chromium: each page renders to a PNG of the browser's
// width. With -update-screenshots they replace the files in docs/, which
// must exist either way (the README shows them).
func TestScreenshots(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	f.seedPools()
	shown := f.week()
	tb := newTab(t)
	for _, s := range screenshots {
		path := f.srv.URL + fillShown(s.path, shown)
		tb.open(path, 200)
		if s.file == "dashboard-work-request.png" {
			tb.waitFor("the log", `document.getElementById("log-state").textContent.startsWith("The whole log")`)
		}
		shot := run(tb, "screenshot "+s.file, chromedp.FullScreenshot(100))
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("%s: %v", s.file, err)
		}
		if w := img.Bounds().Dx(); w != 1280 {
			t.Fatalf("%s is %d pixels wide", s.file, w)
		}
		file := filepath.Join("..", "..", "docs", s.file)
		if *updateScreenshots {
			if err := os.WriteFile(file, shot, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(file); err != nil {
			t.Errorf("the README shows %s: %v (go test ./internal/dashboard -run TestScreenshots -update-screenshots)", file, err)
		}
	}
}

func fillShown(p string, id int64) string {
	return placeholder.ReplaceAllString(p, itoa(id))
}

// week adds to the farm a week of work in workspace main: a few hundred
// runs of four tasks with varied outcomes, waits and run times, then a
// last sbuild with a log and a package, whose id it returns.
func (f *farm) week() int64 {
	f.t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(7))
	w := &model.Worker{Name: "amd64-builder-1", WorkerType: model.WorkerExternal, Enabled: true}
	f.must(f.st.Workers().Create(ctx, w))
	_, _, err := f.st.ConnectWorker(ctx, w.ID, model.WorkerMetadata{Architectures: []string{"amd64", "i386"}, HostArchitecture: "amd64",
		Backends: []string{"host", "unshare"}, CPUCount: 16, Version: "1.4.0"})
	f.must(err)
	end := f.now
	f.now = end.AddDate(0, 0, -6)
	tasksOf := []struct {
		name   string
		ran    time.Duration
		failOf int
	}{{"sbuild", 12 * time.Minute, 6}, {"lintian", 90 * time.Second, 12}, {"autopkgtest", 25 * time.Minute, 4}, {"piuparts", 4 * time.Minute, 9}}
	var last int64
	step := end.Sub(f.now) / 320
	for i := 0; f.now.Before(end.Add(-time.Hour)); i++ {
		task := tasksOf[rng.Intn(len(tasksOf))]
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: task.name, WorkspaceID: f.ids["pub"],
			Data: json.RawMessage(`{"host_architecture": "amd64", "backend": "unshare"}`)}
		f.must(f.st.SubmitWorkRequest(ctx, wr))
		f.now = f.now.Add(time.Duration(rng.ExpFloat64() * float64(40*time.Second)))
		got, err := f.st.ClaimWorkRequest(ctx, w.ID)
		f.must(err)
		ran := time.Duration(float64(task.ran) * (0.4 + rng.Float64()*1.4))
		result := model.ResultSuccess
		switch rng.Intn(task.failOf) {
		case 0:
			result = model.ResultFailure
		case 1:
			if rng.Intn(3) == 0 {
				result = model.ResultError
			}
		}
		f.now = f.now.Add(ran)
		_, err = f.st.CompleteWorkRequest(ctx, got.ID, w.ID, store.Completion{Result: result,
			Statistics: &model.RuntimeStatistics{Duration: ran.Seconds(), CPUTime: ran.Seconds() * 3.1, Memory: 1 << 30, DiskSpace: 3 << 30}})
		f.must(err)
		if task.name == "sbuild" {
			last = got.ID
		}
		f.now = f.now.Add(step)
	}
	f.now = end
	f.upload("pub", tasks.DebugLogsCategory, last, tasks.LogFileName,
		"kiln: work request "+itoa(last)+": command on backend unshare, timeout 1h0m0s\n"+
			"dpkg-buildpackage -us -uc -b\ndh binary\n   dh_auto_build\n   dh_auto_test\nPASS: 214 tests\n"+
			"dpkg-deb: building package 'hello' in '../hello_2.10-3_amd64.deb'.\nkiln: the script succeeded\n")
	f.upload("pub", "debian:binary-package", last, "hello_2.10-3_amd64.deb", fmt.Sprintf("%0512d", 0))
	return last
}
