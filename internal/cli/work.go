package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/runner"
)

var workRequests = &resource{
	singular: "work request", plural: "work-requests", command: "work",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("TYPE", "task_type"), field("TASK", "task_name"),
			n.workspaceColumn("WORKSPACE", "workspace"), field("STATUS", "status"), field("RESULT", "result"),
			n.column("WORKER", "worker", "workers", "name"), field("CREATED_AT", "created_at")}
	},
}

var artifacts = &resource{
	singular: "artifact", plural: "artifacts",
	cols: func(n *names) []column {
		return []column{field("ID", "id"), field("CATEGORY", "category"), n.workspaceColumn("WORKSPACE", "workspace"),
			field("WORK_REQUEST", "created_by_work_request"),
			computed("FILES", func(o object) string {
				files, _ := o["files"].([]any)
				names := make([]string, 0, len(files))
				for _, f := range files {
					if m, ok := f.(map[string]any); ok {
						names = append(names, format(m["path"]))
					}
				}
				if len(names) == 0 {
					return "-"
				}
				return strings.Join(names, ",")
			}),
			field("CREATED_AT", "created_at")}
	},
}

// newWorkCommand is `kiln work`: submit work requests and follow them.
func newWorkCommand() *cobra.Command {
	cmd, o := group("work", "Submit, list and follow work requests")

	var (
		taskType, workspace, data, script, arch, backend, timeout string
		priority, maxRetries                                      int
		deps                                                      []int64
		artifactPaths, env                                        []string
		wait, follow, waitAnyway                                  bool
	)
	submit := &cobra.Command{
		Use:   "submit TASK_NAME --workspace WORKSPACE",
		Short: "Submit a work request",
		Long: `Submit a work request and print it.

Worker tasks run on runners: noop, and command, which runs a shell script in a
fresh working directory. --script, --env, --timeout and --artifact fill in a
command task's data; --data gives any task's data as JSON (or @file.json), and
the other flags are merged into it.

  kiln work submit command --workspace debian/main \
      --script 'echo hello > hello.txt' --artifact hello.txt --wait

--artifact PATH[:CATEGORY] declares a file the script leaves in its working
directory; it is uploaded as an artifact (category kiln:file by default).
(-o/--output is the output format, as for every admin command.)
--wait waits until the request is finished and exits non-zero unless it
succeeded; --follow also prints its log as it runs. When no connected worker
can run the request (its architecture or backend is nowhere), they say so at
once on stderr, naming what is connected, give a runner a few seconds to
connect, then stop waiting (the request stays pending) unless
--wait-for-runner is given.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			td := map[string]any{}
			if data != "" {
				raw, err := jsonFlag("--data", data)
				if err != nil {
					return err
				}
				_ = json.Unmarshal(raw, &td)
			}
			if taskType == "Worker" {
				if _, ok := td["host_architecture"]; !ok || s.changed("host-architecture") {
					td["host_architecture"] = arch
				}
				if s.changed("backend") {
					td["backend"] = backend
				}
			}
			if s.changed("script") {
				td["script"] = script
			}
			if s.changed("timeout") {
				td["timeout"] = timeout
			}
			if len(env) > 0 {
				m := map[string]string{}
				for _, kv := range env {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return usageError{fmt.Errorf("--env %q: want NAME=VALUE", kv)}
					}
					m[k] = v
				}
				td["env"] = m
			}
			if len(artifactPaths) > 0 {
				var outs []map[string]string
				for _, spec := range artifactPaths {
					p, cat, _ := strings.Cut(spec, ":")
					out := map[string]string{"path": p}
					if cat != "" {
						out["category"] = cat
					}
					outs = append(outs, out)
				}
				td["outputs"] = outs
			}
			ws, err := workspaceRef(s, workspace)
			if err != nil {
				return err
			}
			body := map[string]any{"task_type": taskType, "task_name": args[0], "workspace": ws, "task_data": td}
			if s.changed("priority") {
				body["priority"] = priority
			}
			if s.changed("max-retries") {
				body["max_retries"] = maxRetries
			}
			if len(deps) > 0 {
				body["dependencies"] = deps
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodPost, workRequests.path(), body, &raw); err != nil {
				return err
			}
			o, err := decodeObject(raw)
			if err != nil {
				return err
			}
			id := format(o["id"])
			if !wait && !follow {
				s.p.note("work request %s submitted (%s); follow it with: kiln work logs --follow %s", id, format(o["status"]), id)
				return workRequests.print(s, raw)
			}
			s.p.note("work request %s submitted; waiting for it to finish", id)
			return waitForRequest(s, id, follow, &runnerCheck{anyway: waitAnyway, abort: "kiln work abort " + id})
		}),
	}
	sf := submit.Flags()
	sf.StringVar(&taskType, "task-type", "Worker", "task type: Worker, Server or Wait")
	sf.StringVar(&workspace, "workspace", "", "workspace, by id, scope/name or a unique name (required)")
	sf.StringVar(&data, "data", "", "task data as a JSON object, or @file.json")
	sf.StringVar(&script, "script", "", "command task: the shell script to run")
	sf.StringArrayVar(&env, "env", nil, "command task: NAME=VALUE for the script's environment (repeatable)")
	sf.StringVar(&timeout, "timeout", "", "command task: time limit, e.g. 30m (default 1h)")
	sf.StringArrayVar(&artifactPaths, "artifact", nil, "command task: PATH[:CATEGORY] of a file the script leaves, to upload as an artifact (repeatable)")
	sf.StringVar(&arch, "host-architecture", runner.DebianArchitecture(runtime.GOARCH), "Worker task: architecture of the runner it needs")
	sf.StringVar(&backend, "backend", "auto", "Worker task: backend: auto, host or unshare")
	sf.IntVar(&priority, "priority", 0, "priority; higher runs first (above 0: admins only)")
	sf.IntVar(&maxRetries, "max-retries", 3, "how often to retry when a runner dies under it")
	sf.Int64SliceVar(&deps, "depends-on", nil, "ids of work requests that must succeed first")
	sf.BoolVar(&wait, "wait", false, "wait until it is finished; exit non-zero unless it succeeded")
	sf.BoolVar(&follow, "follow", false, "wait, printing its log as it runs")
	sf.BoolVar(&waitAnyway, "wait-for-runner", false, "with --wait or --follow: keep waiting when no connected worker can run the request, until one connects")
	_ = submit.MarkFlagRequired("workspace")

	var status, lworkspace, taskName, ltype, worker string
	list := &cobra.Command{
		Use:   "list",
		Short: "List work requests",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "task_name": taskName, "task_type": ltype, "worker": worker} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if lworkspace != "" {
				ws, err := workspaceRef(s, lworkspace)
				if err != nil {
					return err
				}
				q.Set("workspace", format(ws))
			}
			return workRequests.list(s, q)
		}),
	}
	lf := list.Flags()
	lf.StringVar(&status, "status", "", "only requests in this status: pending, running, completed, aborted or blocked")
	lf.StringVar(&lworkspace, "workspace", "", "only requests of this workspace")
	lf.StringVar(&taskName, "task-name", "", "only requests of this task")
	lf.StringVar(&ltype, "task-type", "", "only requests of this task type")
	lf.StringVar(&worker, "worker", "", "only requests assigned to this worker")

	var reason string
	abort := &cobra.Command{
		Use:   "abort ID",
		Short: "Abort a work request that has not finished (and what depends on it)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := workRequests.byName(s, args[0])
			if err != nil {
				return err
			}
			body := map[string]any{}
			if reason != "" {
				body["reason"] = reason
			}
			_, err = workRequests.send(s, http.MethodPost, workRequests.path(id, "abort"), body, "aborted")
			return err
		}),
	}
	abort.Flags().StringVar(&reason, "reason", "", "why, for the record")

	retry := &cobra.Command{
		Use:   "retry ID",
		Short: "Put a failed or aborted work request back in the queue",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := workRequests.byName(s, args[0])
			if err != nil {
				return err
			}
			_, err = workRequests.send(s, http.MethodPost, workRequests.path(id, "retry"), map[string]any{}, "queued again")
			return err
		}),
	}

	var followLogs bool
	logs := &cobra.Command{
		Use:   "logs ID",
		Short: "Print the log of a work request",
		Long: `Print the log of a work request: while it runs, what its runner has sent so
far; once it has finished, the log artifact the runner uploaded. --follow keeps
printing until the request has finished.`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := workRequests.byName(s, args[0])
			if err != nil {
				return err
			}
			if followLogs {
				return waitForRequest(s, id, true, nil)
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodGet, workRequests.path(id, "logs"), nil, &raw); err != nil {
				return err
			}
			_, err = s.p.out.Write(raw)
			return err
		}),
	}
	logs.Flags().BoolVarP(&followLogs, "follow", "f", false, "keep printing until the request has finished")

	cmd.AddCommand(submit, list, workRequests.showCommand(o, workRequests.byName), abort, retry, logs)
	return cmd
}

// waitForRequest polls a request until it has finished, printing its log
// as it grows when follow is set, then prints its outcome. It fails unless
// the request succeeded, so that scripts can chain on it, and, given a
// runnerCheck, when nothing connected can run the request.
func waitForRequest(s *session, id string, follow bool, rc *runnerCheck) error {
	var offset int
	var last object
	err := waitFor(s.ctx, 500*time.Millisecond, func() (bool, error) {
		var raw json.RawMessage
		if err := s.c.Do(s.ctx, http.MethodGet, workRequests.path(id), nil, &raw); err != nil {
			return false, err
		}
		o, err := decodeObject(raw)
		if err != nil {
			return false, err
		}
		last = o
		if rc != nil {
			if err := rc.poll(s, []object{o}); err != nil {
				return false, err
			}
		}
		status := format(o["status"])
		finished := status == "completed" || status == "aborted"
		if follow && (status == "running" || finished) {
			var text json.RawMessage
			p := client.WithQuery(workRequests.path(id, "logs"), url.Values{"offset": {strconv.Itoa(offset)}})
			if err := s.c.Do(s.ctx, http.MethodGet, p, nil, &text); err == nil {
				s.p.err.Write(text)
				offset += len(text)
			} else if !client.IsNotFound(err) {
				return false, err
			}
		}
		return finished, nil
	})
	if err != nil {
		return err
	}
	b, _ := json.Marshal(last)
	if perr := workRequests.print(s, b); perr != nil {
		return perr
	}
	if format(last["status"]) != "completed" || format(last["result"]) != "success" {
		return fmt.Errorf("work request %s ended %s/%s", id, format(last["status"]), format(last["result"]))
	}
	return nil
}

// newArtifactCommand is `kiln artifact`: the files work produced, and
// files people upload for work to use.
func newArtifactCommand() *cobra.Command {
	cmd, o := group("artifact", "List, download and upload artifacts")

	var workspace, category, workRequest string
	list := &cobra.Command{
		Use:   "list",
		Short: "List artifacts",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if category != "" {
				q.Set("category", category)
			}
			if workRequest != "" {
				q.Set("work_request", workRequest)
			}
			if workspace != "" {
				ws, err := workspaceRef(s, workspace)
				if err != nil {
					return err
				}
				q.Set("workspace", format(ws))
			}
			return artifacts.list(s, q)
		}),
	}
	list.Flags().StringVar(&workspace, "workspace", "", "only artifacts of this workspace")
	list.Flags().StringVar(&category, "category", "", "only artifacts of this category")
	list.Flags().StringVar(&workRequest, "work-request", "", "only artifacts made by this work request (id)")

	var dir string
	download := &cobra.Command{
		Use:   "download ID [FILE...]",
		Short: "Download the files of an artifact, checking their sha256",
		Long: `Download the files of an artifact (all of them, or those named) into --dir,
keeping their relative paths, and check each against its sha256. "-" as --dir
writes a single file to stdout.`,
		Args: cobra.MinimumNArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := artifacts.byName(s, args[0])
			if err != nil {
				return err
			}
			var art struct {
				Files []struct {
					Path     string `json:"path"`
					SHA256   string `json:"sha256"`
					Size     int64  `json:"size"`
					Complete bool   `json:"complete"`
				} `json:"files"`
			}
			if err := s.c.Do(s.ctx, http.MethodGet, artifacts.path(id), nil, &art); err != nil {
				return err
			}
			want := map[string]bool{}
			for _, a := range args[1:] {
				want[a] = true
			}
			if dir == "-" && (len(want) != 1 && len(art.Files) != 1) {
				return usageError{errors.New("--dir - writes one file to stdout: name it")}
			}
			n := 0
			for _, f := range art.Files {
				if len(want) > 0 && !want[f.Path] {
					continue
				}
				delete(want, f.Path)
				if !f.Complete {
					return fmt.Errorf("file %s of artifact %s has not been uploaded yet", f.Path, id)
				}
				if err := downloadFile(s, o, id, f.Path, f.SHA256, f.Size, dir); err != nil {
					return err
				}
				n++
			}
			for name := range want {
				return fmt.Errorf("artifact %s has no file %q", id, name)
			}
			s.p.note("downloaded %d file(s) of artifact %s", n, id)
			return nil
		}),
	}
	download.Flags().StringVar(&dir, "dir", ".", "directory to write the files to; - for stdout")

	var upWorkspace, upCategory, upData string
	upload := &cobra.Command{
		Use:   "upload FILE... --workspace WORKSPACE --category CATEGORY",
		Short: "Create an artifact from local files and upload them",
		Long: `Create an artifact holding the given files (named by their paths as given,
which must be relative) and upload them, each checked by the server against
its sha256 and counted against the file store's size limit.`,
		Args: cobra.MinimumNArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			ws, err := workspaceRef(s, upWorkspace)
			if err != nil {
				return err
			}
			var files []map[string]any
			for _, p := range args {
				name := filepath.ToSlash(filepath.Clean(p))
				if filepath.IsAbs(p) || strings.HasPrefix(name, "../") {
					name = path.Base(name)
				}
				sha, size, err := fileSum(p)
				if err != nil {
					return err
				}
				files = append(files, map[string]any{"path": name, "sha256": sha, "size": size, "local": p})
			}
			body := map[string]any{"workspace": ws, "category": upCategory}
			if upData != "" {
				raw, err := jsonFlag("--data", upData)
				if err != nil {
					return err
				}
				body["data"] = raw
			}
			decl := make([]map[string]any, len(files))
			for i, f := range files {
				decl[i] = map[string]any{"path": f["path"], "sha256": f["sha256"], "size": f["size"]}
			}
			body["files"] = decl
			var created struct {
				ID int64 `json:"id"`
			}
			if err := s.c.Do(s.ctx, http.MethodPost, artifacts.path(), body, &created); err != nil {
				return err
			}
			id := strconv.FormatInt(created.ID, 10)
			for _, f := range files {
				if err := uploadFile(s, o, id, f["path"].(string), f["local"].(string), f["size"].(int64)); err != nil {
					return fmt.Errorf("artifact %s created, but uploading %s failed (run the command again with the same files to retry): %w", id, f["path"], err)
				}
			}
			s.p.note("artifact %s created with %d file(s)", id, len(files))
			return artifacts.show(s, id)
		}),
	}
	upload.Flags().StringVar(&upWorkspace, "workspace", "", "workspace, by id, scope/name or a unique name (required)")
	upload.Flags().StringVar(&upCategory, "category", "kiln:file", "category of the artifact")
	upload.Flags().StringVar(&upData, "data", "", "data of the artifact as a JSON object, or @file.json")
	_ = upload.MarkFlagRequired("workspace")

	cmd.AddCommand(list, artifacts.showCommand(o, artifacts.byName), download, upload, artifacts.deleteCommand(o, artifacts.byName))
	return cmd
}

