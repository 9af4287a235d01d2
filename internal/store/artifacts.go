package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/kiln-build/kiln/internal/model"
)

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func artifactDef() *tableDef[model.Artifact] {
	return &tableDef[model.Artifact]{
		name:    "artifact",
		table:   "artifacts",
		columns: []string{"category", "workspace_id", "data", "created_by", "work_request_id", "expire_at", "created_at"},
		id:      func(o *model.Artifact) *int64 { return &o.ID },
		values: func(o *model.Artifact) []any {
			return []any{o.Category, o.WorkspaceID, jsonText(o.Data), nullInt(o.CreatedBy), nullInt(o.WorkRequestID),
				nullMicros(o.ExpireAt), toMicros(o.CreatedAt)}
		},
		stamp: func(o *model.Artifact, now int64) { o.CreatedAt = fromMicros(now) },
		scan: func(r scanner) (*model.Artifact, error) {
			var o model.Artifact
			var data []byte
			var by, wr, expire sql.NullInt64
			var created int64
			if err := r.Scan(&o.ID, &o.Category, &o.WorkspaceID, &data, &by, &wr, &expire, &created); err != nil {
				return nil, err
			}
			o.Data, o.CreatedBy, o.WorkRequestID, o.ExpireAt, o.CreatedAt = rawJSON(data), int64Ptr(by), int64Ptr(wr), timePtr(expire), fromMicros(created)
			return &o, nil
		},
		filters:         map[string]string{"workspace": "workspace_id", "category": "category", "work_request": "work_request_id"},
		workspaceColumn: "workspace_id",
		load: func(ctx context.Context, t *tx, o *model.Artifact) error {
			rows, err := t.query(ctx, "SELECT path, sha256, size, file_id FROM artifact_files WHERE artifact_id = $1 ORDER BY path", o.ID)
			if err != nil {
				return err
			}
			defer rows.Close()
			o.Files = []model.ArtifactFile{}
			for rows.Next() {
				var f model.ArtifactFile
				var file sql.NullInt64
				if err := rows.Scan(&f.Path, &f.SHA256, &f.Size, &file); err != nil {
					return err
				}
				f.Complete = file.Valid
				o.Files = append(o.Files, f)
			}
			return rows.Err()
		},
		check: func(ctx context.Context, t *tx, old, o *model.Artifact) error {
			if err := checkCategory(o.Category); err != nil {
				return err
			}
			if old != nil {
				if err := fixedOnceCreated("artifact", old.WorkspaceID, o.WorkspaceID, old.Category, o.Category); err != nil {
					return err
				}
				if !sameFiles(old.Files, o.Files) {
					return invalid("files", "the files of an artifact cannot be changed: create a new artifact")
				}
			}
			if _, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID); err != nil {
				return err
			}
			if err := checkJSONObject("data", o.Data); err != nil {
				return err
			}
			if o.WorkRequestID != nil && old == nil {
				if err := t.ref(ctx, "work_request", "work_requests", *o.WorkRequestID); err != nil {
					return err
				}
			}
			seen := map[string]bool{}
			for _, f := range o.Files {
				if err := checkFilePath(f.Path); err != nil {
					return err
				}
				if seen[f.Path] {
					return invalid("files", "%q is listed twice", f.Path)
				}
				seen[f.Path] = true
				if !sha256Pattern.MatchString(f.SHA256) {
					return invalid("files", "%q: sha256 must be 64 lower-case hex digits", f.Path)
				}
				if f.Size < 0 {
					return invalid("files", "%q: size must not be negative", f.Path)
				}
			}
			return nil
		},
		afterWrite: func(ctx context.Context, t *tx, old, o *model.Artifact) error {
			if old == nil {
				files := append([]model.ArtifactFile(nil), o.Files...)
				sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
				for i := range files {
					files[i].Complete = false
					if _, err := t.exec(ctx, "INSERT INTO artifact_files (artifact_id, path, sha256, size) VALUES ($1, $2, $3, $4)",
						o.ID, files[i].Path, files[i].SHA256, files[i].Size); err != nil {
						return err
					}
				}
				o.Files = files
			}
			if o == nil {
				return t.releaseFiles(ctx, old.ID)
			}
			return nil
		},
		totals: func(ctx context.Context, t *tx, o *model.Artifact) ([]contribution, error) {
			scope, err := t.workspaceScope(ctx, "workspace", o.WorkspaceID)
			if err != nil {
				return nil, err
			}
			// every write of an artifact computes these: the label set's
			// stored form once, no copies of it
			l := Labels{"category": o.Category, "scope_id": itoa(scope)}
			lk := canonicalLabels(l)
			var size int64
			cs := make([]contribution, 0, 5+len(o.Files))
			cs = append(cs, contribution{totalKey{"artifacts", lk}, 1})
			for _, f := range o.Files {
				size += f.Size
				cs = append(cs, bucket("artifact_file_sizes", l, f.Size, ArtifactFileSizeBuckets))
			}
			return append(cs,
				contribution{totalKey{"artifact_file_sizes_sum", lk}, size},
				contribution{totalKey{"artifact_file_size", lk}, size},
				bucket("artifact_file_counts", l, int64(len(o.Files)), ArtifactFileCountBuckets),
				contribution{totalKey{"artifact_file_counts_sum", lk}, int64(len(o.Files))}), nil
		},
		inUse: func(ctx context.Context, t *tx, o *model.Artifact) error {
			if ok, err := t.exists(ctx, "SELECT 1 FROM collection_items WHERE artifact_id = $1 LIMIT 1", o.ID); err != nil || ok {
				if err == nil {
					err = conflict("", "artifact %d is still in a collection", o.ID)
				}
				return err
			}
			return nil
		},
	}
}

