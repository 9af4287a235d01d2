package tasks_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
)

// FuzzTaskData feeds task data (from a request's submitter, through the
// API) to the validation of every task: it never panics, and the output
// paths of a command it accepts all stay inside the task directory.
// Seeds: testdata/fuzz/FuzzTaskData.
func FuzzTaskData(f *testing.F) {
	for _, s := range []string{`{"host_architecture": "amd64", "script": "make", "timeout": "5m", "outputs": [{"path": "a/b.deb", "category": "debian:binary-package"}]}`,
		`{"script": "x", "outputs": [{"path": "../etc/passwd"}]}`, `{"script": "x", "env": {"A": "1"}, "timeout": 30}`,
		`{"delay": "1h"}`, `{"collection": 1, "artifact": 2}`, `{"script": "x", "timout": 3}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, wr := range []model.WorkRequest{
			{TaskType: model.TaskWorker, TaskName: tasks.Command, Data: data},
			{TaskType: model.TaskWait, TaskName: tasks.Delay, Data: data},
			{TaskType: model.TaskServer, TaskName: tasks.AddToCollection, Data: data},
		} {
			_ = tasks.Validate(&wr)
		}
		c, err := tasks.ParseCommand(json.RawMessage(data))
		if err != nil {
			return
		}
		for _, o := range c.Outputs {
			if !filepath.IsLocal(filepath.FromSlash(o.Path)) {
				t.Fatalf("accepted the output %q, outside the task directory", o.Path)
			}
		}
	})
}
