// Package store keeps kiln's state in SQLite or PostgreSQL behind one
// interface, and keeps the running totals behind the public metrics in the
// same transactions as the rows they count.
//
// Transaction guarantees (the contract every implementation keeps):
//   - Every method that writes runs in exactly one transaction: either all of
//     its rows and all of the running totals they affect are committed, or
//     nothing is. A returned error means nothing changed.
//   - Update methods read the row, let the caller's function change it and
//     write it back in that same transaction, holding the row lock on
//     PostgreSQL (SQLite has a single writer), so concurrent updates never
//     lose each other's changes.
//   - Read methods see committed data only; Snapshot reads all figures of a
//     scrape from one consistent snapshot.
//   - All methods are safe for concurrent use, also by several server
//     processes sharing one PostgreSQL database.
//
// # Running totals that no writer waits for
//
// Each row a public metric counts adds to a running total — a family and
// a label set, e.g. artifacts{category, scope_id} — so that a scrape reads
// one row per series and never the big tables. A farm's writes land on few
// such totals, so updating them in place made writers queue: on
// PostgreSQL with 8 concurrent writers, 51–66 % of the sessions waited on
// a transactionid lock at the upsert, and artifact creation ran at 0.20,
// work request submission at 0.24 of its throughput without totals
// (`kiln dev bench-writes`, docs/benchmarks.md); the hot rows also bloated
// (14 rows in 8.5 MB after two minutes of writes).
//
// The totals are therefore kept through an insert-only journal:
//
//   - A write transaction sums its changes per total in memory and inserts
//     them as one row of metric_journal (a JSON array of [family, labels,
//     value]) in one statement at its very end. On PostgreSQL that
//     statement travels with the COMMIT in one pipelined round trip
//     (commitPostgres), so it adds no round trip and no lock is held
//     across one; a journal row is only ever inserted, so no two writers
//     wait for each other on it. A rollback, or a process dying before
//     COMMIT, takes the journal row with the rows it counts.
//   - Fold merges the journal into the totals and deletes the rows it
//     merged, in one transaction. One process folds at a time (a
//     PostgreSQL advisory lock; SQLite's single writer); a server folds
//     every second, `kiln metrics recount --fix` and `kiln dev seed`
//     fold when done.
//   - Readers (Snapshot, CheckTotals) read the totals and add the journal
//     rows not folded yet, in one snapshot. A fold moves rows atomically,
//     so a reader sees every committed change exactly once, folded or not.
//   - Totals rows are never deleted: a label set that once existed keeps
//     reporting 0.
//
// Measured the same way afterwards (docs/benchmarks.md): on PostgreSQL
// with totals at 0.88–0.91 of the throughput without at 8 writers, at
// 0.83–1.02 of it by CPU per write in every case, and no lock wait left
// among the sessions' top wait events.
//
// The price is on the readers' side: a snapshot also reads the journal
// rows not folded yet (about a second of writes, expanded and summed by
// the database), and a fold rewrites each changed total once a second.
//
// Rejected: upserting the totals last and in sorted order (what kiln did:
// the row lock is still held from the upsert to COMMIT, and every writer
// of a kind queues on it); spreading each total over N rows that writers
// pick at random (the queue is N times shorter, not gone, and scrapes read
// N times the rows); recounting at scrape time (the reference design, 1.6 s
// per GROUP BY at a million rows).
//
// Totals that scrapes must not read — the dashboard's rollups per hour ×
// workspace × task name — go through the same journal into a ledger (a
// table) of their own: see ledger.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-build/kiln/internal/model"
)

// ErrNotFound is returned when the object asked for does not exist, or is
// not visible to the caller (the two are indistinguishable on purpose).
var ErrNotFound = errors.New("not found")

// ErrUnauthenticated is returned for a token that is unknown, disabled,
// expired or belongs to an inactive user.
var ErrUnauthenticated = errors.New("invalid or disabled token")

// FieldError says which input field is wrong and why. Kind separates
// invalid values from conflicts with existing objects, so the API can pick
// 400/409/422.
type FieldError struct {
	Field   string
	Message string
	Kind    ErrorKind
}

// ErrorKind classifies a FieldError.
type ErrorKind int

// Kinds of FieldError.
const (
	// Invalid input: wrong value, unknown reference.
	Invalid ErrorKind = iota
	// Conflict with the stored state: duplicate name, object still in use,
	// file store full.
	Conflict
)

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...), Kind: Invalid}
}

func conflict(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...), Kind: Conflict}
}

