package store

import (
	"context"

	"github.com/kiln-build/kiln/internal/model"
)

// RegisteredTokenPrefix is the prefix of the tokens of self-registered
// runners: their secret never reaches the server (only its hash), so the
// prefix says where the token came from instead.
const RegisteredTokenPrefix = "runner"

// RegisterWorker records, in one transaction, a runner that registered
// itself: a disabled external worker named name and its token, whose hash
// the runner chose. Nothing runs on it until an admin enables it. With
// maxPending > 0 it fails with a Conflict when that many self-registered
// workers already wait for an admin (PendingRegistrations), so that
// anonymous callers cannot fill the worker list; registrations are
// serialised so that replicas cannot overshoot the cap together.
func (s *SQL) RegisterWorker(ctx context.Context, name, secretHash string, maxPending int) (*model.Worker, error) {
	var out *model.Worker
	err := s.inTx(ctx, func(t *tx) error {
		if s.dialect == Postgres {
			if _, err := t.exec(ctx, "SELECT pg_advisory_xact_lock($1)", registrationLockKey); err != nil {
				return err
			}
		}
		if maxPending > 0 {
			n, err := t.pendingRegistrations(ctx)
			if err != nil {
				return err
			}
			if n >= maxPending {
				return conflict("", "%d self-registered runners already wait for an admin to enable or delete them (the server's limit is %d): try again later, or ask an admin for a runner token", n, maxPending)
			}
		}
		w := &model.Worker{Name: name, WorkerType: model.WorkerExternal, Enabled: false}
		if err := s.workers().create(ctx, t, w); err != nil {
			return err
		}
		tok := &model.Token{Hash: secretHash, Prefix: RegisteredTokenPrefix, Enabled: true, WorkerID: &w.ID,
			Comment: "registered by runner " + name}
		if err := (&table[model.Token]{s, s.defs.tokens}).create(ctx, t, tok); err != nil {
			return err
		}
		out = w
		return nil
	})
	return out, err
}

// PendingRegistrations counts the self-registered workers that wait for an
// admin: disabled external workers whose token the runner registered.
func (s *SQL) PendingRegistrations(ctx context.Context) (int, error) {
	var n int
	err := s.readTx(ctx, func(t *tx) error {
		var err error
		n, err = t.pendingRegistrations(ctx)
		return err
	})
	return n, err
}

func (t *tx) pendingRegistrations(ctx context.Context) (int, error) {
	var n int
	err := t.queryRow(ctx, `SELECT COUNT(*) FROM workers w WHERE NOT w.enabled AND w.worker_type = $1
		AND EXISTS (SELECT 1 FROM tokens k WHERE k.worker_id = w.id AND k.prefix = $2)`,
		string(model.WorkerExternal), RegisteredTokenPrefix).Scan(&n)
	return n, err
}
