package store

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// The schema is a series of goose migrations (migrations/README.md says
// how to write one). One file serves both databases: dialectFS replaces
// @ID@ and @JSON@ with the dialect's types as goose reads the file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// legacyVersionTable is where kiln's earlier migration runner recorded
// applied versions; the first goose run carries them over and drops it.
const legacyVersionTable = "schema_migrations"

// migrate brings the schema up to date with the embedded migrations.
func (s *SQL) migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err == nil {
		err = s.migrateFrom(ctx, sub)
	}
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", s.dialect, err)
	}
	return nil
}

// migrateFrom applies the goose migrations of fsys that the database lacks.
func (s *SQL) migrateFrom(ctx context.Context, fsys fs.FS) error {
	opts := []goose.ProviderOption{
		goose.WithLogger(goose.NopLogger()),
		goose.WithDisableGlobalRegistry(true),
		// Numbers are handed out ahead of work done in parallel, so a
		// lower one can be merged after a higher one reached databases:
		// it is applied then, rather than refused.
		goose.WithAllowOutofOrder(true),
	}
	if s.dialect == Postgres {
		// A session lock held across all pending migrations; waiting
		// replicas try again every second, for up to ten minutes.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID), lock.WithLockTimeout(1, 600))
		if err != nil {
			return err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	versions, err := database.NewStore(s.gooseDialect(), goose.DefaultTablename)
	if err != nil {
		return err
	}
	if err := s.ensureVersionTable(ctx, versions); err != nil {
		return err
	}
	p, err := goose.NewProvider(s.gooseDialect(), s.db, dialectFS{fsys, s.dialectTypes()}, opts...)
	if err != nil {
		return err
	}
	for {
		before, err := p.GetDBVersion(ctx)
		if err != nil {
			return err
		}
		_, err = p.Up(ctx)
		if err == nil || s.dialect != SQLite {
			return err
		}
		// SQLite has no advisory lock. Two processes opening a new file
		// together may both start a migration: the second one's
		// transaction waits for the first one's (BEGIN IMMEDIATE), fails
		// on the tables it finds and rolls back. When the version moved
		// meanwhile, look again at what is left to do.
		if after, verr := p.GetDBVersion(ctx); verr != nil || after <= before {
			return err
		}
	}
}

// gooseDialect names the store's database in goose's terms.
func (s *SQL) gooseDialect() goose.Dialect {
	if s.dialect == Postgres {
		return goose.DialectPostgres
	}
	return goose.DialectSQLite3
}

// ensureVersionTable creates goose's version table when it is missing,
// carrying over the versions of a database that kiln's earlier runner
// migrated, so that goose finds the schema it describes already applied.
// On PostgreSQL it waits for a replica that is migrating.
func (s *SQL) ensureVersionTable(ctx context.Context, versions database.Store) error {
	return s.inTx(ctx, func(t *tx) error {
		if s.dialect == Postgres {
			if _, err := t.exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID); err != nil {
				return err
			}
		}
		if ok, err := t.tableExists(ctx, versions.Tablename()); err != nil || ok {
			return err
		}
		if err := versions.CreateVersionTable(ctx, t.q()); err != nil {
			return fmt.Errorf("create %s: %w", versions.Tablename(), err)
		}
		if err := versions.Insert(ctx, t.q(), database.InsertRequest{Version: 0}); err != nil {
			return err
		}
		legacy, err := t.tableExists(ctx, legacyVersionTable)
		if err != nil || !legacy {
			return err
		}
		applied, err := t.ids(ctx, "SELECT version FROM "+legacyVersionTable+" ORDER BY version")
		if err != nil {
			return err
		}
		for _, v := range applied {
			if err := versions.Insert(ctx, t.q(), database.InsertRequest{Version: v}); err != nil {
				return err
			}
		}
		_, err = t.exec(ctx, "DROP TABLE "+legacyVersionTable)
		return err
	})
}

// tableExists says whether the transaction sees a table of that name (in
// the search path, on PostgreSQL).
func (t *tx) tableExists(ctx context.Context, name string) (bool, error) {
	q := "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)"
	if t.s.dialect == Postgres {
		q = "SELECT to_regclass($1) IS NOT NULL"
	}
	var ok bool
	err := t.queryRow(ctx, q, name).Scan(&ok)
	return ok, err
}

// dialectTypes replaces the type placeholders of migrations: @ID@ is the
// auto-increment primary key, @JSON@ the JSON column type, @GENERATED@ the
// storage of a generated column (PostgreSQL has only STORED ones; SQLite
// can add only VIRTUAL ones to an existing table), @BYTES@ the binary
// column type.
func (s *SQL) dialectTypes() *strings.Replacer {
	id, js, gen, bytes := "INTEGER PRIMARY KEY", "TEXT", "VIRTUAL", "BLOB"
	if s.dialect == Postgres {
		id, js, gen, bytes = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "JSONB", "STORED", "BYTEA"
	}
	return strings.NewReplacer("@ID@", id, "@JSON@", js, "@GENERATED@", gen, "@BYTES@", bytes)
}

// dialectFS serves migration files with their type placeholders replaced.
type dialectFS struct {
	fsys  fs.FS
	types *strings.Replacer
}

func (d dialectFS) Open(name string) (fs.File, error) {
	f, err := d.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err == nil && info.IsDir() {
		return f, nil // goose lists the directory
	}
	defer f.Close()
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	text := d.types.Replace(string(body))
	return &substitutedFile{Reader: strings.NewReader(text), info: sizedInfo{info, int64(len(text))}}, nil
}

type substitutedFile struct {
	*strings.Reader
	info fs.FileInfo
}

func (f *substitutedFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *substitutedFile) Close() error               { return nil }

// sizedInfo reports the size of the substituted text.
type sizedInfo struct {
	fs.FileInfo
	size int64
}

func (i sizedInfo) Size() int64 { return i.size }
