package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRecountAfterRandomMix drives a random mix of creates, updates, status
// changes and deletes — some of them failing half-way and rolled back — and
// then checks that every running total equals its GROUP BY recount.
func TestRecountAfterRandomMix(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		seed := time.Now().UnixNano()
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewSource(seed))
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { clock = clock.Add(time.Duration(rng.Intn(5000)) * time.Millisecond); return clock })
		if _, err := s.Bootstrap(ctx, "kiln_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		fs, err := s.DefaultFileStore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		limit := int64(5000)
		if _, err := s.FileStores().Update(ctx, fs.ID, nil, func(f *model.FileStore) error { f.MaxSize = &limit; return nil }); err != nil {
			t.Fatal(err)
		}
		r := newRandomFarm(t, s, rng)
		for i := 0; i < 400 && !r.broken; i++ {
			r.step(ctx)
		}
		diffs, err := s.CheckTotals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diffs {
			t.Error(d)
		}
		t.Logf("%d operations, %d failed as expected", r.ops, r.failed)
		snap, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, c := range snap.Totals {
			seen[c.Family] = true
		}
		// running-total rows stay once created: the mix must have reached
		// every family at some point, or it proves little
		for _, fam := range []string{"workspaces", "users", "user_identities", "groups", "tokens", "assets", "collections",
			"collection_sizes", "workflow_templates", "artifacts", "artifact_file_size", "artifact_file_counts",
			"artifact_file_sizes", "work_requests", "task_execution_times", "workers"} {
			if !seen[fam] {
				t.Errorf("the random mix never produced %s", fam)
			}
		}

		// Folding the journal changes no figure.
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		if n := journalRows(t, s); n != 0 {
			t.Fatalf("%d journal rows left after FoldAll", n)
		}
		if diffs, err := s.CheckTotals(ctx); err != nil || len(diffs) != 0 {
			t.Fatalf("after folding: %v %v", diffs, err)
		}

		// Damage a total, see it reported and fixed.
		if _, err := s.db.ExecContext(ctx, "UPDATE metric_totals SET value = value + 7 WHERE family = 'work_requests'"); err != nil {
			t.Fatal(err)
		}
		if diffs, _ := s.CheckTotals(ctx); len(diffs) == 0 {
			t.Fatal("a damaged total was not reported")
		}
		if fixed, err := s.FixTotals(ctx); err != nil || len(fixed) == 0 {
			t.Fatalf("fix: %v %v", fixed, err)
		}
		if diffs, _ := s.CheckTotals(ctx); len(diffs) != 0 {
			t.Fatalf("still different after fix: %v", diffs)
		}
		if _, err := s.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		if diffs, _ := s.CheckTotals(ctx); len(diffs) != 0 {
			t.Fatalf("different after folding the fix: %v", diffs)
		}
	})
}

// journalRows counts the journal rows not yet folded.
func journalRows(t testing.TB, s *SQL) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow("SELECT COUNT(*) FROM metric_journal").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type randomFarm struct {
	t      *testing.T
	s      *SQL
	rng    *rand.Rand
	scopes []int64
	wss    []int64
	users  []int64
	wrs    []int64
	arts   []int64
	colls  []int64
	work   []int64 // workers
	ops    int
	failed int
	// faults accepts the errors of injected faults (SQL.hook) as expected
	faults bool
	// broken is set by an unexpected error; the caller stops stepping
	broken bool
}

func newRandomFarm(t *testing.T, s *SQL, rng *rand.Rand) *randomFarm {
	return &randomFarm{t: t, s: s, rng: rng}
}

func (f *randomFarm) pick(ids []int64) int64 {
	if len(ids) == 0 {
		return 999999
	}
	return ids[f.rng.Intn(len(ids))]
}

func (f *randomFarm) check(err error) {
	f.ops++
	if err == nil {
		return
	}
	var fe *FieldError
	if errors.As(err, &fe) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoWork) || errors.Is(err, errRollback) ||
		f.faults && strings.Contains(err.Error(), "fault injected") {
		f.failed++
		return
	}
	// Errorf, not Fatalf: farms also step in goroutines of their own
	f.t.Errorf("unexpected error: %v", err)
	f.broken = true
}

var errRollback = errors.New("deliberate rollback")