func fileSum(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// filePath is the API path of an artifact's file.
func filePath(id, name string) string {
	segs := strings.Split(name, "/")
	for i := range segs {
		segs[i] = url.PathEscape(segs[i])
	}
	return client.APIPrefix + "artifacts/" + id + "/files/" + strings.Join(segs, "/")
}

// fileHTTP follows a download's redirect to a presigned URL of the file
// store without kiln's token: the token is for kiln only, and an S3
// endpoint refuses a request that carries two credentials. Go's client
// keeps the header for another port of the same host.
var fileHTTP = &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}}

// rawRequest sends a request whose body or answer is a file, streamed,
// which the JSON client does not do.
func rawRequest(ctx context.Context, o *clientOptions, method, p string, body io.Reader, size int64) (*http.Response, error) {
	base, err := client.ServerURL(o.server)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, base.String()+p, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if o.token != "" {
		req.Header.Set("Authorization", "Token "+o.token)
	}
	resp, err := fileHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the server at %s: %w", base, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var prob struct {
			Detail string `json:"detail"`
			Field  string `json:"field"`
		}
		if json.Unmarshal(b, &prob) == nil && prob.Detail != "" {
			return nil, &client.Error{Status: resp.StatusCode, Detail: prob.Detail, Field: prob.Field}
		}
		if resp.Request != nil && resp.Request.URL.Host != req.URL.Host {
			// redirected to the file store, which answers S3 errors
			var s3err struct{ Code, Message string }
			if xml.Unmarshal(b, &s3err) == nil && s3err.Code != "" {
				return nil, &client.Error{Status: resp.StatusCode,
					Detail: fmt.Sprintf("the file store at %s answered %s: %s", resp.Request.URL.Host, s3err.Code, s3err.Message)}
			}
		}
		return nil, &client.Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	}
	return resp, nil
}

