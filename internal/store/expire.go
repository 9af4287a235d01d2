package store

import (
	"context"
	"errors"
	"time"
)

// ExpireResult says what one expiry pass removed.
type ExpireResult struct {
	Artifacts int
	// Released is content no artifact uses any more; the caller deletes
	// it from its file stores.
	Released []Blob
	// Kept counts expired artifacts kept because a collection still
	// holds them.
	Kept int
}

// ExpireArtifacts deletes artifacts whose time is up: those with an
// expire_at in the past, and those older than their workspace's
// expiration_delay. Artifacts still in a collection are kept (and counted).
// Each artifact goes in its own transaction with its running totals and
// file store accounting, so an interrupted pass loses nothing and a second
// pass finishes the work. At most limit artifacts are deleted (0: no
// limit).
func (s *SQL) ExpireArtifacts(ctx context.Context, limit int) (*ExpireResult, error) {
	now := toMicros(s.now())
	ids, err := s.expiredArtifacts(ctx, now)
	if err != nil {
		return nil, err
	}
	return s.deleteArtifacts(ctx, ids, limit)
}

// deleteArtifacts deletes artifacts one transaction each, through
// DeleteArtifact (rows, running totals and file store accounting
// together), keeping those a collection holds and skipping those deleted
// meanwhile, at most limit of them (0: no limit).
func (s *SQL) deleteArtifacts(ctx context.Context, ids []int64, limit int) (*ExpireResult, error) {
	res := &ExpireResult{}
	for _, id := range ids {
		if limit > 0 && res.Artifacts >= limit {
			break
		}
		released, err := s.DeleteArtifact(ctx, id, nil)
		var fe *FieldError
		switch {
		case errors.As(err, &fe) && fe.Kind == Conflict:
			res.Kept++
			continue
		case errors.Is(err, ErrNotFound):
			continue // deleted meanwhile
		case err != nil:
			return res, err
		}
		res.Artifacts++
		res.Released = append(res.Released, released...)
	}
	return res, nil
}

func (s *SQL) expiredArtifacts(ctx context.Context, now int64) ([]int64, error) {
	var out []int64
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		out, err = t.ids(ctx, `SELECT a.id FROM artifacts a JOIN workspaces w ON w.id = a.workspace_id
			WHERE (a.expire_at IS NOT NULL AND a.expire_at < $1)
			   OR (a.expire_at IS NULL AND w.expiration_delay IS NOT NULL AND a.created_at + w.expiration_delay < $1)
			ORDER BY a.id`, now)
		return err
	})
	return out, err
}

// ExpiredArtifacts lists, in id order, the artifacts ExpireArtifacts would
// now consider: past their expire_at or their workspace's expiration delay
// (those a collection holds included; ExpireArtifacts keeps them). It
// changes nothing, for dry runs.
func (s *SQL) ExpiredArtifacts(ctx context.Context) ([]int64, error) {
	return s.expiredArtifacts(ctx, toMicros(s.now()))
}

// ExpireIncomplete deletes the artifacts that, grace after they were
// created, still miss the content of a file: an upload cut by a crash of
// its runner or of the server, which nothing would ever finish. Artifacts
// of a work request that still runs are left to it. Content already
// uploaded is released, and every running total follows, through the same
// path as ExpireArtifacts; at most limit artifacts go (0: no limit).
func (s *SQL) ExpireIncomplete(ctx context.Context, grace time.Duration, limit int) (*ExpireResult, error) {
	ids, err := s.IncompleteArtifacts(ctx, grace)
	if err != nil {
		return nil, err
	}
	return s.deleteArtifacts(ctx, ids, limit)
}

// IncompleteArtifacts lists, in id order, the artifacts ExpireIncomplete
// would now delete. It changes nothing, for dry runs.
func (s *SQL) IncompleteArtifacts(ctx context.Context, grace time.Duration) ([]int64, error) {
	before := toMicros(s.now().Add(-grace))
	var out []int64
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		// driven by the index of missing content, which holds only the
		// few files being uploaded
		out, err = t.ids(ctx, `SELECT DISTINCT a.id FROM artifact_files f JOIN artifacts a ON a.id = f.artifact_id
			WHERE f.file_id IS NULL AND a.created_at < $1
			  AND NOT EXISTS (SELECT 1 FROM work_requests w WHERE w.id = a.work_request_id AND w.status = 'running')
			ORDER BY a.id`, before)
		return err
	})
	return out, err
}
