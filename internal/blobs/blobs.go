// Package blobs is where the database and the file stores meet: it opens
// each file store's backend once, uploads content and attaches it, deletes
// content nothing uses any more, and sweeps away what interrupted uploads
// left behind. The API, `kiln expire` and the server's periodic clean-up
// all go through it, so that they follow one set of rules.
//
// The rules, for several server replicas sharing one database and one
// bucket (or directory):
//
//   - An upload claims its content in the database before it writes a
//     byte and releases the claim once the content is attached to its
//     artifact's file (store.AttachFile) or the attach failed. A deletion
//     claims the content only when no file and no claim hold it, and
//     deletes the bytes under that claim. So no replica deletes bytes that
//     another is uploading or has just attached, and no upload starts
//     while bytes are being deleted (store/blobclaims.go argues the
//     transactions). An in-process lock cannot do this: the replica that
//     deletes is not the one that uploads.
//   - A failed upload publishes nothing (package filestore's contract),
//     so it needs no clean-up; an upload whose attach fails (its artifact
//     went away, the store filled up meanwhile) deletes its bytes through
//     the deletion rule above, which keeps them when another upload or
//     file holds them.
//   - Deleting bytes happens after the transaction that released them and
//     may fail (the store is unreachable): the bytes stay as an orphan,
//     never the other way round — a file whose bytes are gone.
//   - What a killed process leaves is cleaned up by Sweep: each backend's
//     abandoned temporary uploads, and the content of upload claims whose
//     process died. Every replica may sweep: each step is idempotent.
package blobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/kiln-build/kiln/internal/filestore"
	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

// Store is what the manager needs of the database.
type Store interface {
	FileStores() store.Table[model.FileStore]
	ClaimBlobUpload(ctx context.Context, storeID int64, sha string) (int64, error)
	ClaimBlobDeletion(ctx context.Context, storeID int64, sha string) (int64, bool, error)
	ReleaseBlobClaim(ctx context.Context, id int64) error
	ExpireBlobClaims(ctx context.Context) ([]store.Blob, error)
}

// Options tunes a Manager. The zero value is ready to use.
type Options struct {
	// Logger receives clean-up failures and sweeps that removed
	// something; nil discards.
	Logger *slog.Logger
	// UploadMemory bounds the bytes that S3 uploads in progress hold in
	// memory, all stores together; 0 is filestore.DefaultUploadMemory.
	UploadMemory int64
	// BusyWait is how long an upload waits for a deletion of the same
	// content to end before it gives up; 0 is 30s.
	BusyWait time.Duration
}

// Manager uploads, deletes and sweeps content. It is safe for concurrent
// use; build one per process, since it keeps each store's backend (an S3
// connection pool) open.
type Manager struct {
	st     Store
	log    *slog.Logger
	budget *filestore.Budget
	wait   time.Duration

	mu       sync.Mutex
	backends map[int64]opened
}

type opened struct {
	config  string
	backend filestore.Backend
}

// New returns a manager over st.
func New(st Store, o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.UploadMemory <= 0 {
		o.UploadMemory = filestore.DefaultUploadMemory
	}
	if o.BusyWait <= 0 {
		o.BusyWait = 30 * time.Second
	}
	return &Manager{st: st, log: o.Logger, budget: filestore.NewBudget(o.UploadMemory), wait: o.BusyWait,
		backends: map[int64]opened{}}
}

// Open returns the backend of a file store, opened once and kept while
// the store's configuration stays the same.
func (m *Manager) Open(fs *model.FileStore) (filestore.Backend, error) {
	key := string(fs.Backend) + "\x00" + string(fs.Configuration)
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.backends[fs.ID]; ok && o.config == key {
		return o.backend, nil
	}
	be, err := filestore.Open(fs, filestore.WithBudget(m.budget))
	if err != nil {
		return nil, err
	}
	if old, ok := m.backends[fs.ID]; ok {
		closeBackend(old.backend)
	}
	m.backends[fs.ID] = opened{config: key, backend: be}
	return be, nil
}

func closeBackend(b filestore.Backend) {
	if c, ok := b.(io.Closer); ok {
		c.Close()
	}
}

// Backend returns the backend of the file store with this id.
func (m *Manager) Backend(ctx context.Context, storeID int64) (filestore.Backend, error) {
	fs, err := m.st.FileStores().Get(ctx, storeID, nil)
	if err != nil {
		return nil, err
	}
	return m.Open(fs)
}

// BusyError is returned by Upload when the content is being deleted for
// longer than the manager waits: the client should retry.
type BusyError struct{ SHA256 string }

// Error says what to do.
func (e *BusyError) Error() string {
	return fmt.Sprintf("content %s is being deleted from its file store; retry the upload", e.SHA256)
}

