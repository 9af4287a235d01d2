package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kiln-build/kiln/internal/model"
)

func collectionDef() *tableDef[model.Collection] {
	return &tableDef[model.Collection]{
		name:    "collection",
		table:   "collections",
		columns: []string{"category", "name", "workspace_id", "data", "item_count", "created_at"},
		id:      func(o *model.Collection) *int64 { return &o.ID },
		values: func(o *model.Collection) []any {
			return []any{o.Category, o.Name, o.WorkspaceID, jsonText(o.Data), o.ItemCount, toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Collection, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Collection, error) {
			var o model.Collection
			var data []byte
			var created int64
			if err := r.Scan(&o.ID, &o.Category, &o.Name, &o.WorkspaceID, &data, &o.ItemCount, &created); err != nil {
				return nil, err
			}
			o.Data, o.CreatedAt = rawJSON(data), fromMicros(created)
			return &o, nil
		},
		filters:         map[string]string{"workspace": "workspace_id", "category": "category", "name": "name"},
		workspaceColumn: "workspace_id",
		check: func(ctx context.Context, t *tx, old, o *model.Collection) error {
			if err := checkCategory(o.Category); err != nil {
				return err
			}
			if err := checkName("name", o.Name); err != nil {
				return err
			}
			if old != nil {
				if err := fixedOnceCreated("collection", old.WorkspaceID, o.WorkspaceID, old.Category, o.Category); err != nil {
					return err
				}
			}
			if old == nil && o.ItemCount != 0 || old != nil && old.ItemCount != o.ItemCount && !t.itemWrite {
				return invalid("item_count", "is computed by kiln and cannot be set")
			}
			if _, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID); err != nil {
				return err
			}
			if err := checkJSONObject("data", o.Data); err != nil {
				return err
			}
			ok, err := t.exists(ctx, "SELECT 1 FROM collections WHERE workspace_id = $1 AND category = $2 AND name = $3 AND id <> $4",
				o.WorkspaceID, o.Category, o.Name, o.ID)
			if err != nil {
				return err
			}
			if ok {
				return conflict("name", "a %s collection named %q already exists in this workspace", o.Category, o.Name)
			}
			return nil
		},
		totals: func(ctx context.Context, t *tx, o *model.Collection) ([]contribution, error) {
			scope, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID)
			if err != nil {
				return nil, err
			}
			l := Labels{"category": o.Category, "scope_id": itoa(scope)}
			return append([]contribution{one("collections", l)},
				histo("collection_sizes", l, o.ItemCount, CollectionSizeBuckets)...), nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.Collection) error {
			_, err := t.exec(ctx, "DELETE FROM collection_items WHERE collection_id = $1", o.ID)
			return err
		},
	}
}

func scanItem(r scanner) (*model.CollectionItem, error) {
	var o model.CollectionItem
	var art sql.NullInt64
	var data []byte
	var created int64
	if err := r.Scan(&o.ID, &o.CollectionID, &o.Name, &o.Category, &art, &data, &created); err != nil {
		return nil, err
	}
	o.ArtifactID, o.Data, o.CreatedAt = int64Ptr(art), rawJSON(data), fromMicros(created)
	return &o, nil
}

const itemColumns = "id, collection_id, name, category, artifact_id, data, created_at"

// AddCollectionItem adds item to its collection and updates the
// collection's item count (and its size histogram) in the same
// transaction.
func (s *SQL) AddCollectionItem(ctx context.Context, item *model.CollectionItem, v *Viewer) error {
	return s.inTx(ctx, func(t *tx) error { return s.addCollectionItem(ctx, t, item, v) })
}

func (s *SQL) addCollectionItem(ctx context.Context, t *tx, item *model.CollectionItem, v *Viewer) error {
	if err := checkName("name", item.Name); err != nil {
		return err
	}
	if err := checkCategory(item.Category); err != nil {
		return err
	}
	if err := checkJSONObject("data", item.Data); err != nil {
		return err
	}
	coll := s.collections()
	c, err := coll.get(ctx, t, item.CollectionID, v, true)
	if err != nil {
		return err
	}
	if item.ArtifactID != nil {
		var ws int64
		err := t.queryRow(ctx, "SELECT workspace_id FROM artifacts WHERE id = $1", *item.ArtifactID).Scan(&ws)
		if errors.Is(err, sql.ErrNoRows) {
			return invalid("artifact", "no artifact with id %d", *item.ArtifactID)
		}
		if err != nil {
			return err
		}
	}
	if ok, err := t.exists(ctx, "SELECT 1 FROM collection_items WHERE collection_id = $1 AND name = $2", c.ID, item.Name); err != nil || ok {
		if err == nil {
			err = conflict("name", "collection already has an item named %q", item.Name)
		}
		return err
	}
	item.CreatedAt = fromMicros(toMicros(s.now()))
	if err := t.queryRow(ctx, `INSERT INTO collection_items (collection_id, name, category, artifact_id, data, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, c.ID, item.Name, item.Category, nullInt(item.ArtifactID),
		jsonText(item.Data), toMicros(item.CreatedAt)).Scan(&item.ID); err != nil {
		return err
	}
	return s.bumpItemCount(ctx, t, c.ID, +1)
}

func (s *SQL) bumpItemCount(ctx context.Context, t *tx, collectionID, delta int64) error {
	t.itemWrite = true
	defer func() { t.itemWrite = false }()
	_, err := s.collections().update(ctx, t, collectionID, nil, func(c *model.Collection) error {
		c.ItemCount += delta
		return nil
	})
	return err
}

// RemoveCollectionItem deletes an item and updates the collection's count.
func (s *SQL) RemoveCollectionItem(ctx context.Context, collectionID, itemID int64, v *Viewer) error {
	return s.inTx(ctx, func(t *tx) error {
		if _, err := s.collections().get(ctx, t, collectionID, v, true); err != nil {
			return err
		}
		res, err := t.exec(ctx, "DELETE FROM collection_items WHERE id = $1 AND collection_id = $2", itemID, collectionID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("collection item %d: %w", itemID, ErrNotFound)
		}
		return s.bumpItemCount(ctx, t, collectionID, -1)
	})
}

// ListCollectionItems returns a page of a collection's items.
func (s *SQL) ListCollectionItems(ctx context.Context, collectionID int64, q Query) ([]model.CollectionItem, error) {
	if _, err := s.collections().Get(ctx, collectionID, q.Viewer); err != nil {
		return nil, err
	}
	limit := q.Limit
	if limit <= 0 || limit > MaxPageSize {
		limit = DefaultPageSize
	}
	out := []model.CollectionItem{}
	err := s.readTx(ctx, func(t *tx) error {
		rows, err := t.query(ctx, "SELECT "+itemColumns+" FROM collection_items WHERE collection_id = $1 AND id > $2 ORDER BY id LIMIT $3",
			collectionID, q.After, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			it, err := scanItem(rows)
			if err != nil {
				return err
			}
			out = append(out, *it)
		}
		return rows.Err()
	})
	return out, err
}
