package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/config"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/tasks"
)

// start runs a work request in the background, beside the others the
// runner holds: its working directory, log and process group are its own
// (execute).
func (r *Runner) start(wr model.WorkRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{wr: wr, cancel: cancel, logPath: filepath.Join(r.cfg.WorkDir, "logs", strconv.FormatInt(wr.ID, 10)+".log"),
		stage: StagePreparing, stageSince: time.Now()}
	r.metrics.jobReceived(&wr, time.Now())
	r.mu.Lock()
	r.jobs[wr.ID] = j
	hook := r.stageHook
	r.mu.Unlock()
	if hook != nil {
		hook(StagePreparing, StateRunning)
	}
	r.log.Info("running work request", "work_request", wr.ID, "task", wr.TaskName)
	go r.run(ctx, j)
}

// run executes the job and records its result for the session to send.
func (r *Runner) run(ctx context.Context, j *job) {
	defer j.cancel()
	out := r.execute(ctx, j)
	output, _ := json.Marshal(out.Output)
	stats := out.Statistics
	res := protocol.Result{WorkRequest: j.wr.ID, Result: out.Result, Statistics: &stats, Output: output}
	r.mu.Lock()
	j.result, j.finished = res, true
	release, dropped := j.release, j.dropped
	r.mu.Unlock()
	result, reason := string(out.Result), failureOf(out)
	switch {
	case dropped:
		result, reason = resultCancelled, tasks.FailureCanceled
	case release:
		result, reason = resultHandedBack, ""
	}
	r.metrics.jobDone(j.wr.TaskName, result, reason, stats.Duration)
	r.setStage(j, StageFinishing)
	switch {
	case dropped:
		r.log.Info("work request stopped", "work_request", j.wr.ID)
	case release:
		r.log.Info("work request interrupted; handing it back", "work_request", j.wr.ID)
	default:
		r.log.Info("work request finished", "work_request", j.wr.ID, "result", out.Result,
			"duration", time.Duration(stats.Duration*float64(time.Second)).Round(time.Millisecond).String())
	}
	r.wake()
}

// execute runs the task in a fresh working directory and, unless the
// request was taken away, uploads its log. The directory and the log are
// made when the task asks for them (tasks.Env.Prepare): a noop makes
// neither.
func (r *Runner) execute(ctx context.Context, j *job) tasks.Outcome {
	dir := filepath.Join(r.cfg.WorkDir, "tasks", strconv.FormatInt(j.wr.ID, 10))
	env := &tasks.Env{
		Dir: dir, Backends: r.meta.Backends, BaseEnv: baseEnv(),
		Guard: r.cfg.TaskGuard, Cgroups: r.cgroups,
		Record: filepath.Join(r.cfg.WorkDir, "procs", strconv.FormatInt(j.wr.ID, 10)),
		Upload: func(ctx context.Context, u tasks.Upload) (int64, error) {
			r.setStage(j, StageUploadingArtifacts) // outputs go up once the script is done
			return r.upload(ctx, j.wr.ID, u.Category, u.Data, u.Name, u.Open)
		},
		Prepare: func() (*os.File, error) {
			os.RemoveAll(dir) // left by an earlier attempt at this request
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("cannot create the working directory: %w", err)
			}
			f, err := os.OpenFile(j.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
			if err != nil {
				os.RemoveAll(dir)
				return nil, fmt.Errorf("cannot create the log: %w", err)
			}
			return f, nil
		},
	}
	defer func() {
		if env.Log == nil {
			return // nothing was made
		}
		// the task killed what it started (tasks.RunWorker)
		os.RemoveAll(dir)
		os.Remove(j.logPath)
	}()
	r.setStage(j, StageRunningScript)
	out := tasks.RunWorker(ctx, &j.wr, env)
	if env.Log == nil {
		return out
	}
	env.Log.Close()
	r.mu.Lock()
	skip := j.release || j.dropped
	r.mu.Unlock()
	if info, err := os.Stat(j.logPath); err == nil && info.Size() > 0 && !skip {
		r.setStage(j, StageUploadingArtifacts)
		// the log goes up even when the task failed: that is when it is read
		uctx, cancel := context.WithTimeout(r.hard, 5*time.Minute)
		openLog := func() (*os.File, error) { return os.Open(j.logPath) }
		id, err := r.upload(uctx, j.wr.ID, tasks.DebugLogsCategory, nil, tasks.LogFileName, openLog)
		cancel()
		if err != nil {
			r.log.Warn("uploading the log failed", "work_request", j.wr.ID, "error", err)
		} else {
			if out.Output == nil {
				out.Output = map[string]any{}
			}
			out.Output["log_artifact"] = id
		}
	}
	return out
}

