package store

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/kiln-build/kiln/internal/model"
)

func fileStoreDef() *tableDef[model.FileStore] {
	return &tableDef[model.FileStore]{
		name:    "file store",
		table:   "file_stores",
		columns: []string{"name", "backend", "configuration", "total_size", "max_size", "is_default", "created_at"},
		id:      func(o *model.FileStore) *int64 { return &o.ID },
		values: func(o *model.FileStore) []any {
			return []any{o.Name, string(o.Backend), jsonText(o.Configuration), o.TotalSize, nullInt(o.MaxSize), o.Default, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.FileStore, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.FileStore, error) {
			var o model.FileStore
			var backend string
			var conf []byte
			var max sql.NullInt64
			var created int64
			if err := r.Scan(&o.ID, &o.Name, &backend, &conf, &o.TotalSize, &max, &o.Default, &created); err != nil {
				return nil, err
			}
			o.Backend, o.Configuration, o.MaxSize, o.CreatedAt = model.FileStoreBackend(backend), json.RawMessage(conf), int64Ptr(max), fromMicros(created)
			return &o, nil
		},
		filters:    map[string]string{"name": "name", "backend": "backend"},
		nameColumn: "name",
		check: func(ctx context.Context, t *tx, old, o *model.FileStore) error {
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if o.Backend != model.BackendLocal && o.Backend != model.BackendS3 {
				return invalid("backend", "%q is not a backend: use Local or S3", o.Backend)
			}
			if err := checkJSONObject("configuration", o.Configuration); err != nil {
				return err
			}
			if old == nil && o.TotalSize != 0 {
				return invalid("total_size", "is computed by kiln and cannot be set")
			}
			if old != nil && old.TotalSize != o.TotalSize {
				return invalid("total_size", "is computed by kiln and cannot be set")
			}
			if old != nil && old.Backend != o.Backend {
				return invalid("backend", "cannot be changed once files may be stored")
			}
			if old != nil && old.Default && !o.Default {
				return invalid("default", "file store %q is the default: make another one the default instead", o.Name)
			}
			if o.MaxSize != nil && *o.MaxSize < 0 {
				return invalid("max_size", "must not be negative")
			}
			if o.MaxSize != nil && *o.MaxSize < o.TotalSize {
				return conflict("max_size", "%d is below the %d bytes already stored", *o.MaxSize, o.TotalSize)
			}
			return t.unique(ctx, "file_stores", "name", o.Name, o.ID, "file store")
		},
		// One default at most: making a store the default takes it from
		// the others in the same transaction.
		afterWrite: func(ctx context.Context, t *tx, old, o *model.FileStore) error {
			if o != nil && o.Default && (old == nil || !old.Default) {
				_, err := t.exec(ctx, "UPDATE file_stores SET is_default = FALSE WHERE id <> $1 AND is_default", o.ID)
				return err
			}
			return nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.FileStore) error {
			if ok, err := t.exists(ctx, "SELECT 1 FROM files WHERE file_store_id = $1 LIMIT 1", o.ID); err != nil || ok {
				if err == nil {
					err = conflict("", "file store %q still holds files", o.Name)
				}
				return err
			}
			return nil
		},
	}
}

// jsonText is how a JSON column is written: "{}" for nothing.
func jsonText(raw json.RawMessage) jsonDoc {
	if len(raw) == 0 {
		return "{}"
	}
	return jsonDoc(raw)
}

func checkJSONObject(field string, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return invalid(field, "must be a JSON object")
	}
	return nil
}

func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return json.RawMessage(b)
}
