package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/signal"
	"github.com/kiln-build/kiln/internal/store"
)

// The scheduler's signals between the server processes of a database
// (package signal). Each is published to every process, this one
// included, and acted on by whichever holds who it concerns.
const (
	// topicPending: a request of task type <payload> became pending; who
	// can run that type looks at the queue.
	topicPending signal.Topic = "pending"
	// topicPoke: look at the queue, whatever you run (a worker was
	// enabled).
	topicPoke signal.Topic = "poke"
	// topicCancel: "<id> <worker> <attempt> <reason>": attempt of request
	// id was taken from worker (aborted, or requeued by the heartbeat
	// rule); the process that worker's runner is connected to tells it to
	// stop. Worker and attempt make sure that nobody else is told: a
	// requeued request may already run its next attempt, even on the
	// same worker.
	topicCancel signal.Topic = "cancel"
)

// maxReason bounds the reason a cancel signal carries to the runner.
const maxReason = 1000

// subscribe wires the scheduler to the bus: signals from any process wake
// the waiters of this one or reach its runners.
func (s *Scheduler) subscribe() {
	s.bus.Subscribe(topicPending, func(p string) { s.wakeFor(model.TaskType(p)) })
	s.bus.Subscribe(topicPoke, func(string) { s.wakeAll() })
	s.bus.Subscribe(topicCancel, s.cancelled)
	s.bus.OnResync(s.resync)
	s.st.OnPending(func(wr model.WorkRequest) { s.bus.Publish(topicPending, string(wr.TaskType)) })
	s.st.OnFinish(s.finished)
}

// wakeFor wakes only those who can run requests of task type tt, so that
// a completion that unblocks nothing, the common case, costs no one a
// look at the queue.
func (s *Scheduler) wakeFor(tt model.TaskType) {
	switch {
	case tt == model.TaskWait:
		s.waitWake.poke()
	case model.WorkerTypeFor(tt) == model.WorkerServer:
		s.serverWake.poke()
	case model.WorkerTypeFor(tt) != "":
		s.runnersWake.poke()
	}
}

func (s *Scheduler) wakeAll() {
	s.runnersWake.poke()
	s.serverWake.poke()
	s.waitWake.poke()
}

// finished is the store's OnFinish hook: an aborted request that a runner
// was running must stop, wherever the runner is connected. (A request
// aborted while pending or blocked has no worker.)
func (s *Scheduler) finished(wr model.WorkRequest) {
	if wr.Status != model.StatusAborted || wr.WorkerID == nil || model.WorkerTypeFor(wr.TaskType) == model.WorkerServer {
		return
	}
	var out struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(wr.Output, &out)
	reason := out.Error
	if reason == "" {
		reason = "aborted"
	}
	s.publishCancel(store.Revoked{WorkRequest: wr.ID, Worker: *wr.WorkerID, Attempt: wr.Retries}, reason)
}

// publishCancel tells every process that an attempt of a request was
// taken from its worker.
func (s *Scheduler) publishCancel(r store.Revoked, reason string) {
	reason = strings.ToValidUTF8(strings.ReplaceAll(reason, "\x00", ""), "?")
	if len(reason) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut] + "…"
	}
	s.bus.Publish(topicCancel, fmt.Sprintf("%d %d %d %s", r.WorkRequest, r.Worker, r.Attempt, reason))
}

// cancelled handles a cancel signal: the session of this process whose
// runner holds that attempt tells it to stop that request; the others the
// runner runs go on.
func (s *Scheduler) cancelled(payload string) {
	var r store.Revoked
	var reason string
	f := strings.SplitN(payload, " ", 4)
	if len(f) == 4 {
		reason = f[3]
	}
	if _, err := fmt.Sscan(strings.Join(f[:min(3, len(f))], " "), &r.WorkRequest, &r.Worker, &r.Attempt); err != nil {
		return
	}
	s.mu.Lock()
	ss := s.sessions[r.Worker]
	s.mu.Unlock()
	if ss == nil {
		return
	}
	ss.mu.Lock()
	h := ss.held[r.WorkRequest]
	held := h != nil && h.attempt == r.Attempt
	ss.mu.Unlock()
	if held {
		go ss.stop(r.WorkRequest, reason)
	}
}

// resync runs when signals may have been missed (the bus's connection
// came back): everyone looks at the queue once, and every runner of this
// process is told to stop each request it holds that was taken from it
// meanwhile, rather than at its next heartbeat.
func (s *Scheduler) resync() {
	s.wakeAll()
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	if len(sessions) == 0 {
		return
	}
	go func() {
		for _, ss := range sessions {
			ss.mu.Lock()
			held := make([]int64, 0, len(ss.held))
			for id := range ss.held {
				held = append(held, id)
			}
			ss.mu.Unlock()
			for _, id := range held {
				ctx, cancel := context.WithTimeout(ss.ctx, 5*time.Second)
				wr, err := s.st.WorkRequests().Get(ctx, id, nil)
				cancel()
				if err == nil && (wr.Status != model.StatusRunning || wr.WorkerID == nil || *wr.WorkerID != ss.worker) {
					ss.stop(id, "work request "+strconv.FormatInt(id, 10)+" is "+string(wr.Status)+" and no longer assigned to this runner")
				}
			}
		}
	}()
}
