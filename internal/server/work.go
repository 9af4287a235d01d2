package server

import (
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-build/kiln/internal/scheduler"
	"github.com/kiln-build/kiln/internal/store"
)

// newScheduler builds the scheduler of this server process. Its server
// worker is named after the host and the API port, so that replicas on one
// database (even on one host) have their own, and a restarted server finds
// its previous one.
func newScheduler(st store.Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger, addr net.Addr) (*scheduler.Scheduler, error) {
	host, _ := os.Hostname()
	port := ""
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	return scheduler.New(st, scheduler.Config{
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		ClaimInterval:    cfg.ClaimInterval,
		ServerWorkerName: scheduler.WorkerName("server", host, port),
		Registerer:       reg,
		Logger:           logger.With("component", "scheduler"),
	})
}