func sameFiles(a, b []model.ArtifactFile) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || a[i].SHA256 != b[i].SHA256 || a[i].Size != b[i].Size {
			return false
		}
	}
	return true
}

func checkFilePath(p string) error {
	if p == "" {
		return invalid("files", "a file needs a path")
	}
	if len(p) > 1024 || strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || strings.ContainsRune(p, 0) ||
		!utf8.ValidString(p) {
		return invalid("files", "%q is not a clean relative path", p)
	}
	return nil
}

// releaseFiles detaches an artifact's files; content that no artifact uses
// any more leaves its file store, whose total_size shrinks in the same
// transaction. The bytes are deleted after commit (ReleasedBlobs).
//
// The artifact's file stores and then its files rows are locked before
// anything is read of who else holds the content — AttachFile's order,
// after the artifact's own lock — so that artifacts sharing content and
// deleted at the same moment on several replicas take turns, and the last
// one reads that the others are gone and releases the content, once.
// Without the locks each read the others' files still there, under READ
// COMMITTED, and nobody released it: counted in total_size, and stored,
// for ever. An upload attaching the same content waits the same way, or
// finds the files row gone and makes a new one.
func (t *tx) releaseFiles(ctx context.Context, artifactID int64) error {
	if _, err := t.ids(ctx, `SELECT id FROM file_stores WHERE id IN (SELECT f.file_store_id FROM artifact_files a JOIN files f ON f.id = a.file_id
		WHERE a.artifact_id = $1) ORDER BY id`+t.forUpdate(), artifactID); err != nil {
		return err
	}
	ids, err := t.ids(ctx, "SELECT id FROM files WHERE id IN (SELECT file_id FROM artifact_files WHERE artifact_id = $1) ORDER BY id"+t.forUpdate(), artifactID)
	if err != nil {
		return err
	}
	if _, err := t.exec(ctx, "DELETE FROM artifact_files WHERE artifact_id = $1", artifactID); err != nil {
		return err
	}
	for _, id := range ids {
		if used, err := t.exists(ctx, "SELECT 1 FROM artifact_files WHERE file_id = $1 LIMIT 1", id); err != nil || used {
			if err != nil {
				return err
			}
			continue
		}
		var storeID, size int64
		var sha string
		if err := t.queryRow(ctx, "SELECT file_store_id, sha256, size FROM files WHERE id = $1", id).Scan(&storeID, &sha, &size); err != nil {
			return err
		}
		if _, err := t.exec(ctx, "DELETE FROM files WHERE id = $1", id); err != nil {
			return err
		}
		if _, err := t.exec(ctx, "UPDATE file_stores SET total_size = total_size - $1 WHERE id = $2", size, storeID); err != nil {
			return err
		}
		t.released = append(t.released, Blob{FileStoreID: storeID, SHA256: sha})
	}
	return nil
}

// Blob names stored content: a file store and a sha256.
type Blob struct {
	FileStoreID int64
	SHA256      string
}

func (s *SQL) artifacts() *table[model.Artifact] { return &table[model.Artifact]{s, s.defs.artifacts} }

// Artifacts is the artifact table. Files are declared at creation and
// uploaded with AttachFile; Delete releases content no other artifact uses.
func (s *SQL) Artifacts() Table[model.Artifact] { return s.artifacts() }

// DeleteArtifact deletes an artifact and returns the blobs that no longer
// belong to any artifact, for the caller to remove from their file stores
// after the commit.
func (s *SQL) DeleteArtifact(ctx context.Context, id int64, v *Viewer) ([]Blob, error) {
	var released []Blob
	err := s.inTx(ctx, func(t *tx) error {
		if err := s.artifacts().delete(ctx, t, id, v); err != nil {
			return err
		}
		released = t.released
		return nil
	})
	return released, err
}

