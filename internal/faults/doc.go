// Package faults is kiln's fault-injection suite: end-to-end tests, kept in
// the repository and run by .ci/run, that break a running farm the way
// production breaks it and check that nothing is lost, nothing runs twice,
// nothing outlives its attempt and every running total stays right. It
// has no code of its own, only tests, on the real kiln binary:
//
//   - a runner killed with SIGKILL, 100 times, each time in the middle of
//     a task whose script spawns processes that try every way of outliving
//     it: none survives, counted in /proc before a new runner could clean
//     up (issue 13, defect 1);
//   - a server killed with SIGKILL while clients submit work, on SQLite
//     and on PostgreSQL: every acknowledged submission runs exactly once,
//     and `kiln metrics recount` finds the totals clean;
//   - a full disk, as the file store's max_size: the output that does not
//     fit is refused with a clear error and nothing half-stored stays
//     once `kiln expire` has removed the incomplete artifact;
//   - every write route with a NUL character, a duplicate key and invalid
//     UTF-8, on both databases: that part needs the router's own list of
//     routes and its fixtures, and lives beside them as
//     internal/api.TestBadTextEveryBody.
//
// The tests are sized to prove their point within the CI budget; the
// numbers are constants at the top of each test.
package faults
