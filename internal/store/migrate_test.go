package store

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/kiln-build/kiln/internal/testdb"
)

func openMigrated(t *testing.T, dsn string) *SQL {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appliedVersions lists goose's record of applied versions, in order,
// with repeats: each must appear once.
func appliedVersions(t *testing.T, s *SQL) []int64 {
	t.Helper()
	var got []int64
	err := s.readTx(context.Background(), func(t *tx) error {
		var err error
		got, err = t.ids(context.Background(), "SELECT version_id FROM "+goose.DefaultTablename+" WHERE is_applied ORDER BY version_id")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// shippedVersions lists 0 and the version of every embedded migration.
func shippedVersions(t *testing.T) []int64 {
	t.Helper()
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{0}
	for _, n := range names {
		v, err := goose.NumericComponent(n)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
	}
	return want
}

// Statements that the earlier runner cut apart at a semicolon ending a
// line — a string literal, a trigger body — run whole between goose's
// StatementBegin and StatementEnd, on both databases.
func TestMigrateProceduralCode(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := openMigrated(t, dsn)
		trigger := `-- +goose StatementBegin
CREATE TRIGGER migrate_notes_words AFTER INSERT ON migrate_notes
BEGIN
    UPDATE migrate_notes SET words = 2 WHERE id = NEW.id;
END;
-- +goose StatementEnd
`
		if s.Dialect() == Postgres {
			trigger = `-- +goose StatementBegin
CREATE FUNCTION migrate_notes_words() RETURNS trigger AS $$
BEGIN
    NEW.words := 2;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER migrate_notes_words BEFORE INSERT ON migrate_notes
    FOR EACH ROW EXECUTE FUNCTION migrate_notes_words();
`
		}
		fsys := fstest.MapFS{}
		sub, _ := fs.Sub(migrationFiles, "migrations")
		names, _ := fs.Glob(sub, "*.sql")
		for _, n := range names {
			body, _ := fs.ReadFile(sub, n)
			fsys[n] = &fstest.MapFile{Data: body}
		}
		fsys["9000_procedural.sql"] = &fstest.MapFile{Data: []byte(`-- +goose Up
CREATE TABLE migrate_notes (id @ID@, body TEXT NOT NULL, words BIGINT NOT NULL DEFAULT 0);
` + trigger + `
-- +goose StatementBegin
INSERT INTO migrate_notes (body) VALUES ('one;
two');
-- +goose StatementEnd
`)}
		if err := s.migrateFrom(ctx, fsys); err != nil {
			t.Fatal(err)
		}
		var body string
		var words int64
		err := s.db.QueryRowContext(ctx, "SELECT body, words FROM migrate_notes").Scan(&body, &words)
		if err != nil || body != "one;\ntwo" || words != 2 {
			t.Fatalf("string or trigger broken: %q %d %v", body, words, err)
		}
		if got := appliedVersions(t, s); got[len(got)-1] != 9000 {
			t.Fatalf("versions %v", got)
		}
	})
}

// A migration merged after a higher-numbered one already reached the
// database is applied, not refused (goose refuses by default): numbers are
// handed out before the work that fills them is merged.
func TestMigrateOutOfOrder(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := openMigrated(t, dsn)
		fsys := fstest.MapFS{}
		sub, _ := fs.Sub(migrationFiles, "migrations")
		names, _ := fs.Glob(sub, "*.sql")
		for _, n := range names {
			body, _ := fs.ReadFile(sub, n)
			fsys[n] = &fstest.MapFile{Data: body}
		}
		fsys["9001_higher.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE migrate_higher (id @ID@);\n")}
		if err := s.migrateFrom(ctx, fsys); err != nil {
			t.Fatal(err)
		}
		fsys["9000_merged_later.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE migrate_lower (id @ID@);\n")}
		if err := s.migrateFrom(ctx, fsys); err != nil {
			t.Fatalf("a lower migration merged later: %v", err)
		}
		if _, err := s.db.ExecContext(ctx, "INSERT INTO migrate_lower DEFAULT VALUES"); err != nil {
			t.Fatalf("migration 9000 did not run: %v", err)
		}
		if got := appliedVersions(t, s); !slices.Contains(got, 9000) || !slices.Contains(got, 9001) {
			t.Fatalf("versions %v", got)
		}
	})
}

