package server

import (
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/livelog"
	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
)

// newScheduler builds the scheduler of this server process. Its server
// worker is named after the host and the API port, so that replicas on one
// database (even on one host) have their own, and a restarted server finds
// its previous one.
func newScheduler(st store.Store, bus *signal.Bus, logs *livelog.Relay, cfg Config, reg prometheus.Registerer, logger *slog.Logger, addr net.Addr) (*scheduler.Scheduler, error) {
	host, _ := os.Hostname()
	port := ""
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	return scheduler.New(st, scheduler.Config{
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		ClaimInterval:    cfg.ClaimInterval,
		ServerWorkerName: scheduler.WorkerName("server", host, port),
		Signals:          bus,
		LiveLogs:         logs,
		Registerer:       reg,
		Logger:           logger.With("component", "scheduler"),
	})
}

// newSignals builds the process's one signal bus (package signal): on
// PostgreSQL it listens on a connection of its own to the database,
// shared by the scheduler and the live-log readers; on SQLite, whose
// database one server process owns, it stays within the process.
func newSignals(st store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*signal.Bus, error) {
	opts := signal.Options{Logger: logger.With("component", "signals"), Registerer: reg}
	if st.Dialect() != store.Postgres {
		return signal.NewLocal(opts)
	}
	pooled, ok := st.(interface{ DB() *sql.DB })
	if !ok {
		return nil, errors.New("signals: the store has no connection pool")
	}
	return signal.NewPostgres(cfg.Database, pooled.DB(), opts)
}
