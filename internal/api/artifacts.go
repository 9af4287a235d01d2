package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
)

type artifactInput struct {
	Category    *string               `json:"category"`
	Workspace   *ref                  `json:"workspace"`
	Data        *json.RawMessage      `json:"data"`
	Files       *[]model.ArtifactFile `json:"files"`
	WorkRequest *int64                `json:"created_by_work_request"`
	ExpireAt    nullable[timestamp]   `json:"expire_at"`
}

// artifactRoutes: anyone reads the artifacts (and downloads the files) of
// the workspaces they see. Contributors and owners create and delete
// artifacts and upload their files; so does a runner for the request it is
// running, in that request's workspace (its build outputs and logs).
//
// Files are declared with their sha256 and size when the artifact is
// created, then uploaded one by one with PUT .../files/<path>: the body is
// streamed to the file store, checked against the declaration, and
// counted against the store's max_size in the same transaction that
// records it. A full store refuses the upload (409) before a byte is
// written; a body that does not match is refused (400) and nothing stays
// behind. Uploading a file that is already complete answers 200, so a
// client may simply retry after any failure.
func (a *API) artifactRoutes() []Route {
	res := &resource[model.Artifact, artifactInput]{
		a: a, name: "artifact", path: "artifacts", table: a.st.Artifacts(),
		id: func(o *model.Artifact) int64 { return o.ID },
		filters: map[string]filterFunc{
			"workspace": workspaceFilter, "category": textFilter, "work_request": idFilter,
		},
		read: (*call).anyone,
		write: func(c *call) error {
			if c.r.Method == http.MethodPost {
				return requireCaller(c) // runners create artifacts too
			}
			return c.requireUser()
		},
		create:  newArtifact,
		present: presentArtifact,
		allow:   func(c *call, o *model.Artifact) error { return c.contributorOf(o.WorkspaceID) },
		update: func(c *call, in *artifactInput) (func(*model.Artifact) error, error) {
			if in.Files != nil || in.WorkRequest != nil {
				return nil, invalidField("files", "files and created_by_work_request cannot be changed: create a new artifact")
			}
			var ws *model.Workspace
			if in.Workspace != nil {
				var err error
				if ws, err = c.workspaceRef("workspace", *in.Workspace); err != nil {
					return nil, err
				}
			}
			return func(o *model.Artifact) error {
				if ws != nil {
					o.WorkspaceID = ws.ID // the store refuses a move
				}
				set(&o.Category, in.Category)
				set(&o.Data, in.Data)
				if in.ExpireAt.set {
					o.ExpireAt = nil
					if !in.ExpireAt.null {
						t := timeOf(in.ExpireAt.value)
						o.ExpireAt = &t
					}
				}
				return nil
			}, nil
		},
	}
	var routes []Route
	for _, r := range res.routes() {
		if strings.HasPrefix(r.Pattern, "DELETE ") {
			r.Handler = a.endpoint(func(c *call) error { return deleteArtifact(c, res) })
		}
		routes = append(routes, r)
	}
	files := Prefix + "artifacts/{id}/files/{path...}"
	return append(routes,
		Route{"PUT " + files, a.endpoint(uploadFile)},
		Route{"GET " + files, a.endpoint(downloadFile)},
	)
}

// requireCaller lets through users and runners, and stops anonymous
// callers; each operation then checks what the caller may do.
func requireCaller(c *call) error {
	if c.p == nil {
		return errorf(http.StatusUnauthorized, "", `this needs authentication: send "Authorization: Token <secret>"`)
	}
	return nil
}

func presentArtifact(o *model.Artifact) {
	if o.Files == nil {
		o.Files = []model.ArtifactFile{}
	}
}

// runnerRequest returns the request a runner's token may act for: running
// and assigned to that runner. Any other case is a 403.
func (c *call) runnerRequest(id *int64) (*model.WorkRequest, error) {
	if id == nil {
		return nil, forbidden("runners create artifacts only for the work request they run: give created_by_work_request")
	}
	wr, err := c.a.st.WorkRequests().Get(c.ctx(), *id, nil)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if err != nil || wr.Status != model.StatusRunning || wr.WorkerID == nil || *wr.WorkerID != c.p.Worker.ID {
		return nil, forbidden("work request %d is not running on this runner", *id)
	}
	return wr, nil
}

