// Package pool makes worker pools real: an autoscaler that starts and
// stops runner instances through providers, following the queue of work
// they can run, and the two providers kiln ships — process (`kiln runner`
// children of the server; what --local-runners is) and exec (a user's
// executable called as `EXE create|destroy|list` with JSON on standard
// input and output: the plug-in contract for any cloud).
//
// Conventions every file of the package follows:
//
//   - The database is the truth, not memory. Every step of an instance's
//     life is one store transaction (store/instances.go), written before
//     the provider is asked (a create) or after it answered (a destroy),
//     so that a server killed at any point leaves rows that the next one
//     reconciles with the provider's list: none is leaked, none is billed
//     twice. What the autoscaler keeps in memory (calls in flight, backoff
//     timers) only saves work and is rebuilt from the rows.
//   - One autoscaler acts for the farm: the server holding the session
//     lock LockKey (a PostgreSQL advisory lock on a connection of its own;
//     on SQLite, one server serves a database). The others wait and take
//     over when its connection dies with it. Instances of a host-bound
//     provider (process) die with the server that acts, and are stopped
//     when it stops acting.
//   - Runtime runs from the moment kiln asks for an instance to the moment
//     the provider destroyed it — or, for an instance found gone, the
//     moment it was last seen alive (its runner connected, the provider
//     listing it, its process running), never the moment kiln noticed.
//     worker_pool_runtime is the recorded runtime of stopped instances
//     plus the age of live ones, the same on every replica.
//   - An instance never loses a task to the autoscaler: it is stopped only
//     in the transaction that finds its runner idle and disables its
//     worker (claims lock the worker and refuse a disabled one). Only an
//     instance whose runner is gone is given up whatever it held; its
//     task returns to the queue after the heartbeat timeout, as any lost
//     runner's.
//   - A failing provider costs its own pool only: calls run in goroutines
//     of their own, bounded by a timeout; from the second failure in a
//     row the pool backs off exponentially with jitter; every failure is
//     recorded on the pool (kiln pool show) and on the instance (exit
//     status and standard error of an exec provider).
//   - Metrics follow GitLab Runner's autoscaler (metrics.go): instances by
//     state, creations and destructions by result, creation time, scale
//     decisions by direction and a bounded reason, budget used — each by
//     worker_pool, the state gauges from the acting server only.
package pool
