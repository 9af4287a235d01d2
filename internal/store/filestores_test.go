package store_test

import (
	"context"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestDefaultFileStore: one store at most is the default; making one the
// default takes it from the other, in one write; the default cannot be
// unset, only moved.
func TestDefaultFileStore(t *testing.T) {
	ctx := context.Background()
	testdb.Each(t, func(t *testing.T, dsn string) {
		s := open(t, dsn)
		if _, err := s.Bootstrap(ctx, "kiln_test_admin_secret_1234", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		first, err := s.DefaultFileStore(ctx)
		if err != nil || !first.Default {
			t.Fatalf("bootstrap store: %+v %v", first, err)
		}
		second := &model.FileStore{Name: "objects", Backend: model.BackendS3, Default: true}
		if err := s.FileStores().Create(ctx, second); err != nil {
			t.Fatal(err)
		}
		got, _ := s.DefaultFileStore(ctx)
		if got.ID != second.ID {
			t.Fatalf("default is %s", got.Name)
		}
		if old, _ := s.FileStores().Get(ctx, first.ID, nil); old.Default {
			t.Fatal("two defaults")
		}
		_, err = s.FileStores().Update(ctx, second.ID, nil, func(f *model.FileStore) error { f.Default = false; return nil })
		fieldError(t, err, "default", store.Invalid)
		if _, err := s.FileStores().Update(ctx, first.ID, nil, func(f *model.FileStore) error { f.Default = true; return nil }); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.DefaultFileStore(ctx); got.ID != first.ID {
			t.Fatalf("default is %s", got.Name)
		}
	})
}