func newArtifact(c *call, in *artifactInput) (*model.Artifact, error) {
	o := &model.Artifact{Data: emptyObject(), Files: []model.ArtifactFile{}}
	set(&o.Category, in.Category)
	set(&o.Data, in.Data)
	set(&o.Files, in.Files)
	if in.ExpireAt.set && !in.ExpireAt.null {
		t := timeOf(in.ExpireAt.value)
		o.ExpireAt = &t
	}
	if c.p.User == nil { // a runner
		wr, err := c.runnerRequest(in.WorkRequest)
		if err != nil {
			return nil, err
		}
		o.WorkspaceID, o.WorkRequestID = wr.WorkspaceID, &wr.ID
		if in.Workspace != nil && (in.Workspace.id != 0 && in.Workspace.id != wr.WorkspaceID || in.Workspace.name != "") {
			return nil, forbidden("runners create artifacts in the workspace of their work request (%d) only; leave workspace out", wr.WorkspaceID)
		}
		return o, nil
	}
	ws, err := c.writableWorkspace(in.Workspace)
	if err != nil {
		return nil, err
	}
	o.WorkspaceID = ws.ID
	creator := c.user().ID
	o.CreatedBy = &creator
	if in.WorkRequest != nil {
		wr, err := c.a.st.WorkRequests().Get(c.ctx(), *in.WorkRequest, c.viewer())
		if err != nil || wr.WorkspaceID != ws.ID {
			return nil, invalidField("created_by_work_request", "no work request %d in this workspace", *in.WorkRequest)
		}
		o.WorkRequestID = &wr.ID
	}
	return o, nil
}

// artifactForFiles reads the artifact of a file route and checks that the
// caller may write its files: contributors and owners of its workspace, or
// the runner running the request that created it.
func artifactForFiles(c *call, write bool) (*model.Artifact, string, error) {
	id, err := pathID(c, "id", "artifact")
	if err != nil {
		return nil, "", err
	}
	name := c.r.PathValue("path")
	if c.p != nil && c.p.User == nil { // a runner: its request's artifacts only
		art, err := c.a.st.Artifacts().Get(c.ctx(), id, nil)
		if err != nil && !isNotFound(err) {
			return nil, "", err
		}
		if err == nil && art.WorkRequestID != nil {
			_, err := c.runnerRequest(art.WorkRequestID)
			var refused *apiError
			switch {
			case err == nil:
				return art, name, nil
			case !errors.As(err, &refused):
				return nil, "", err
			}
		}
		// one answer whatever the reason, so that a runner learns nothing
		// about artifacts that are not its own, not even that they exist
		return nil, "", forbidden("runners reach only the artifacts of the work request they are running")
	}
	if err := c.anyone(); err != nil {
		return nil, "", err
	}
	if write {
		if err := requireCaller(c); err != nil {
			return nil, "", err
		}
	}
	art, err := c.a.st.Artifacts().Get(c.ctx(), id, c.viewer())
	if isNotFound(err) {
		return nil, "", notFound("artifact", id)
	}
	if err != nil {
		return nil, "", err
	}
	if write {
		if err := c.contributorOf(art.WorkspaceID); err != nil {
			return nil, "", err
		}
	}
	return art, name, nil
}

// openBlob opens stored content.
func (a *API) openBlob(c *call, storeID int64, sha string) (io.ReadCloser, error) {
	be, err := a.blobs.Backend(c.ctx(), storeID)
	if err != nil {
		return nil, err
	}
	rc, err := be.Open(c.ctx(), sha)
	if err != nil {
		return nil, unavailable(err, "reading the file failed")
	}
	return rc, nil
}

// unavailable turns a file store that cannot be reached, or refuses, into
// a 503 that says so (clients retry 5xx); other errors pass unchanged.
func unavailable(err error, what string) error {
	var ue *filestore.UnavailableError
	var busy *blobs.BusyError
	switch {
	case errors.As(err, &ue):
		return &apiError{status: http.StatusServiceUnavailable, retryAfter: 5,
			detail: fmt.Sprintf("the file store is unavailable: %v; %s: retry later", ue, what)}
	case errors.As(err, &busy):
		return &apiError{status: http.StatusServiceUnavailable, retryAfter: 1, detail: busy.Error()}
	}
	return err
}

