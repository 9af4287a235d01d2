// Package model holds kiln's domain types: the nouns of docs/architecture.md#domain-model (scopes,
// workspaces, users, tokens, work requests, workers, artifacts, …) and their
// enumerations. It does no I/O, so every other package — store, api, client,
// scheduler — can share one vocabulary without depending on each other.
//
// Field names and JSON names follow Debusine, the build farm whose metrics
// design kiln implements, so that documentation and scripts carry over.
package model

import (
	"encoding/json"
	"time"
)

// Scope is the top-level namespace (a distribution, a team). Scope names are
// public: they label the metrics of the public endpoint.
type Scope struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"created_at"`
}

// Workspace groups artifacts, collections and work inside a scope. A
// workspace that is not public is visible only to its members and admins;
// its name never appears in public metrics.
type Workspace struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	ScopeID int64  `json:"scope"`
	Public  bool   `json:"public"`
	// ExpirationDelay, when set, is how long artifacts in the workspace are
	// kept before `kiln expire` may delete them.
	ExpirationDelay *Duration `json:"expiration_delay"`
	CreatedAt       time.Time `json:"created_at"`
}

// User is a person (or the internal system user) who owns tokens and creates
// work.
type User struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
	Email    string `json:"email"`
	Active   bool   `json:"active"`
	IsAdmin  bool   `json:"is_admin"`
	// System marks kiln's internal user, which public metrics leave out.
	System    bool      `json:"system"`
	CreatedAt time.Time `json:"created_at"`
}

// Identity links a user to an account at an SSO issuer. Only the issuer is
// ever published; the subject is private.
type Identity struct {
	ID        int64     `json:"id"`
	UserID    int64     `json:"user"`
	Issuer    string    `json:"issuer"`
	Subject   string    `json:"subject"`
	CreatedAt time.Time `json:"created_at"`
}

// Group is a set of users inside a scope; workspace membership is granted to
// users and to groups alike. Ephemeral groups are created by automation and
// expire with it.
type Group struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	ScopeID   int64     `json:"scope"`
	Ephemeral bool      `json:"ephemeral"`
	Members   []int64   `json:"members"`
	CreatedAt time.Time `json:"created_at"`
}

// WorkspaceRole is what a member may do in a private workspace.
type WorkspaceRole string

// Workspace roles, weakest first.
const (
	RoleViewer      WorkspaceRole = "viewer"
	RoleContributor WorkspaceRole = "contributor"
	RoleOwner       WorkspaceRole = "owner"
)

// ValidWorkspaceRole reports whether r is one of the known roles.
func ValidWorkspaceRole(r WorkspaceRole) bool {
	return r == RoleViewer || r == RoleContributor || r == RoleOwner
}

// WorkspaceMember grants a user or a group (exactly one of them) a role in a
// workspace.
type WorkspaceMember struct {
	ID          int64         `json:"id"`
	WorkspaceID int64         `json:"workspace"`
	UserID      *int64        `json:"user"`
	GroupID     *int64        `json:"group"`
	Role        WorkspaceRole `json:"role"`
}

// Token authenticates an API client, a runner or both. Only the SHA-256 of
// the secret is stored; the secret itself is shown once, at creation.
type Token struct {
	ID int64 `json:"id"`
	// Hash is the hex SHA-256 of the secret; it never leaves the server.
	Hash    string `json:"-"`
	Prefix  string `json:"prefix"`
	Comment string `json:"comment"`
	Enabled bool   `json:"enabled"`
	UserID  *int64 `json:"user"`
	// WorkerID is set when the token belongs to a runner.
	WorkerID *int64 `json:"worker"`
	// ScopeID restricts what the token can see to one scope.
	ScopeID    *int64     `json:"scope"`
	LastSeenAt *time.Time `json:"last_seen_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	CreatedAt  time.Time  `json:"created_at"`
}

// NewToken is a token as returned once at creation, with its secret.
type NewToken struct {
	Token
	Secret string `json:"secret"`
}

// FileStoreBackend says where a file store keeps its bytes.
type FileStoreBackend string

// File store backends.
const (
	BackendLocal FileStoreBackend = "Local"
	BackendS3    FileStoreBackend = "S3"
)

// FileStore is a place where artifact files live. TotalSize is the sum of
// the sizes of the files it holds, kept exact in the same transaction as
// every upload and deletion; MaxSize, when set, is enforced. New content
// goes to the Default store (one at most); files already stored stay
// where they are.
type FileStore struct {
	ID            int64            `json:"id"`
	Name          string           `json:"name"`
	Backend       FileStoreBackend `json:"backend"`
	Configuration json.RawMessage  `json:"configuration"`
	TotalSize     int64            `json:"total_size"`
	MaxSize       *int64           `json:"max_size"`
	Default       bool             `json:"default"`
	CreatedAt     time.Time        `json:"created_at"`
}

// Artifact is a typed bundle of files produced or consumed by work.
type Artifact struct {
	ID            int64           `json:"id"`
	Category      string          `json:"category"`
	WorkspaceID   int64           `json:"workspace"`
	Data          json.RawMessage `json:"data"`
	CreatedBy     *int64          `json:"created_by"`
	WorkRequestID *int64          `json:"created_by_work_request"`
	ExpireAt      *time.Time      `json:"expire_at"`
	Files         []ArtifactFile  `json:"files"`
	CreatedAt     time.Time       `json:"created_at"`
}

// ArtifactFile is one named file of an artifact. Complete is false until its
// bytes have been uploaded and checked against SHA256.
type ArtifactFile struct {
	Path     string `json:"path"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Complete bool   `json:"complete"`
}

// Asset is a long-lived, typed object that is not a file bundle, such as a
// signing key reference.
type Asset struct {
	ID          int64           `json:"id"`
	Category    string          `json:"category"`
	WorkspaceID int64           `json:"workspace"`
	Data        json.RawMessage `json:"data"`
	CreatedBy   *int64          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
}

// Collection is a named, typed set of items (artifacts or bare data), such
// as a suite of a distribution.
type Collection struct {
	ID          int64           `json:"id"`
	Category    string          `json:"category"`
	Name        string          `json:"name"`
	WorkspaceID int64           `json:"workspace"`
	Data        json.RawMessage `json:"data"`
	ItemCount   int64           `json:"item_count"`
	CreatedAt   time.Time       `json:"created_at"`
}

// CollectionItem is one member of a collection, optionally pointing to an
// artifact.
type CollectionItem struct {
	ID           int64           `json:"id"`
	CollectionID int64           `json:"collection"`
	Name         string          `json:"name"`
	Category     string          `json:"category"`
	ArtifactID   *int64          `json:"artifact"`
	Data         json.RawMessage `json:"data"`
	CreatedAt    time.Time       `json:"created_at"`
}