// downloadFile streams one file of size bytes into dir (or stdout),
// checking its hash, with a progress bar when a person watches; a file
// that does not match is removed.
func downloadFile(s *session, o *clientOptions, id, name, sha string, size int64, dir string) error {
	resp, err := rawRequest(s.ctx, o, http.MethodGet, filePath(id, name), nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	bar := newBar(s.p.out, s.p.err, size, name, true)
	defer endBar(bar)
	h := sha256.New()
	if dir == "-" {
		if _, err := io.Copy(io.MultiWriter(s.p.out, h, bar), resp.Body); err != nil {
			return err
		}
	} else {
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.Create(dst)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.MultiWriter(f, h, bar), resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && hex.EncodeToString(h.Sum(nil)) != sha {
			err = fmt.Errorf("%s: the downloaded content does not match its sha256 %s", name, sha)
		}
		if err != nil {
			os.Remove(dst)
			return err
		}
		s.p.note("%s  %s", sha, dst)
		return nil
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%s: the downloaded content does not match its sha256 %s", name, sha)
	}
	return nil
}

// uploadFile sends one local file, with a progress bar when a person
// watches.
func uploadFile(s *session, o *clientOptions, id, name, local string, size int64) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	bar := newBar(s.p.out, s.p.err, size, name, true)
	defer endBar(bar)
	body := progressbar.NewReader(f, bar)
	resp, err := rawRequest(s.ctx, o, http.MethodPut, filePath(id, name), &body, size)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