// Store is everything kiln keeps. *SQL implements it for SQLite and
// PostgreSQL alike; the guarantees of the package comment hold for every
// method: one transaction per write, nothing changed on error, running
// totals committed with the rows they count, safe for concurrent use by
// several processes.
type Store interface {
	Dialect() Dialect
	Ping(ctx context.Context) error
	Close() error

	Scopes() Table[model.Scope]
	Workspaces() Table[model.Workspace]
	Users() Table[model.User]
	Identities() Table[model.Identity]
	Groups() Table[model.Group]
	WorkspaceMembers() Table[model.WorkspaceMember]
	Tokens() Table[model.Token]
	FileStores() Table[model.FileStore]
	Assets() Table[model.Asset]
	Collections() Table[model.Collection]
	Workers() Table[model.Worker]

	// CreateToken makes a token with a fresh secret, returned only here.
	CreateToken(ctx context.Context, tmpl model.Token) (*model.NewToken, error)
	// Authenticate resolves a secret to who it speaks for.
	Authenticate(ctx context.Context, secret string) (*Principal, error)
	// WorkspaceRole is a user's strongest role in a workspace.
	WorkspaceRole(ctx context.Context, userID, workspaceID int64) (model.WorkspaceRole, bool, error)
	// Bootstrap creates the system user, the first admin and the default
	// file store on an empty database.
	Bootstrap(ctx context.Context, adminSecret, fileRoot string) (bool, error)

	AddCollectionItem(ctx context.Context, item *model.CollectionItem, v *Viewer) error
	RemoveCollectionItem(ctx context.Context, collectionID, itemID int64, v *Viewer) error
	ListCollectionItems(ctx context.Context, collectionID int64, q Query) ([]model.CollectionItem, error)

	// Work requests and their lifecycle (lifecycle.go).
	WorkRequests() Table[model.WorkRequest]
	SubmitWorkRequest(ctx context.Context, wr *model.WorkRequest) error
	ClaimWorkRequest(ctx context.Context, workerID int64) (*model.WorkRequest, error)
	CompleteWorkRequest(ctx context.Context, id, workerID int64, c Completion) (*model.WorkRequest, error)
	CompleteAndClaim(ctx context.Context, id, workerID int64, c Completion) (done, next *model.WorkRequest, err error)
	AbortWorkRequest(ctx context.Context, id int64, reason string, v *Viewer) (*model.WorkRequest, error)
	RetryWorkRequest(ctx context.Context, id int64, v *Viewer) (*model.WorkRequest, error)
	SubmitWorkflow(ctx context.Context, root *model.WorkRequest, steps []WorkflowStep) error
	// PendingWork and DueWaits read the queue through its indexes
	// (queue.go), for the scheduler.
	PendingWork(ctx context.Context, tt model.TaskType, limit int) ([]model.WorkRequest, error)
	DueWaits(ctx context.Context, now time.Time, limit int) ([]model.WorkRequest, time.Time, error)
	// OnFinish registers a hook called after commit for every work
	// request this process completes or aborts.
	OnFinish(h FinishHook)
	// OnPending registers a hook called after commit for every work
	// request that becomes pending in this process.
	OnPending(h PendingHook)
	// KeepNotifications makes finishing a work request write its
	// notification in the same transaction; the others claim, deliver
	// and count them from any replica (outbox.go).
	KeepNotifications(encode NotificationEncoder)
	ClaimNotifications(ctx context.Context, owner string, lease time.Duration, limit int) ([]Notification, error)
	DeleteNotification(ctx context.Context, id int64, owner string) (bool, error)
	PostponeNotification(ctx context.Context, id int64, owner string, at time.Time, uncount bool, delivered string) (bool, error)
	PendingNotifications(ctx context.Context) (int64, error)

	// Live logs of running requests, readable through every replica
	// (livelog.go).
	AppendLiveLog(ctx context.Context, id int64, attempt int, offset int64, data []byte) error
	ReadLiveLog(ctx context.Context, id, offset int64, limit int) (data []byte, from int64, running bool, err error)
	DropLiveLog(ctx context.Context, id int64, attempt int) error
	SweepLiveLogs(ctx context.Context) (int64, error)

	// Workers' connection state.
	ConnectWorker(ctx context.Context, id int64, meta model.WorkerMetadata, keep ...int64) (*model.Worker, []int64, error)
	RequeueWorkRequest(ctx context.Context, id, workerID int64, why string) (*model.WorkRequest, error)
	DisconnectWorker(ctx context.Context, id int64) error
	TouchWorker(ctx context.Context, id int64) (connected bool, running []int64, err error)
	RequeueLostWork(ctx context.Context, timeout time.Duration) ([]Revoked, error)

	// Artifacts and the content of their files (artifacts.go).
	Artifacts() Table[model.Artifact]
	DeleteArtifact(ctx context.Context, id int64, v *Viewer) ([]Blob, error)
	DefaultFileStore(ctx context.Context) (*model.FileStore, error)
	CheckCapacity(ctx context.Context, storeID int64, sha string, size int64) error
	AttachFile(ctx context.Context, artifactID int64, filePath string, storeID int64, v *Viewer) error
	// Claims on content across processes (blobclaims.go).
	ClaimBlobUpload(ctx context.Context, storeID int64, sha string) (int64, error)
	ClaimBlobDeletion(ctx context.Context, storeID int64, sha string) (int64, bool, error)
	ReleaseBlobClaim(ctx context.Context, id int64) error
	ExpireBlobClaims(ctx context.Context) ([]Blob, error)
	FileLocation(ctx context.Context, artifactID int64, filePath string, v *Viewer) (*model.ArtifactFile, int64, error)

	WorkflowTemplates() Table[model.WorkflowTemplate]

	// Worker pools and their instances (pools.go, instances.go).
	WorkerPools() Table[model.WorkerPool]
	RemoveWorkerPool(ctx context.Context, id int64, v *Viewer) (*model.WorkerPool, error)
	PoolInstances(ctx context.Context, q InstanceQuery) ([]model.PoolInstance, error)
	// The autoscaler's reads and the steps of an instance's life.
	PoolView(ctx context.Context) (*PoolView, error)
	PendingWorkerRequests(ctx context.Context, arch, backend string, limit int) (int, error)
	StartPoolInstance(ctx context.Context, poolID int64) (*model.PoolInstance, string, error)
	PoolInstanceCreated(ctx context.Context, id int64, providerID string) error
	PoolInstanceConnected(ctx context.Context, id int64, at time.Time) error
	SetPoolInstanceIdle(ctx context.Context, id int64, since *time.Time) error
	RecordPoolInstanceFailure(ctx context.Context, id int64, f InstanceFailure) error
	RetirePoolInstance(ctx context.Context, id int64, reason string, idleFor time.Duration) (bool, error)
	AbandonPoolInstance(ctx context.Context, id int64, reason string) error
	StopPoolInstance(ctx context.Context, id int64, at time.Time, reason string) error
	TouchPoolInstances(ctx context.Context, seen map[int64]time.Time) error
	RecordPoolStatus(ctx context.Context, id int64, u PoolStatusUpdate) error
	FinishPoolDeletion(ctx context.Context, id int64) (bool, error)
	// SessionLock takes a lock held until released or until this process
	// dies (lock.go): one autoscaler per farm.
	SessionLock(ctx context.Context, key int64) (Lock, error)

	// ExpireArtifacts deletes artifacts whose time is up.
	ExpireArtifacts(ctx context.Context, limit int) (*ExpireResult, error)
	// ExpireIncomplete deletes artifacts whose upload was cut.
	ExpireIncomplete(ctx context.Context, grace time.Duration, limit int) (*ExpireResult, error)

	// Self-registered runners (registration.go).
	RegisterWorker(ctx context.Context, name, secretHash string, maxPending int) (*model.Worker, error)
	PendingRegistrations(ctx context.Context) (int, error)

	// Incoming webhook events that started work (deliveries.go).
	RecordDelivery(ctx context.Context, source string, keys []DeliveryKey, window time.Duration) error
	ForgetDelivery(ctx context.Context, source string, keys []DeliveryKey) error

	// The dashboard's lists (browse.go): keyset pages whose cost does not
	// grow with the tables.
	BrowseWorkRequests(ctx context.Context, b Browse) (*Page, error)
	WorkflowChildren(ctx context.Context, parentID int64, v *Viewer) ([]model.WorkRequest, error)
	RunningOn(ctx context.Context, workerIDs []int64, v *Viewer) (map[int64]model.WorkRequest, error)
	BrowseWorkers(ctx context.Context, f WorkerFilter) ([]model.Worker, error)
	WorkerNames(ctx context.Context, ids []int64) (map[int64]string, error)
	Farm(ctx context.Context) (*Farm, error)

	// The rollups behind statistics (rollups.go, rollups_recount.go).
	Rollup(ctx context.Context, q RollupQuery) (*Rollup, error)
	StatusCounts(ctx context.Context, v *Viewer, scopeID int64, workspaceIDs ...int64) ([]StatusCount, error)

	// Dashboard sign-in sessions (sessions.go).
	OpenSession(ctx context.Context, tokenSecret string, lifetime time.Duration) (*Principal, *Session, string, error)
	SessionPrincipal(ctx context.Context, secret string) (*Principal, *Session, error)
	CloseSession(ctx context.Context, secret string) error

	// Snapshot reads the public metrics' figures in one snapshot.
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Fold merges the journal of running-total changes into the totals;
	// a server runs it every few seconds (one process at a time folds).
	Fold(ctx context.Context) (FoldResult, error)
}

var _ Store = (*SQL)(nil)
