package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type artifactInput struct {
	Category    *string               `json:"category"`
	Workspace   *ref                  `json:"workspace"`
	Data        *json.RawMessage      `json:"data"`
	Files       *[]model.ArtifactFile `json:"files"`
	WorkRequest *int64                `json:"created_by_work_request"`
	ExpireAt    nullable[timestamp]   `json:"expire_at"`
}

// blobLocks serialises, per content, the window between writing a blob and
// recording it (or cleaning it up), so that a failed upload never deletes
// bytes that a concurrent upload of the same content in this process has
// just attached. Replicas sharing a Local store on one disk can still race
// in that window; S3 backends will want object versioning for the same
// reason.
type blobLocks struct {
	mu    sync.Mutex
	locks map[string]*blobLock
}

type blobLock struct {
	sync.Mutex
	users int
}

func (b *blobLocks) lock(sha string) func() {
	b.mu.Lock()
	if b.locks == nil {
		b.locks = map[string]*blobLock{}
	}
	l := b.locks[sha]
	if l == nil {
		l = &blobLock{}
		b.locks[sha] = l
	}
	l.users++
	b.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		b.mu.Lock()
		if l.users--; l.users == 0 {
			delete(b.locks, sha)
		}
		b.mu.Unlock()
	}
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
	be, err := a.backend(c.ctx(), storeID)
	if err != nil {
		return nil, err
	}
	return be.Open(c.ctx(), sha)
}

func (a *API) backend(ctx context.Context, storeID int64) (filestore.Backend, error) {
	fs, err := a.st.FileStores().Get(ctx, storeID, nil)
	if err != nil {
		return nil, err
	}
	return filestore.Open(fs)
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
	be, err := filestore.Open(fs)
	if err != nil {
		return err
	}
	// Refuse early, before a byte is written, when the store is full;
	// AttachFile checks again under the store's row lock.
	if err := c.a.st.CheckCapacity(c.ctx(), fs.ID, f.SHA256, f.Size); err != nil {
		return err
	}
	unlock := c.a.blobs.lock(f.SHA256)
	defer unlock()
	if err := be.Put(c.ctx(), f.SHA256, f.Size, c.r.Body); err != nil {
		var me *filestore.MismatchError
		if errors.As(err, &me) {
			field := "sha256"
			if me.GotSize != me.WantSize {
				field = "size"
			}
			return invalidField(field, "%s: %v; nothing was stored", name, err)
		}
		return err
	}
	if err := c.a.st.AttachFile(c.ctx(), art.ID, name, fs.ID, nil); err != nil {
		ctx := context.WithoutCancel(c.ctx())
		if used, rerr := c.a.st.BlobReferenced(ctx, fs.ID, f.SHA256); rerr == nil && !used {
			if derr := be.Delete(ctx, f.SHA256); derr != nil {
				c.a.log.Warn("removing the content of a refused upload", "sha256", f.SHA256, "err", derr)
			}
		}
		return err
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
	rc, err := c.a.openBlob(c, storeID, f.SHA256)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.w.Header()
	h.Set("ETag", `"`+f.SHA256+`"`)
	h.Set("X-Kiln-SHA256", f.SHA256)
	h.Set("Content-Type", contentType(name))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(path.Base(name), `"`, "")+`"`)
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
	ctx := context.WithoutCancel(c.ctx())
	for _, b := range released {
		c.a.removeBlob(ctx, b)
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeBlob deletes released content unless an upload attached it again
// meanwhile. Failures leave an orphan file, never a missing one.
func (a *API) removeBlob(ctx context.Context, b store.Blob) {
	unlock := a.blobs.lock(b.SHA256)
	defer unlock()
	if used, err := a.st.BlobReferenced(ctx, b.FileStoreID, b.SHA256); err != nil || used {
		return
	}
	be, err := a.backend(ctx, b.FileStoreID)
	if err == nil {
		err = be.Delete(ctx, b.SHA256)
	}
	if err != nil {
		a.log.Warn("deleting released content", "file_store", b.FileStoreID, "sha256", b.SHA256, "err", err)
	}
}

func timeOf(t timestamp) time.Time { return time.Time(t) }
