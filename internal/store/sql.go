package store

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/kiln-build/kiln/internal/model"
)

// defs holds the table definitions of one store.
type defs struct {
	scopes            *tableDef[model.Scope]
	workspaces        *tableDef[model.Workspace]
	users             *tableDef[model.User]
	identities        *tableDef[model.Identity]
	groups            *tableDef[model.Group]
	workspaceMembers  *tableDef[model.WorkspaceMember]
	tokens            *tableDef[model.Token]
	fileStores        *tableDef[model.FileStore]
	assets            *tableDef[model.Asset]
	collections       *tableDef[model.Collection]
	workers           *tableDef[model.Worker]
	workRequests      *tableDef[model.WorkRequest]
	artifacts         *tableDef[model.Artifact]
	workflowTemplates *tableDef[model.WorkflowTemplate]
	workerPools       *tableDef[model.WorkerPool]
}

func newDefs() defs {
	return defs{
		scopes: scopeDef(), workspaces: workspaceDef(), users: userDef(), identities: identityDef(),
		groups: groupDef(), workspaceMembers: workspaceMemberDef(), tokens: tokenDef(),
		fileStores: fileStoreDef(), assets: assetDef(), collections: collectionDef(), workers: workerDef(),
		workRequests: workRequestDef(), artifacts: artifactDef(),
		workflowTemplates: workflowTemplateDef(), workerPools: workerPoolDef(),
	}
}

func (s *SQL) scopesT() *table[model.Scope] { return &table[model.Scope]{s, s.defs.scopes} }
func (s *SQL) workspacesT() *table[model.Workspace] {
	return &table[model.Workspace]{s, s.defs.workspaces}
}
func (s *SQL) collections() *table[model.Collection] {
	return &table[model.Collection]{s, s.defs.collections}
}
func (s *SQL) workers() *table[model.Worker] { return &table[model.Worker]{s, s.defs.workers} }

// Scopes is the scope table.
func (s *SQL) Scopes() Table[model.Scope] { return s.scopesT() }

// Workspaces is the workspace table; lists and gets honour visibility.
func (s *SQL) Workspaces() Table[model.Workspace] { return s.workspacesT() }

// Users is the user table.
func (s *SQL) Users() Table[model.User] { return &table[model.User]{s, s.defs.users} }

// Identities is the SSO identity table.
func (s *SQL) Identities() Table[model.Identity] { return &table[model.Identity]{s, s.defs.identities} }

// Groups is the group table; members are written with the group.
func (s *SQL) Groups() Table[model.Group] { return &table[model.Group]{s, s.defs.groups} }

// WorkspaceMembers grants users and groups roles in workspaces.
func (s *SQL) WorkspaceMembers() Table[model.WorkspaceMember] {
	return &table[model.WorkspaceMember]{s, s.defs.workspaceMembers}
}

// Tokens is the token table. Create tokens with CreateToken, which makes the
// secret; Create on this table is for tokens whose hash is already known.
func (s *SQL) Tokens() Table[model.Token] { return &table[model.Token]{s, s.defs.tokens} }

// FileStores is the file store table; total_size is read-only.
func (s *SQL) FileStores() Table[model.FileStore] {
	return &table[model.FileStore]{s, s.defs.fileStores}
}

// Assets is the asset table.
func (s *SQL) Assets() Table[model.Asset] { return &table[model.Asset]{s, s.defs.assets} }

// Collections is the collection table; items change through
// AddCollectionItem and RemoveCollectionItem.
func (s *SQL) Collections() Table[model.Collection] { return s.collections() }

// Workers is the worker table.
func (s *SQL) Workers() Table[model.Worker] { return s.workers() }

// WorkspaceRole returns the strongest role a user holds in a workspace,
// directly or through a group, and false when the user is no member.
func (s *SQL) WorkspaceRole(ctx context.Context, userID, workspaceID int64) (model.WorkspaceRole, bool, error) {
	var best model.WorkspaceRole
	rank := map[model.WorkspaceRole]int{model.RoleViewer: 1, model.RoleContributor: 2, model.RoleOwner: 3}
	rows, err := s.db.QueryContext(ctx, `SELECT role FROM workspace_members WHERE workspace_id = $1 AND (user_id = $2
		OR group_id IN (SELECT group_id FROM group_members WHERE user_id = $2))`, workspaceID, userID)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return "", false, err
		}
		if rank[model.WorkspaceRole(r)] > rank[best] {
			best = model.WorkspaceRole(r)
		}
	}
	return best, best != "", rows.Err()
}

// SystemUsername is kiln's internal user, owner of work the server creates
// by itself. Public metrics leave it out.
const SystemUsername = "_kiln"

// AdminUsername is the first admin, created on an empty database.
const AdminUsername = "admin"

// Bootstrap prepares an empty database: the internal system user, the first
// admin with a token whose secret is the given one, and a default local file
// store rooted at fileRoot. It returns false, and changes nothing, when the
// database already has an admin.
func (s *SQL) Bootstrap(ctx context.Context, adminSecret, fileRoot string) (bool, error) {
	created := false
	err := s.inTx(ctx, func(t *tx) error {
		if s.dialect == Postgres {
			if _, err := t.exec(ctx, "SELECT pg_advisory_xact_lock($1)", bootstrapLockID); err != nil {
				return err
			}
		}
		ok, err := t.exists(ctx, "SELECT 1 FROM users WHERE is_admin AND NOT is_system LIMIT 1")
		if err != nil || ok {
			return err
		}
		users := &table[model.User]{s, s.defs.users}
		if err := users.create(ctx, t, &model.User{Username: SystemUsername, Active: true, System: true}); err != nil {
			// only "already exists" is expected here
			if fe := (*FieldError)(nil); !errors.As(err, &fe) || fe.Kind != Conflict {
				return fmt.Errorf("create system user: %w", err)
			}
		}
		admin := &model.User{Username: AdminUsername, Active: true, IsAdmin: true}
		if err := users.create(ctx, t, admin); err != nil {
			return fmt.Errorf("create admin user: %w", err)
		}
		if _, err := s.createTokenTx(ctx, t, model.Token{UserID: &admin.ID, Enabled: true, Comment: "bootstrap admin token"}, adminSecret); err != nil {
			return err
		}
		if fileRoot != "" {
			if ok, err := t.exists(ctx, "SELECT 1 FROM file_stores LIMIT 1"); err != nil || ok {
				return err
			}
			conf := fmt.Sprintf(`{"base_directory": %q}`, fileRoot)
			fs := &model.FileStore{Name: "default", Backend: model.BackendLocal, Configuration: []byte(conf), Default: true}
			if err := (&table[model.FileStore]{s, s.defs.fileStores}).create(ctx, t, fs); err != nil {
				return err
			}
			if err := os.MkdirAll(fileRoot, 0o750); err != nil {
				return fmt.Errorf("create file store directory: %w", err)
			}
		}
		created = true
		return nil
	})
	return created, err
}
