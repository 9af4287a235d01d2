package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/kiln-build/kiln/internal/blobs"
	"github.com/kiln-build/kiln/internal/store"
)

// DefaultIncompleteArtifactGrace is how long an artifact may miss the
// content of a file before the server removes it: far longer than any
// upload takes (a stalled one is cut after --transfer-idle-timeout), so
// that only artifacts nothing will ever finish go.
const DefaultIncompleteArtifactGrace = 24 * time.Hour

// removeIncomplete removes, every interval until ctx ends, the artifacts
// whose upload was cut by a runner or server killed mid-upload and that
// are older than grace (issue 13): through the store's delete path, so
// that every running total follows, their uploaded content deleted
// through the blobs manager's rules. What the cut upload itself left in
// the file store is the blobs sweeper's (RunSweeper). Every replica runs
// it; the store's one-transaction-per-artifact deletes make that
// harmless.
func removeIncomplete(ctx context.Context, st store.Store, mgr *blobs.Manager, grace, every time.Duration, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		res, err := st.ExpireIncomplete(ctx, grace, 0)
		if res != nil && res.Artifacts > 0 {
			mgr.Remove(context.WithoutCancel(ctx), res.Released...)
			logger.Info("removed incomplete artifacts: their upload was cut and nothing finished it", "artifacts", res.Artifacts,
				"files_released", len(res.Released), "grace", grace.String())
		}
		if err != nil && ctx.Err() == nil {
			logger.Warn("removing incomplete artifacts", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
