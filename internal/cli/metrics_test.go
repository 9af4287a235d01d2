package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestMetricsRecount runs `kiln metrics recount` on both databases: clean
// totals exit 0, whether their changes are folded or still in the journal;
// a damaged total is reported with a non-zero exit; --fix repairs it and
// folds the journal.
func TestMetricsRecount(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Bootstrap(ctx, "kiln_recount_test", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		sc := &model.Scope{Name: "debian"}
		if err := st.Scopes().Create(ctx, sc); err != nil {
			t.Fatal(err)
		}
		ws := &model.Workspace{Name: "main", ScopeID: sc.ID}
		if err := st.Workspaces().Create(ctx, ws); err != nil {
			t.Fatal(err)
		}
		if err := st.SubmitWorkRequest(ctx, &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: ws.ID,
			Data: []byte(`{"host_architecture": "amd64"}`)}); err != nil {
			t.Fatal(err)
		}
		run := func(args ...string) (int, string) {
			var out, errb bytes.Buffer
			code := Main(ctx, append([]string{"metrics", "recount", "--database", dsn}, args...), &out, &errb)
			return code, out.String() + errb.String()
		}
		journal := func() (n int) {
			if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM metric_journal").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if journal() == 0 {
			t.Fatal("nothing in the journal: the first check proves less")
		}
		if code, out := run(); code != ExitOK || !strings.Contains(out, "agree") {
			t.Fatalf("clean database, changes not folded yet: exit %d\n%s", code, out)
		}
		if _, err := st.FoldAll(ctx); err != nil {
			t.Fatal(err)
		}
		if code, out := run(); code != ExitOK || !strings.Contains(out, "agree") {
			t.Fatalf("clean database, folded: exit %d\n%s", code, out)
		}
		if _, err := st.DB().ExecContext(ctx, "UPDATE metric_totals SET value = value + 2 WHERE family = 'workspaces'"); err != nil {
			t.Fatal(err)
		}
		code, out := run()
		if code == ExitOK || !strings.Contains(out, "workspaces") || !strings.Contains(out, "running total 3, recount 1") {
			t.Fatalf("damaged total: exit %d\n%s", code, out)
		}
		if code, out := run("--fix"); code != ExitOK || !strings.Contains(out, "fixed 1 running totals and 0 rollups") {
			t.Fatalf("--fix: exit %d\n%s", code, out)
		}
		if n := journal(); n != 0 {
			t.Errorf("--fix left %d rows in the journal", n)
		}
		if code, out := run(); code != ExitOK {
			t.Fatalf("after --fix: exit %d\n%s", code, out)
		}
		// a rollup of the dashboard lost: found, and fixed
		if _, err := st.DB().ExecContext(ctx, "DELETE FROM statistics_totals WHERE family = 'requests_by_status'"); err != nil {
			t.Fatal(err)
		}
		code, out = run()
		if code == ExitOK || !strings.Contains(out, "requests_by_status") || !strings.Contains(out, "running total 0, recount 1") {
			t.Fatalf("damaged rollup: exit %d\n%s", code, out)
		}
		if code, out := run("--fix"); code != ExitOK || !strings.Contains(out, "fixed 0 running totals and 1 rollups") {
			t.Fatalf("--fix of a rollup: exit %d\n%s", code, out)
		}
		if code, out := run(); code != ExitOK {
			t.Fatalf("after --fix of a rollup: exit %d\n%s", code, out)
		}
	})
}