func (f *randomFarm) step(ctx context.Context) {
	s, rng := f.s, f.rng
	archs := []string{"amd64", "arm64", "i386", "hurd-i386"}
	switch op := rng.Intn(20); op {
	case 0:
		sc := &model.Scope{Name: fmt.Sprintf("scope%d", rng.Intn(4))}
		err := s.Scopes().Create(ctx, sc)
		if err == nil {
			f.scopes = append(f.scopes, sc.ID)
		}
		f.check(err)
	case 1:
		ws := &model.Workspace{Name: fmt.Sprintf("ws%d", rng.Intn(8)), ScopeID: f.pick(f.scopes), Public: rng.Intn(2) == 0}
		if rng.Intn(3) == 0 {
			d := model.Duration(time.Hour)
			ws.ExpirationDelay = &d
		}
		err := s.Workspaces().Create(ctx, ws)
		if err == nil {
			f.wss = append(f.wss, ws.ID)
		}
		f.check(err)
	case 2:
		u := &model.User{Username: fmt.Sprintf("user%d", rng.Intn(10)), Active: rng.Intn(4) > 0}
		err := s.Users().Create(ctx, u)
		if err == nil {
			f.users = append(f.users, u.ID)
			f.check(s.Identities().Create(ctx, &model.Identity{UserID: u.ID, Issuer: archs[rng.Intn(2)] + ".example", Subject: fmt.Sprint(rng.Int())}))
		}
		f.check(err)
	case 3:
		_, err := s.Users().Update(ctx, f.pick(f.users), nil, func(u *model.User) error { u.Active = !u.Active; return nil })
		f.check(err)
	case 4:
		u := f.pick(f.users)
		_, err := s.CreateToken(ctx, model.Token{UserID: &u, Enabled: rng.Intn(2) == 0})
		f.check(err)
	case 5:
		w := &model.Worker{Name: fmt.Sprintf("worker%d", rng.Intn(6)), WorkerType: model.WorkerExternal, Enabled: true,
			Metadata: model.WorkerMetadata{Architectures: archs[:1+rng.Intn(len(archs))], HostArchitecture: "amd64", Backends: []string{"host"}}}
		err := s.Workers().Create(ctx, w)
		if err == nil {
			f.work = append(f.work, w.ID)
			_, _, err = s.ConnectWorker(ctx, w.ID, w.Metadata)
		}
		f.check(err)
	case 6, 7, 8:
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: []string{"sbuild", "noop"}[rng.Intn(2)], WorkspaceID: f.pick(f.wss),
			Data: json.RawMessage(fmt.Sprintf(`{"host_architecture": %q}`, archs[rng.Intn(len(archs))])), MaxRetries: 1}
		if rng.Intn(3) == 0 && len(f.wrs) > 0 {
			wr.Dependencies = []int64{f.pick(f.wrs)}
		}
		if rng.Intn(5) == 0 {
			wr.TaskType, wr.TaskName, wr.Data = model.TaskWorkflow, "matrix", nil
			u := f.pick(f.users)
			wr.CreatedBy = &u
		}
		err := s.SubmitWorkRequest(ctx, wr)
		if err == nil {
			f.wrs = append(f.wrs, wr.ID)
		}
		f.check(err)
	case 9, 10:
		w := f.pick(f.work)
		wr, err := s.ClaimWorkRequest(ctx, w)
		f.check(err)
		if err == nil && rng.Intn(3) > 0 {
			res := []model.Result{model.ResultSuccess, model.ResultFailure, model.ResultError}[rng.Intn(3)]
			_, err = s.CompleteWorkRequest(ctx, wr.ID, w, Completion{Result: res, Statistics: &model.RuntimeStatistics{Duration: rng.Float64() * 100}})
			f.check(err)
		}
	case 11:
		_, err := s.AbortWorkRequest(ctx, f.pick(f.wrs), "test", nil)
		f.check(err)
	case 12:
		_, err := s.RetryWorkRequest(ctx, f.pick(f.wrs), nil)
		f.check(err)
	case 13:
		if w := f.pick(f.work); rng.Intn(2) == 0 {
			f.check(s.DisconnectWorker(ctx, w))
		} else {
			_, err := s.RequeueLostWork(ctx, 0)
			f.check(err)
		}
	case 14:
		n := rng.Intn(4)
		a := &model.Artifact{Category: []string{"debian:binary-package", "kiln:work-request-debug-logs"}[rng.Intn(2)], WorkspaceID: f.pick(f.wss)}
		for i := 0; i < n; i++ {
			a.Files = append(a.Files, model.ArtifactFile{Path: fmt.Sprintf("f%d", i), SHA256: fmt.Sprintf("%064x", rng.Intn(20)), Size: int64(rng.Intn(3000))})
		}
		err := s.Artifacts().Create(ctx, a)
		if err == nil {
			f.arts = append(f.arts, a.ID)
			fs, _ := s.DefaultFileStore(ctx)
			for _, file := range a.Files {
				f.check(s.AttachFile(ctx, a.ID, file.Path, fs.ID, nil)) // may exceed max_size
			}
		}
		f.check(err)
	case 15:
		_, err := s.DeleteArtifact(ctx, f.pick(f.arts), nil)
		f.check(err)
	case 16:
		c := &model.Collection{Category: "debian:suite", Name: fmt.Sprintf("c%d", rng.Intn(5)), WorkspaceID: f.pick(f.wss)}
		err := s.Collections().Create(ctx, c)
		if err == nil {
			f.colls = append(f.colls, c.ID)
		}
		f.check(err)
		f.check(s.AddCollectionItem(ctx, &model.CollectionItem{CollectionID: f.pick(f.colls), Name: fmt.Sprintf("i%d", rng.Intn(30)), Category: "debian:package"}, nil))
	case 17:
		f.check(s.Assets().Create(ctx, &model.Asset{Category: "debusine:signing-key", WorkspaceID: f.pick(f.wss)}))
		f.check(s.Groups().Create(ctx, &model.Group{Name: fmt.Sprintf("g%d", rng.Intn(5)), ScopeID: f.pick(f.scopes), Ephemeral: rng.Intn(2) == 0}))
		f.check(s.WorkflowTemplates().Create(ctx, &model.WorkflowTemplate{Name: fmt.Sprintf("t%d", rng.Intn(5)), TaskName: "matrix", WorkspaceID: f.pick(f.wss)}))
	case 18:
		// a transaction that writes rows and totals, then fails: nothing
		// of it may remain
		f.check(s.inTx(ctx, func(t *tx) error {
			wr := &model.WorkRequest{TaskType: model.TaskServer, TaskName: "noop", WorkspaceID: f.pick(f.wss)}
			if err := s.submit(ctx, t, wr); err != nil {
				return err
			}
			return errRollback
		}))
		_, err := s.Workspaces().Update(ctx, f.pick(f.wss), nil, func(w *model.Workspace) error {
			w.Public = !w.Public
			return errRollback
		})
		f.check(err)
	case 19:
		_, err := s.Workspaces().Update(ctx, f.pick(f.wss), nil, func(w *model.Workspace) error { w.Public = !w.Public; return nil })
		f.check(err)
		f.check(s.Users().Delete(ctx, f.pick(f.users), nil))
	}
}
