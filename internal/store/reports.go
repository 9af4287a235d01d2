package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ReportClaim is what ClaimReport found for an interval of the report
// schedule.
type ReportClaim struct {
	// Won means the caller holds the interval until LeaseUntil: it writes
	// the interval's report, then calls FinishReport.
	Won bool
	// Done means the interval's report was written: nobody writes another.
	Done bool
	// LeaseUntil is when the holder's lease ends: the caller's when Won,
	// another replica's when neither Won nor Done (it may take the
	// interval over after that).
	LeaseUntil time.Time
	// Claims counts the leases taken on the interval so far, this one
	// included when Won.
	Claims int
	// LastWritten is when the last report of the schedule was recorded,
	// by any replica; the zero time when none was.
	LastWritten time.Time
}

// reportRunsKept is how long the rows of past intervals are kept: a
// history of who wrote which report, for an operator looking into a gap.
const reportRunsKept = 30 * 24 * time.Hour

// ClaimReport claims the report of the interval that starts at slot for
// owner, for lease: it wins when nobody claimed the interval yet, or when
// the last claim's lease ran out without its report written (its holder
// died, or kept failing). One transaction decides, so among replicas
// sharing the database one at a time holds an interval, and once
// FinishReport marked it done nobody claims it again. A won claim also
// forgets the intervals older than reportRunsKept.
func (s *SQL) ClaimReport(ctx context.Context, slot time.Time, owner string, lease time.Duration) (ReportClaim, error) {
	if owner == "" || lease <= 0 {
		return ReportClaim{}, errors.New("claim report: an owner and a positive lease are required")
	}
	var c ReportClaim
	err := s.inTx(ctx, func(t *tx) error {
		c = ReportClaim{}
		now := s.now()
		until := now.Add(lease)
		var claims int64
		err := t.queryRow(ctx, `INSERT INTO report_runs (slot, claimed_by, claimed_at, lease_until, claims) VALUES ($1, $2, $3, $4, 1)
			ON CONFLICT (slot) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at,
				lease_until = excluded.lease_until, claims = report_runs.claims + 1
			WHERE report_runs.finished_at IS NULL AND report_runs.lease_until <= $5
			RETURNING claims`, toMicros(slot), owner, toMicros(now), toMicros(until), toMicros(now)).Scan(&claims)
		switch {
		case err == nil:
			c = ReportClaim{Won: true, LeaseUntil: fromMicros(toMicros(until)), Claims: int(claims)}
			if _, err := t.exec(ctx, "DELETE FROM report_runs WHERE slot < $1", toMicros(slot.Add(-reportRunsKept))); err != nil {
				return err
			}
		case errors.Is(err, sql.ErrNoRows):
			var leaseUntil int64
			var finished sql.NullInt64
			if err := t.queryRow(ctx, "SELECT lease_until, finished_at, claims FROM report_runs WHERE slot = $1", toMicros(slot)).
				Scan(&leaseUntil, &finished, &claims); err != nil {
				return err
			}
			c = ReportClaim{Done: finished.Valid, LeaseUntil: fromMicros(leaseUntil), Claims: int(claims)}
		default:
			return err
		}
		// the newest written interval, found by walking the key backwards
		var last int64
		err = t.queryRow(ctx, "SELECT finished_at FROM report_runs WHERE finished_at IS NOT NULL ORDER BY slot DESC LIMIT 1").Scan(&last)
		if err == nil {
			c.LastWritten = fromMicros(last)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return nil
	})
	if err != nil {
		return ReportClaim{}, fmt.Errorf("claim the report of %s: %w", slot.UTC().Format(time.RFC3339), err)
	}
	return c, nil
}

// ErrLeaseLost is FinishReport's answer when owner no longer holds the
// interval: its lease ran out and another replica claimed it.
var ErrLeaseLost = errors.New("the claim on this report's interval was taken over by another replica after its lease ran out")

// FinishReport records that owner wrote the report of the interval that
// starts at slot, where it says, so that nobody writes it again. It fails
// with ErrLeaseLost when another replica took the interval over.
func (s *SQL) FinishReport(ctx context.Context, slot time.Time, owner, writtenTo string) error {
	var n int64
	err := s.inTx(ctx, func(t *tx) error {
		res, err := t.exec(ctx, `UPDATE report_runs SET finished_at = $1, written_to = $2
			WHERE slot = $3 AND claimed_by = $4 AND finished_at IS NULL`, toMicros(s.now()), writtenTo, toMicros(slot), owner)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("record the report of %s: %w", slot.UTC().Format(time.RFC3339), err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// ReportRun is one interval of the report schedule, as ReportRuns lists it.
type ReportRun struct {
	Slot       time.Time
	ClaimedBy  string
	Claims     int
	FinishedAt *time.Time
	WrittenTo  string
}

// ReportRuns lists the intervals of the report schedule from slot from
// on, oldest first: who claimed each, how often, and where its report
// went once written.
func (s *SQL) ReportRuns(ctx context.Context, from time.Time) ([]ReportRun, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT slot, claimed_by, claims, finished_at, COALESCE(written_to, '')
		FROM report_runs WHERE slot >= $1 ORDER BY slot`, toMicros(from))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ReportRun
	for rows.Next() {
		var r ReportRun
		var slot int64
		var finished sql.NullInt64
		if err := rows.Scan(&slot, &r.ClaimedBy, &r.Claims, &finished, &r.WrittenTo); err != nil {
			return nil, err
		}
		r.Slot = fromMicros(slot)
		if finished.Valid {
			f := fromMicros(finished.Int64)
			r.FinishedAt = &f
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