// Upload writes size bytes of body to the file store as content sha and
// calls attach, which records it (store.AttachFile), under an upload claim.
// When the bytes do not match (a *filestore.MismatchError) or cannot be
// written (a *filestore.UnavailableError), nothing was published; when
// attach fails, the bytes are deleted unless something else holds them,
// and attach's error is returned.
func (m *Manager) Upload(ctx context.Context, fs *model.FileStore, sha string, size int64, body io.Reader,
	attach func(context.Context) error) error {
	be, err := m.Open(fs)
	if err != nil {
		return err
	}
	claim, err := m.claimUpload(ctx, fs.ID, sha)
	if err != nil {
		return err
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := m.st.ReleaseBlobClaim(context.WithoutCancel(ctx), claim); err != nil {
				m.log.Warn("releasing an upload claim (it expires by itself)", "file_store", fs.Name, "sha256", sha, "error", err)
			}
		}
	}
	defer release()
	if err := be.Put(ctx, sha, size, body); err != nil {
		return err
	}
	if err := attach(ctx); err != nil {
		release()
		m.Remove(context.WithoutCancel(ctx), store.Blob{FileStoreID: fs.ID, SHA256: sha})
		return err
	}
	return nil
}

// claimUpload claims content for an upload, waiting while it is being
// deleted.
func (m *Manager) claimUpload(ctx context.Context, storeID int64, sha string) (int64, error) {
	deadline := time.Now().Add(m.wait)
	pause := 20 * time.Millisecond
	for {
		id, err := m.st.ClaimBlobUpload(ctx, storeID, sha)
		if !errors.Is(err, store.ErrBlobBusy) {
			return id, err
		}
		if time.Now().After(deadline) {
			return 0, &BusyError{SHA256: sha}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// deleteTimeout bounds one deletion of bytes, far below
// store.DeleteClaimTTL, so that a claim never outlives its deletion.
const deleteTimeout = time.Minute

// Removed counts what Remove did.
type Removed struct {
	// Deleted blobs had their bytes deleted.
	Deleted int
	// Kept blobs are held by a file or an upload under way.
	Kept int
	// Failed blobs could not be deleted (logged); they stay as orphans.
	Failed int
}

// Remove deletes the bytes of each blob unless a file or an upload holds
// it. Failures are logged and counted, never returned: the bytes stay,
// unreferenced.
func (m *Manager) Remove(ctx context.Context, blobs ...store.Blob) Removed {
	var r Removed
	for _, b := range blobs {
		switch ok, err := m.remove(ctx, b); {
		case err != nil:
			r.Failed++
			m.log.Warn("deleting content that nothing uses (it stays, unreferenced)", "file_store", b.FileStoreID, "sha256", b.SHA256, "error", err)
		case ok:
			r.Deleted++
		default:
			r.Kept++
		}
	}
	return r
}

func (m *Manager) remove(ctx context.Context, b store.Blob) (bool, error) {
	be, err := m.Backend(ctx, b.FileStoreID)
	if err != nil {
		return false, err
	}
	claim, ok, err := m.st.ClaimBlobDeletion(ctx, b.FileStoreID, b.SHA256)
	if err != nil || !ok {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	err = be.Delete(dctx, b.SHA256)
	if rerr := m.st.ReleaseBlobClaim(context.WithoutCancel(ctx), claim); rerr != nil && err == nil {
		m.log.Warn("releasing a deletion claim (it expires by itself)", "sha256", b.SHA256, "error", rerr)
	}
	return err == nil, err
}

// Swept counts what Sweep did.
type Swept struct {
	// Uploads is how many abandoned temporary uploads the backends
	// removed.
	Uploads int
	// Claims is what became of the content of expired upload claims.
	Claims Removed
	// Errors are the stores that could not be swept.
	Errors int
}

// Sweep cleans up after processes that died: the abandoned temporary
// uploads of every file store, and the content of upload claims that
// expired. Stores that fail are logged and skipped.
func (m *Manager) Sweep(ctx context.Context) Swept {
	var s Swept
	stores, err := m.st.FileStores().List(ctx, store.Query{Limit: 1000})
	if err != nil {
		m.log.Warn("sweeping file stores", "error", err)
		s.Errors++
		return s
	}
	for i := range stores {
		fs := &stores[i]
		be, err := m.Open(fs)
		if err == nil {
			var n int
			n, err = be.Sweep(ctx)
			s.Uploads += n
			if n > 0 {
				m.log.Info("removed abandoned uploads", "file_store", fs.Name, "count", n)
			}
		}
		if err != nil {
			s.Errors++
			m.log.Warn("sweeping a file store", "file_store", fs.Name, "error", err)
		}
	}
	expired, err := m.st.ExpireBlobClaims(ctx)
	if err != nil {
		s.Errors++
		m.log.Warn("expiring blob claims", "error", err)
	}
	s.Claims = m.Remove(ctx, expired...)
	return s
}

// RunSweeper sweeps every interval until ctx ends, starting after one
// interval (a replica that restarts in a loop must not sweep in a loop).
func (m *Manager) RunSweeper(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Sweep(ctx)
		}
	}
}

// Close releases the backends' connections.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, o := range m.backends {
		closeBackend(o.backend)
		delete(m.backends, id)
	}
}
