package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/tasks"
)

type workRequestInput struct {
	TaskType     *model.TaskType  `json:"task_type"`
	TaskName     *string          `json:"task_name"`
	Workspace    *ref             `json:"workspace"`
	Data         *json.RawMessage `json:"task_data"`
	Priority     *int             `json:"priority"`
	Dependencies *[]int64         `json:"dependencies"`
	MaxRetries   *int             `json:"max_retries"`
}

// DefaultMaxRetries is how often a request is retried when its runner dies
// under it, unless the request says otherwise.
const DefaultMaxRetries = 3

// enumFilter accepts only the given values, so that ?status=runing is a
// 400 rather than an empty list.
func enumFilter(values ...string) filterFunc {
	return func(_ *call, param, v string) (string, error) {
		for _, ok := range values {
			if v == ok {
				return v, nil
			}
		}
		return "", invalidField(param, "%q must be one of %s, not %q", param, strings.Join(values, ", "), v)
	}
}

func enumStrings[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// workRequestRoutes: anyone reads the work requests of the workspaces they
// see; contributors and owners submit, abort and retry them. Submitting
// checks the task's data (package tasks), so that a mistake is a 400 now
// rather than a failure on a runner later. Priorities above 0 are for
// admins: otherwise everyone would jump the queue.
func (a *API) workRequestRoutes() []Route {
	res := &resource[model.WorkRequest, workRequestInput]{
		a: a, name: "work request", path: "work-requests", table: a.st.WorkRequests(),
		id: func(o *model.WorkRequest) int64 { return o.ID },
		filters: map[string]filterFunc{
			"workspace": workspaceFilter,
			"status":    enumFilter(enumStrings(model.Statuses)...),
			"task_type": enumFilter(enumStrings(model.TaskTypes)...),
			"task_name": textFilter,
			"result":    enumFilter("success", "failure", "error", "skipped"),
			"worker":    refFilter((*call).workerRef, func(w *model.Worker) int64 { return w.ID }),
			"parent":    idFilter,
		},
		read:    (*call).anyone,
		write:   (*call).requireUser,
		allow:   func(c *call, wr *model.WorkRequest) error { return c.contributorOf(wr.WorkspaceID) },
		create:  newWorkRequest,
		present: presentWorkRequest,
		insert: func(c *call, wr *model.WorkRequest) (int64, any, error) {
			if err := c.a.st.SubmitWorkRequest(c.ctx(), wr); err != nil {
				return 0, nil, err
			}
			presentWorkRequest(wr)
			return wr.ID, wr, nil
		},
	}
	var routes []Route
	for _, r := range res.routes() {
		// requests change through their lifecycle, not PATCH or DELETE
		if strings.HasPrefix(r.Pattern, "GET ") || strings.HasPrefix(r.Pattern, "POST ") {
			routes = append(routes, r)
		}
	}
	item := Prefix + "work-requests/{id}/"
	return append(routes,
		Route{"POST " + item + "abort/{$}", a.endpoint(func(c *call) error { return lifecycle(c, res, abortSpec) })},
		Route{"POST " + item + "retry/{$}", a.endpoint(func(c *call) error { return lifecycle(c, res, retrySpec) })},
		Route{"GET " + item + "logs/{$}", a.endpoint(func(c *call) error { return workRequestLog(c, res) })},
	)
}

func presentWorkRequest(wr *model.WorkRequest) {
	if wr.Dependencies == nil {
		wr.Dependencies = []int64{}
	}
}

func newWorkRequest(c *call, in *workRequestInput) (*model.WorkRequest, error) {
	ws, err := c.writableWorkspace(in.Workspace)
	if err != nil {
		return nil, err
	}
	switch {
	case in.TaskType == nil:
		return nil, required("task_type")
	case in.TaskName == nil:
		return nil, required("task_name")
	}
	creator := c.user().ID
	wr := &model.WorkRequest{TaskType: *in.TaskType, TaskName: *in.TaskName, WorkspaceID: ws.ID, CreatedBy: &creator,
		Data: emptyObject(), MaxRetries: DefaultMaxRetries, Dependencies: []int64{}}
	set(&wr.Data, in.Data)
	set(&wr.Priority, in.Priority)
	set(&wr.Dependencies, in.Dependencies)
	set(&wr.MaxRetries, in.MaxRetries)
	if wr.Priority > 0 && !c.isAdmin() {
		return nil, forbidden("only admins may give work requests a priority above 0")
	}
	if wr.MaxRetries < 0 || wr.MaxRetries > 100 {
		return nil, invalidField("max_retries", "%q must be from 0 to 100", "max_retries")
	}
	if err := tasks.Validate(wr); err != nil {
		var te *tasks.Error
		if errors.As(err, &te) {
			return nil, invalidField(te.Field, "%s", te.Message)
		}
		return nil, err
	}
	return wr, nil
}

type abortInput struct {
	Reason *string `json:"reason"`
}

type retryInput struct{}

var (
	abortSpec = specOf[abortInput, model.WorkRequest]()
	retrySpec = specOf[retryInput, model.WorkRequest]()
)

// lifecycle serves abort/ and retry/: POST with a JSON object body ({} or,
// for abort, {"reason": "..."}), by contributors and owners of the
// request's workspace; the answer is the request after the change.
func lifecycle(c *call, res *resource[model.WorkRequest, workRequestInput], spec *inputSpec) error {
	wr, err := res.target(c)
	if err != nil {
		return err
	}
	var out *model.WorkRequest
	if spec == abortSpec {
		var in abortInput
		if err := c.decode(spec, &in); err != nil {
			return err
		}
		reason := fmt.Sprintf("aborted by %s", c.user().Username)
		if in.Reason != nil && *in.Reason != "" {
			reason += ": " + *in.Reason
		}
		// its runner, if it runs, hears of it from the store's hook
		if out, err = c.a.st.AbortWorkRequest(c.ctx(), wr.ID, reason, c.viewer()); err != nil {
			return err
		}
	} else {
		var in retryInput
		if err := c.decode(spec, &in); err != nil {
			return err
		}
		if out, err = c.a.st.RetryWorkRequest(c.ctx(), wr.ID, c.viewer()); err != nil {
			return err
		}
	}
	presentWorkRequest(out)
	return c.reply(http.StatusOK, out)
}

// LogOffsetHeader carries, on a live log, the offset of its first byte in
// the whole log; a client following the log asks for ?offset=<offset +
// length> next.
const LogOffsetHeader = "X-Kiln-Log-Offset"

// LogSourceHeader says where a log came from: "live" while the request
// runs, "artifact" once its debug-logs artifact is stored.
const LogSourceHeader = "X-Kiln-Log-Source"

// workRequestLog answers the request's log as text: while it runs, what its
// runner has streamed so far, through whichever replica (?offset= skips
// what the client has); afterwards, the log artifact the runner uploaded.
func workRequestLog(c *call, res *resource[model.WorkRequest, workRequestInput]) error {
	if err := c.anyone(); err != nil {
		return err
	}
	var offset int64
	for k, vs := range c.r.URL.Query() {
		if k != "offset" || len(vs) != 1 {
			return invalidField(k, "unknown query parameter %q; logs take offset", k)
		}
		n, err := strconv.ParseInt(vs[0], 10, 64)
		if err != nil || n < 0 {
			return invalidField("offset", "offset must be a byte offset, not %q", vs[0])
		}
		offset = n
	}
	wr, err := res.get(c)
	if err != nil {
		return err
	}
	c.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	c.w.Header().Set("X-Content-Type-Options", "nosniff")
	c.w.Header().Set("Cache-Control", "no-store")
	live := func(data []byte, from int64) error {
		c.w.Header().Set(LogSourceHeader, "live")
		c.w.Header().Set(LogOffsetHeader, strconv.FormatInt(from, 10))
		c.w.WriteHeader(http.StatusOK)
		c.w.Write(data)
		return nil
	}
	// only runners stream logs (Worker and Signing tasks): a running
	// workflow, Wait or Server request has no live log to follow
	running := false
	if wt := model.WorkerTypeFor(wr.TaskType); wr.Status == model.StatusRunning && wt != "" && wt != model.WorkerServer {
		data, from, ok, err := c.a.st.ReadLiveLog(c.ctx(), wr.ID, offset, 0)
		if err != nil {
			return err
		}
		if ok && len(data) > 0 {
			return live(data, from)
		}
		// nothing new live: the log artifact, if the runner has uploaded
		// it already (it does just before its result), has the rest
		running = ok
	}
	// the newest log artifact: a retried request has one per attempt
	var logArt *model.Artifact
	q := store.Query{Limit: store.MaxPageSize, Filter: map[string]string{"work_request": strconv.FormatInt(wr.ID, 10), "category": tasks.DebugLogsCategory}}
	for {
		page, err := c.a.st.Artifacts().List(c.ctx(), q)
		if err != nil {
			return err
		}
		if len(page) > 0 {
			logArt = &page[len(page)-1]
		}
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].ID
	}
	uploaded := logArt != nil && slices.ContainsFunc(logArt.Files, func(f model.ArtifactFile) bool {
		return f.Path == tasks.LogFileName && f.Complete
	})
	if running && !uploaded {
		// nothing new yet, and no uploaded log: the live log as it is
		// (a declared log artifact is uploading; its bytes are live)
		return live(nil, offset)
	}
	if logArt == nil {
		return errorf(http.StatusNotFound, "", "work request %d has no log (it is %s; only command tasks write logs)", wr.ID, wr.Status)
	}
	f, storeID, err := c.a.st.FileLocation(c.ctx(), logArt.ID, tasks.LogFileName, nil)
	if err != nil {
		return err
	}
	rc, err := c.a.openBlob(c, storeID, f.SHA256)
	if err != nil {
		return err
	}
	defer rc.Close()
	c.w.Header().Set(LogSourceHeader, "artifact")
	c.w.Header().Set(LogOffsetHeader, strconv.FormatInt(min(offset, f.Size), 10))
	c.w.Header().Set("Content-Length", strconv.FormatInt(f.Size-min(offset, f.Size), 10))
	if offset > 0 {
		if rs, ok := rc.(io.Seeker); ok {
			_, err = rs.Seek(min(offset, f.Size), io.SeekStart)
		} else {
			_, err = io.CopyN(io.Discard, rc, min(offset, f.Size))
		}
		if err != nil {
			return err
		}
	}
	c.w.WriteHeader(http.StatusOK)
	io.Copy(c.w, rc)
	return nil
}