// uploadFile is PUT /artifacts/{id}/files/{path...}.
func uploadFile(c *call) error {
	if err := c.noQuery(); err != nil {
		return err
	}
	art, name, err := artifactForFiles(c, true)
	if err != nil {
		return err
	}
	var f *model.ArtifactFile
	for i := range art.Files {
		if art.Files[i].Path == name {
			f = &art.Files[i]
		}
	}
	if f == nil {
		return errorf(http.StatusNotFound, "path", "artifact %d declares no file %q", art.ID, name)
	}
	if f.Complete {
		// a retried upload: the content is there and was checked
		io.Copy(io.Discard, io.LimitReader(c.r.Body, f.Size+1))
		presentArtifact(art)
		return c.reply(http.StatusOK, art)
	}
	if c.r.ContentLength >= 0 && c.r.ContentLength != f.Size {
		return invalidField("size", "the body has %d bytes but %q was declared with %d", c.r.ContentLength, name, f.Size)
	}
	fs, err := c.a.st.DefaultFileStore(c.ctx())
	if err != nil {
		return err
	}
	// Refuse early, before a byte is written, when the store is full;
	// AttachFile checks again under the store's row lock.
	if err := c.a.st.CheckCapacity(c.ctx(), fs.ID, f.SHA256, f.Size); err != nil {
		return err
	}
	err = c.a.blobs.Upload(c.ctx(), fs, f.SHA256, f.Size, c.r.Body, func(ctx context.Context) error {
		return c.a.st.AttachFile(ctx, art.ID, name, fs.ID, nil)
	})
	if err != nil {
		var me *filestore.MismatchError
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errorf(http.StatusRequestTimeout, "", "%s: the upload stopped making progress; nothing was stored", name)
		}
		if errors.As(err, &me) {
			field := "sha256"
			if me.GotSize != me.WantSize {
				field = "size"
			}
			return invalidField(field, "%s: %v; nothing was stored", name, err)
		}
		return unavailable(err, fmt.Sprintf("nothing of %s was stored", name))
	}
	art, err = c.a.st.Artifacts().Get(c.ctx(), art.ID, nil)
	if err != nil {
		return err
	}
	presentArtifact(art)
	c.w.Header().Set("Location", Prefix+"artifacts/"+strconv.FormatInt(art.ID, 10)+"/files/"+name)
	return c.reply(http.StatusCreated, art)
}

// downloadFile is GET /artifacts/{id}/files/{path...}: the file's bytes,
// with ranges, its sha256 as ETag and a filename for browsers.
func downloadFile(c *call) error {
	if err := c.noQuery(); err != nil {
		return err
	}
	art, name, err := artifactForFiles(c, false)
	if err != nil {
		return err
	}
	f, storeID, err := c.a.st.FileLocation(c.ctx(), art.ID, name, nil)
	if err != nil {
		if isNotFound(err) {
			return errorf(http.StatusNotFound, "path", "artifact %d has no file %q", art.ID, name)
		}
		return err
	}
	h := c.w.Header()
	h.Set("ETag", `"`+f.SHA256+`"`)
	h.Set("X-Kiln-SHA256", f.SHA256)
	be, err := c.a.blobs.Backend(c.ctx(), storeID)
	if err != nil {
		return err
	}
	filename := strings.ReplaceAll(path.Base(name), `"`, "")
	if r, ok := be.(filestore.Redirector); ok {
		u, err := r.DownloadURL(c.ctx(), f.SHA256, filename, contentType(name))
		if err != nil {
			return unavailable(err, "presigning the download failed")
		}
		if u != nil {
			// the URL expires: no cache may keep the redirect
			h.Set("Cache-Control", "no-store")
			http.Redirect(c.w, c.r, u.String(), http.StatusTemporaryRedirect)
			return nil
		}
	}
	rc, err := c.a.openBlob(c, storeID, f.SHA256)
	if err != nil {
		return err
	}
	defer rc.Close()
	h.Set("Content-Type", contentType(name))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(c.w, c.r, "", art.CreatedAt, rs)
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(f.Size, 10))
	c.w.WriteHeader(http.StatusOK)
	io.Copy(c.w, rc)
	return nil
}

// contentType is text/plain for logs and text, else octet-stream: the
// API never lets a browser render uploaded HTML.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".log", ".txt", ".buildinfo", ".changes", ".dsc":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// deleteArtifact deletes the artifact, then the content that no other
// artifact uses from its file store.
func deleteArtifact(c *call, res *resource[model.Artifact, artifactInput]) error {
	if err := c.requireUser(); err != nil {
		return err
	}
	if err := c.noQuery(); err != nil {
		return err
	}
	art, err := res.get(c)
	if err != nil {
		return err
	}
	if err := c.contributorOf(art.WorkspaceID); err != nil {
		return err
	}
	released, err := c.a.st.DeleteArtifact(c.ctx(), art.ID, c.viewer())
	if err != nil {
		return err
	}
	c.a.blobs.Remove(context.WithoutCancel(c.ctx()), released...)
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

func timeOf(t timestamp) time.Time { return time.Time(t) }
