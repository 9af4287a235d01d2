package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
)

// Live logs: the chunks of the logs that runners stream while their
// requests run, kept in live_log_chunks so that every replica can serve
// them (package livelog says why a table, and what it costs). Chunks
// belong to one attempt of a request (its retries when the attempt
// started): an attempt's chunks are read only while the request runs that
// attempt.

// MaxLiveLog is how much of an attempt's log the database keeps while it
// runs: beyond it the oldest chunks go. The complete log is uploaded as
// an artifact when the task ends.
const MaxLiveLog = 8 << 20

// MaxLiveLogChunk bounds one stored chunk; AppendLiveLog cuts longer data.
// A read at offset o needs no chunk that starts before o − MaxLiveLogChunk,
// which keeps reads on the primary key.
const MaxLiveLogChunk = 64 << 10

// liveLogTrimStep is how often, in bytes of log past MaxLiveLog, an
// append deletes the chunks that fell out of the window.
const liveLogTrimStep = 1 << 20

// AppendLiveLog stores data at offset in the log of attempt of request
// id. It does not check who runs the request: chunks of an attempt that
// is no longer running are never read, and go at the next sweep. Data
// already stored at offset is kept unless the new data is longer (a
// runner resending after a reconnection). It is one transaction.
//
// On PostgreSQL the transaction commits without waiting for its WAL to
// reach the disk (synchronous_commit off, for this transaction only): a
// live log is a view of a running task, the complete log is uploaded when
// the task ends, and a crash of the database that loses its last few
// hundred milliseconds costs nothing else. Waiting for the flush made an
// append three times as slow (BenchmarkRelay in package livelog).
func (s *SQL) AppendLiveLog(ctx context.Context, id int64, attempt int, offset int64, data []byte) error {
	if offset < 0 {
		return invalid("offset", "a log offset cannot be negative, got %d", offset)
	}
	if len(data) == 0 {
		return nil
	}
	end := offset + int64(len(data))
	trim := end > MaxLiveLog && offset/liveLogTrimStep != end/liveLogTrimStep
	if len(data) <= MaxLiveLogChunk && !trim {
		// the common case, a chunk as runners send them: one statement
		_, err := s.db.ExecContext(ctx, s.appendChunk(true), id, attempt, offset, data)
		return liveLogError(id, err)
	}
	return s.inTx(ctx, func(t *tx) error {
		if s.dialect == Postgres {
			if _, err := t.exec(ctx, "SET LOCAL synchronous_commit TO OFF"); err != nil {
				return err
			}
		}
		for pos, rest := offset, data; len(rest) > 0; {
			n := min(len(rest), MaxLiveLogChunk)
			if _, err := t.exec(ctx, s.appendChunk(false), id, attempt, pos, rest[:n]); err != nil {
				return liveLogError(id, err)
			}
			pos, rest = pos+int64(n), rest[n:]
		}
		if trim {
			if _, err := t.exec(ctx, "DELETE FROM live_log_chunks WHERE work_request_id = $1 AND attempt = $2 AND pos < $3",
				id, attempt, end-MaxLiveLog-MaxLiveLogChunk); err != nil {
				return fmt.Errorf("trim the live log of work request %d: %w", id, err)
			}
		}
		return nil
	})
}

// appendChunk is the statement that stores one chunk ($1 request, $2
// attempt, $3 pos, $4 data); alone, on PostgreSQL, it turns off the
// synchronous commit of its own implicit transaction.
func (s *SQL) appendChunk(alone bool) string {
	from := ""
	if alone && s.dialect == Postgres {
		from = " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async"
	}
	return `INSERT INTO live_log_chunks (work_request_id, attempt, pos, data) SELECT $1, $2, $3, $4` + from + ` WHERE true
		ON CONFLICT (work_request_id, attempt, pos) DO UPDATE SET data = excluded.data
		WHERE length(excluded.data) > length(live_log_chunks.data)`
}

func liveLogError(id int64, err error) error {
	switch {
	case err == nil:
		return nil
	case constraintKind(err) == "foreign":
		return fmt.Errorf("work request %d: %w", id, ErrNotFound)
	}
	return fmt.Errorf("append to the live log of work request %d: %w", id, err)
}

// ReadLiveLog reads the log of the attempt request id runs now, from
// offset on, at most limit bytes (everything kept when limit is 0): data is contiguous and starts at from,
// which is offset unless the bytes at offset are gone (trimmed, or never
// received: a runner out of touch), in which case it is where the log
// picks up again. running is false, and nothing read, when the request is
// not running (or does not exist).
func (s *SQL) ReadLiveLog(ctx context.Context, id, offset int64, limit int) (data []byte, from int64, running bool, err error) {
	if offset < 0 {
		return nil, 0, false, invalid("offset", "a log offset cannot be negative, got %d", offset)
	}
	if limit <= 0 {
		limit = math.MaxInt
	}
	// one statement: the request's state and its chunks of the attempt it
	// runs (none, when it runs without a log yet: one row of NULLs)
	rows, err := s.db.QueryContext(ctx, `SELECT c.pos, c.data FROM work_requests w
		LEFT JOIN live_log_chunks c ON c.work_request_id = w.id AND c.attempt = w.retries AND c.pos > $2
		WHERE w.id = $1 AND w.status = 'running' ORDER BY c.pos`, id, offset-MaxLiveLogChunk)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read the live log of work request %d: %w", id, err)
	}
	defer rows.Close()
	from = offset
	end := offset // what data reaches
	for rows.Next() && len(data) < limit {
		running = true
		var pos sql.NullInt64
		var chunk []byte
		if err := rows.Scan(&pos, &chunk); err != nil {
			return nil, 0, false, err
		}
		if !pos.Valid || pos.Int64+int64(len(chunk)) <= end {
			continue // no chunk yet; or before offset, or already returned
		}
		if pos.Int64 > end {
			if len(data) > 0 {
				break // a gap: the next read picks up after it
			}
			from, end = pos.Int64, pos.Int64
		}
		chunk = chunk[end-pos.Int64:]
		chunk = chunk[:min(len(chunk), limit-len(data))]
		data = append(data, chunk...)
		end += int64(len(chunk))
	}
	if err := rows.Err(); err != nil {
		return nil, 0, false, err
	}
	return data, from, running, nil
}

// DropLiveLog deletes the chunks of attempt of request id: what the
// replica that received the attempt's result does, so that the table holds
// little more than the logs of running requests.
func (s *SQL) DropLiveLog(ctx context.Context, id int64, attempt int) error {
	_, err := s.db.ExecContext(ctx, "DELETE FROM live_log_chunks WHERE work_request_id = $1 AND attempt = $2", id, attempt)
	return err
}

// SweepLiveLogs deletes the chunks nobody will read: those of requests
// that no longer run the attempt they belong to (requeued, ended with
// their replica gone, or written by a runner after it lost the request).
// Every replica may sweep; it returns how many chunks it deleted.
func (s *SQL) SweepLiveLogs(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM live_log_chunks WHERE NOT EXISTS (SELECT 1 FROM work_requests w
		WHERE w.id = live_log_chunks.work_request_id AND w.status = 'running' AND w.retries = live_log_chunks.attempt)`)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