// failureOf is why a task that did not succeed failed: what the task
// says, or, when it says nothing, the runner's fault for an error and the
// script's for a failure.
func failureOf(out tasks.Outcome) tasks.Failure {
	switch {
	case out.Result == model.ResultSuccess || out.Result == model.ResultSkipped:
		return ""
	case out.Failure != "":
		return out.Failure
	case out.Result == model.ResultFailure:
		return tasks.FailureScript
	}
	return tasks.FailureSystem
}

// baseEnv is the environment scripts start from: the runner's own minus
// its secrets (KILN_TOKEN and whatever the runner was configured with).
func baseEnv() []string { return config.WithoutKilnSettings(os.Environ()) }

// upload stores a file as a new artifact of the running request:
// declare it (category, name, sha256, size), then stream its bytes.
// Transient failures (network, 5xx) are retried; the server answers a
// retried upload of complete content with 200.
func (r *Runner) upload(ctx context.Context, wrID int64, category string, data json.RawMessage, name string, open func() (*os.File, error)) (int64, error) {
	sha, size, err := tasks.FileSHA256(open)
	if err != nil {
		return 0, err
	}
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	decl, _ := json.Marshal(map[string]any{
		"category": category, "data": data, "created_by_work_request": wrID,
		"files": []map[string]any{{"path": name, "sha256": sha, "size": size}},
	})
	var art struct {
		ID int64 `json:"id"`
	}
	err = r.retry(ctx, func() error {
		resp, err := r.request(withEndpoint(ctx, endpointCreateArtifact), http.MethodPost, "/api/1.0/artifacts/", "application/json", bytes.NewReader(decl), int64(len(decl)))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return statusError(resp)
		}
		return json.NewDecoder(resp.Body).Decode(&art)
	})
	if err != nil {
		return 0, fmt.Errorf("declaring artifact %s: %w", name, err)
	}
	segs := strings.Split(name, "/")
	for i := range segs {
		segs[i] = url.PathEscape(segs[i])
	}
	target := "/api/1.0/artifacts/" + strconv.FormatInt(art.ID, 10) + "/files/" + strings.Join(segs, "/")
	err = r.retry(ctx, func() error {
		f, err := open()
		if err != nil {
			return permanent{err}
		}
		defer f.Close()
		resp, err := r.request(withEndpoint(ctx, endpointUploadFile), http.MethodPut, target, "application/octet-stream", f, size)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return statusError(resp)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("uploading %s: %w", name, err)
	}
	return art.ID, nil
}

func (r *Runner) request(ctx context.Context, method, path, contentType string, body interface {
	Read([]byte) (int, error)
}, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(r.cfg.Server, "/")+path, body)
	if err != nil {
		return nil, permanent{err}
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Token "+r.token)
	return r.http.Do(req)
}

// permanent marks errors that retrying cannot fix.
type permanent struct{ error }

// Unwrap returns the underlying error.
func (p permanent) Unwrap() error { return p.error }

// statusError turns a refused request into an error; 4xx are permanent.
func statusError(resp *http.Response) error {
	err := fmt.Errorf("%s", problemDetail(resp))
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return permanent{err}
	}
	return err
}

// retry runs fn up to five times with growing pauses while it fails with a
// transient error.
func (r *Runner) retry(ctx context.Context, fn func() error) error {
	var err error
	for i := range 5 {
		if err = fn(); err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) || ctx.Err() != nil {
			return err
		}
		r.metrics.errors.WithLabelValues(errUpload).Inc()
		select {
		case <-time.After(time.Duration(i+1) * 500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}
