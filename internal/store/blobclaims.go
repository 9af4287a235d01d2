package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Blob claims keep server replicas from deleting content that another one
// is uploading or has just attached.
//
// The race they close: an upload writes content X to a file store, then
// attaches it (AttachFile makes the files row). If a second upload of X
// fails after writing (its artifact was deleted, the store is full) or an
// artifact that held X is deleted, its clean-up checks that no files row
// holds X and deletes the bytes. Between the first upload's write and its
// attach, no files row holds X either: the clean-up deletes bytes that a
// moment later are attached, and the file is lost. An in-process lock
// closed the window within one process; replicas sharing PostgreSQL and a
// bucket need the decision to live in the database.
//
// So both sides claim the content first, in short transactions that
// serialise on the content (a PostgreSQL transaction-level advisory lock
// keyed by store and sha256; SQLite's single writer does the same):
//
//   - an upload takes an 'upload' claim before writing a byte and releases
//     it after AttachFile committed (or failed). It cannot start while a
//     'delete' claim holds the content: ClaimBlobUpload answers
//     ErrBlobBusy, and the caller waits for the deletion to end.
//   - a deletion takes a 'delete' claim only when no files row and no
//     other claim hold the content, then deletes the bytes, then releases
//     the claim.
//
// While bytes are being deleted, no upload of them is under way or can
// start; while an upload is under way or its content attached, nobody
// deletes it. No lock is held while bytes move: claims are rows, and the
// network calls to a file store happen between transactions.
//
// A process that dies leaves its claims behind. A 'delete' claim older
// than DeleteClaimTTL no longer blocks uploads (a deletion is one request
// with a timeout far below it). An 'upload' claim older than
// UploadClaimTTL no longer protects content, and ExpireBlobClaims hands its
// content to the caller's clean-up, which deletes it unless referenced.

// ErrBlobBusy is returned by ClaimBlobUpload while the content's bytes are
// being deleted; try again shortly.
var ErrBlobBusy = errors.New("the content is being deleted from its file store")

// How long the claims of a process that died keep their effect.
const (
	DeleteClaimTTL = 2 * time.Minute
	UploadClaimTTL = 24 * time.Hour
)

// lockContent serialises the claims of one content on PostgreSQL, for the
// rest of the transaction. The two-integer advisory lock keys are a space
// of their own, apart from the one-bigint keys of migrations and
// bootstrap; a collision between two contents only makes them wait for
// each other.
func (t *tx) lockContent(ctx context.Context, storeID int64, sha string) error {
	if t.s.dialect != Postgres {
		return nil // SQLite: the transaction holds the only write lock
	}
	k, err := strconv.ParseUint(sha[:min(8, len(sha))], 16, 32)
	if err != nil {
		k = 0
	}
	_, err = t.exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", int32(storeID), int32(uint32(k)))
	return err
}

func (t *tx) claim(ctx context.Context, storeID int64, sha, kind string) (int64, error) {
	var id int64
	err := t.queryRow(ctx, "INSERT INTO blob_claims (file_store_id, sha256, kind, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
		storeID, sha, kind, toMicros(t.s.now())).Scan(&id)
	return id, err
}

// ClaimBlobUpload records that an upload of content to a file store is
// under way, so that no clean-up deletes that content until the claim is
// released. It fails with ErrBlobBusy while the content is being deleted.
func (s *SQL) ClaimBlobUpload(ctx context.Context, storeID int64, sha string) (int64, error) {
	var id int64
	err := s.inTx(ctx, func(t *tx) error {
		if err := t.lockContent(ctx, storeID, sha); err != nil {
			return err
		}
		busy, err := t.exists(ctx, "SELECT 1 FROM blob_claims WHERE file_store_id = $1 AND sha256 = $2 AND kind = 'delete' AND created_at > $3",
			storeID, sha, toMicros(s.now().Add(-DeleteClaimTTL)))
		if err != nil {
			return err
		}
		if busy {
			return ErrBlobBusy
		}
		id, err = t.claim(ctx, storeID, sha, "upload")
		return err
	})
	return id, err
}

// ClaimBlobDeletion claims content for deletion. ok is false, and nothing
// is claimed, when a file holds the content or an upload of it is under
// way (then its bytes must stay), or another deletion of it is. When ok, the caller deletes the bytes and
// then releases the claim.
func (s *SQL) ClaimBlobDeletion(ctx context.Context, storeID int64, sha string) (id int64, ok bool, err error) {
	err = s.inTx(ctx, func(t *tx) error {
		if err := t.lockContent(ctx, storeID, sha); err != nil {
			return err
		}
		// Claims first, files second: an upload releases its claim
		// without the lock, but only after its files row committed, so
		// a claim gone at the first query means a files row visible to
		// the second (each statement of a READ COMMITTED transaction
		// reads what was committed before it).
		claimed, err := t.exists(ctx, `SELECT 1 FROM blob_claims WHERE file_store_id = $1 AND sha256 = $2
			AND (kind = 'upload' AND created_at > $3 OR kind = 'delete' AND created_at > $4)`,
			storeID, sha, toMicros(s.now().Add(-UploadClaimTTL)), toMicros(s.now().Add(-DeleteClaimTTL)))
		if err != nil || claimed {
			return err
		}
		used, err := t.exists(ctx, "SELECT 1 FROM files WHERE file_store_id = $1 AND sha256 = $2", storeID, sha)
		if err != nil || used {
			return err
		}
		id, err = t.claim(ctx, storeID, sha, "delete")
		ok = err == nil
		return err
	})
	return id, ok, err
}

// ReleaseBlobClaim ends a claim; releasing it twice is not an error.
func (s *SQL) ReleaseBlobClaim(ctx context.Context, id int64) error {
	return s.inTx(ctx, func(t *tx) error {
		_, err := t.exec(ctx, "DELETE FROM blob_claims WHERE id = $1", id)
		return err
	})
}

// ExpireBlobClaims removes the claims of processes that died: 'delete'
// claims older than DeleteClaimTTL and 'upload' claims older than
// UploadClaimTTL. It returns the content of the upload claims it removed,
// which the caller deletes unless referenced (ClaimBlobDeletion decides).
//
// Every replica's sweeper calls it, often at the same moment: a claim's
// content goes to the one whose DELETE removed the claim (RETURNING), so
// that its bytes are deleted once. (Reading the expired claims first, as
// it did, let two replicas read the same ones before either deleted
// them, and both deleted the bytes.)
func (s *SQL) ExpireBlobClaims(ctx context.Context) ([]Blob, error) {
	var out []Blob
	err := s.inTx(ctx, func(t *tx) error {
		out = nil
		if _, err := t.exec(ctx, "DELETE FROM blob_claims WHERE kind = 'delete' AND created_at <= $1",
			toMicros(s.now().Add(-DeleteClaimTTL))); err != nil {
			return err
		}
		rows, err := t.query(ctx, "DELETE FROM blob_claims WHERE kind = 'upload' AND created_at <= $1 RETURNING file_store_id, sha256",
			toMicros(s.now().Add(-UploadClaimTTL)))
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := map[Blob]bool{}
		for rows.Next() {
			var b Blob
			if err := rows.Scan(&b.FileStoreID, &b.SHA256); err != nil {
				return err
			}
			if !seen[b] {
				seen[b] = true
				out = append(out, b)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		slices.SortFunc(out, func(a, b Blob) int {
			return cmp.Or(cmp.Compare(a.FileStoreID, b.FileStoreID), strings.Compare(a.SHA256, b.SHA256))
		})
		return nil
	})
	return out, err
}