// legacyMigrate builds a database the way kiln's migration runner did
// before goose: one transaction that creates schema_migrations, runs
// 0001_init.sql cut at semicolons ending a line, and records version 1.
func legacyMigrate(t *testing.T, s *SQL) {
	t.Helper()
	ctx := context.Background()
	body, err := migrationFiles.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(s.dialectTypes().Replace(string(body)), "\n") {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "--") {
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(l, ";") {
			stmts = append(stmts, cur.String())
			cur.Reset()
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	stmts = append([]string{"CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"}, stmts...)
	stmts = append(stmts, "INSERT INTO schema_migrations(version, applied_at) VALUES (1, 1764547200000000)",
		"INSERT INTO scopes (name, created_at) VALUES ('debian', 1764547200000000)")
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// A database the earlier runner migrated keeps its data: goose takes its
// schema_migrations version 1 for its own version 1 and applies only the
// later migrations.
func TestMigrateLegacyDatabase(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		raw := unmigrated(t, dsn)
		legacyMigrate(t, raw)
		raw.db.Close()

		s := openMigrated(t, dsn)
		if got, want := appliedVersions(t, s), shippedVersions(t); !slices.Equal(got, want) {
			t.Fatalf("goose versions %v, want %v", got, want)
		}
		err := s.readTx(ctx, func(t *tx) error {
			ok, err := t.tableExists(ctx, legacyVersionTable)
			if err == nil && ok {
				err = errors.New("schema_migrations was kept")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Scopes().Lookup(ctx, "debian", nil); err != nil {
			t.Fatalf("the legacy database's scope: %v", err)
		}
		s.Close()
		s = openMigrated(t, dsn)
		if got, want := appliedVersions(t, s), shippedVersions(t); !slices.Equal(got, want) {
			t.Fatalf("after a second start: goose versions %v, want %v", got, want)
		}
	})
}

// Replicas starting together on one database migrate one at a time:
// every one starts, and each migration is applied once. On PostgreSQL the
// advisory lock orders them; on SQLite the write lock does, and a replica
// that lost the race looks again. They race from an empty database, and
// from one with goose's version table only (where the version table step
// takes no time, so that the replicas meet in goose's own run).
func TestMigrateReplicasTogether(t *testing.T) {
	for _, prepare := range []struct {
		name string
		fn   func(t *testing.T, dsn string)
	}{
		{"empty", func(*testing.T, string) {}},
		{"version table only", func(t *testing.T, dsn string) {
			raw := unmigrated(t, dsn)
			versions, err := database.NewStore(raw.gooseDialect(), goose.DefaultTablename)
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.ensureVersionTable(context.Background(), versions); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(prepare.name, func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, dsn string) {
				prepare.fn(t, dsn)
				const replicas = 4
				var wg sync.WaitGroup
				errs := make(chan error, replicas)
				for range replicas {
					wg.Go(func() {
						s, err := Open(context.Background(), dsn)
						if err == nil {
							s.Close()
						}
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatalf("a replica failed to start: %v", err)
					}
				}
				s := openMigrated(t, dsn)
				if got, want := appliedVersions(t, s), shippedVersions(t); !slices.Equal(got, want) {
					t.Fatalf("goose versions %v, want each of %v once", got, want)
				}
			})
		})
	}
}

// unmigrated connects to dsn like Open, without migrating; it is closed
// when the test ends.
func unmigrated(t *testing.T, dsn string) *SQL {
	t.Helper()
	s := &SQL{now: time.Now, defs: newDefs(), dialect: SQLite}
	var err error
	if strings.HasPrefix(dsn, "postgres") {
		s.dialect = Postgres
		s.db, err = sql.Open("pgx", dsn)
	} else {
		s.db, err = sql.Open("sqlite", sqliteDSN(dsn))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	return s
}