// DefaultFileStore is where new content goes.
func (s *SQL) DefaultFileStore(ctx context.Context) (*model.FileStore, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, "SELECT id FROM file_stores ORDER BY is_default DESC, id LIMIT 1").Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, conflict("", "no file store is configured")
	}
	if err != nil {
		return nil, err
	}
	return s.FileStores().Get(ctx, id, nil)
}

// CheckCapacity fails with a Conflict when size more bytes would not fit in
// the file store. It is a cheap early refusal before bytes are written;
// AttachFile checks again under the row lock.
func (s *SQL) CheckCapacity(ctx context.Context, storeID int64, sha string, size int64) error {
	fs, err := s.FileStores().Get(ctx, storeID, nil)
	if err != nil {
		return err
	}
	var have int
	err = s.db.QueryRowContext(ctx, "SELECT 1 FROM files WHERE file_store_id = $1 AND sha256 = $2", storeID, sha).Scan(&have)
	if err == nil {
		return nil // already stored: costs nothing
	}
	if fs.MaxSize != nil && fs.TotalSize+size > *fs.MaxSize {
		return fullError(fs, size)
	}
	return nil
}

func fullError(fs *model.FileStore, size int64) error {
	return conflict("size", "file store %q is full: %d of %d bytes used, the file needs %d more", fs.Name, fs.TotalSize, *fs.MaxSize, size)
}

// AttachFile records that the content of an artifact's file (already
// written to the file store and checked against sha256 and size) is stored.
// Content already in the store is shared and costs nothing; new content is
// added to the store's total_size in the same transaction, or refused with a
// Conflict when it would exceed max_size. created reports whether a new
// files row was made (the caller removes the bytes it wrote if AttachFile
// fails and created content is not referenced).
func (s *SQL) AttachFile(ctx context.Context, artifactID int64, filePath string, storeID int64, v *Viewer) error {
	return s.inTx(ctx, func(t *tx) error {
		art, err := s.artifacts().get(ctx, t, artifactID, v, true)
		if err != nil {
			return err
		}
		var f *model.ArtifactFile
		for i := range art.Files {
			if art.Files[i].Path == filePath {
				f = &art.Files[i]
			}
		}
		if f == nil {
			return fmt.Errorf("artifact %d has no file %q: %w", artifactID, filePath, ErrNotFound)
		}
		if f.Complete {
			return nil // retried upload of the same content
		}
		fs, err := (&table[model.FileStore]{s, s.defs.fileStores}).get(ctx, t, storeID, nil, true)
		if err != nil {
			return err
		}
		// locked, after the store, as releaseFiles locks them: content
		// being released meanwhile is either kept for this file or gone,
		// and then made anew
		var fileID int64
		err = t.queryRow(ctx, "SELECT id FROM files WHERE file_store_id = $1 AND sha256 = $2"+t.forUpdate(), storeID, f.SHA256).Scan(&fileID)
		if errors.Is(err, sql.ErrNoRows) {
			if fs.MaxSize != nil && fs.TotalSize+f.Size > *fs.MaxSize {
				return fullError(fs, f.Size)
			}
			if err := t.queryRow(ctx, "INSERT INTO files (file_store_id, sha256, size, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
				storeID, f.SHA256, f.Size, toMicros(s.now())).Scan(&fileID); err != nil {
				return err
			}
			if _, err := t.exec(ctx, "UPDATE file_stores SET total_size = total_size + $1 WHERE id = $2", f.Size, storeID); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		_, err = t.exec(ctx, "UPDATE artifact_files SET file_id = $1 WHERE artifact_id = $2 AND path = $3", fileID, artifactID, filePath)
		return err
	})
}

// FileLocation says where the bytes of an artifact's file are.
func (s *SQL) FileLocation(ctx context.Context, artifactID int64, filePath string, v *Viewer) (*model.ArtifactFile, int64, error) {
	art, err := s.Artifacts().Get(ctx, artifactID, v)
	if err != nil {
		return nil, 0, err
	}
	for _, f := range art.Files {
		if f.Path != filePath {
			continue
		}
		if !f.Complete {
			return nil, 0, conflict("path", "file %q of artifact %d has not been uploaded yet", filePath, artifactID)
		}
		var storeID int64
		err := s.db.QueryRowContext(ctx, `SELECT f.file_store_id FROM artifact_files a JOIN files f ON f.id = a.file_id
			WHERE a.artifact_id = $1 AND a.path = $2`, artifactID, filePath).Scan(&storeID)
		return &f, storeID, err
	}
	return nil, 0, fmt.Errorf("artifact %d has no file %q: %w", artifactID, filePath, ErrNotFound)
}
