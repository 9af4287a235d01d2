package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/model"
)

// runnerGrace is how long --wait gives a runner that can take the work to
// connect before it stops waiting: long enough for the runners a server
// starts itself (--local-runners) and for a runner reconnecting after a
// blip, short enough that a request nothing can run is not a hang.
const runnerGrace = 5 * time.Second

// need is what one unfinished request asks of the farm.
type need struct {
	id       string
	step     string // the workflow step, "" for a lone request
	taskType model.TaskType
	arch     string
	backend  string
}

func (n need) String() string {
	what := "work request " + n.id
	if n.step != "" {
		what = "step " + n.step + " (" + what + ")"
	}
	if n.taskType != model.TaskWorker {
		return fmt.Sprintf("%s, a %s task", what, n.taskType)
	}
	backend := n.backend
	if backend == "" {
		backend = model.BackendAuto
	}
	return fmt.Sprintf("%s, for %s with backend %s", what, n.arch, backend)
}

// needsOf lists what the unfinished requests among objs need from a
// worker; requests no worker runs (workflows, waits) need nothing.
func needsOf(objs []object) []need {
	var out []need
	for _, o := range objs {
		tt := model.TaskType(format(o["task_type"]))
		if model.WorkerTypeFor(tt) == "" {
			continue
		}
		if st := model.Status(format(o["status"])); st != model.StatusPending && st != model.StatusBlocked {
			continue
		}
		n := need{id: format(o["id"]), taskType: tt}
		if step, _ := o["step_name"].(string); step != "" {
			n.step = step
		}
		if data, ok := o["task_data"].(map[string]any); ok {
			n.arch, _ = data["host_architecture"].(string)
			n.backend, _ = data["backend"].(string)
		}
		out = append(out, n)
	}
	return out
}

// farmOffers returns what can run work now: the connected, enabled
// workers (disconnected ones are listed apart, by name, since they may
// come back), and the worker pools that can start instances for it.
// pooled is nil when the caller may not read pools (they are admins'):
// whether one offers the work is then unknown.
func farmOffers(s *session) (connected, away, pooled []model.Offer, err error) {
	workers, err := client.List[model.Worker](s.ctx, s.c, client.WithQuery(workers.path(), url.Values{"limit": {"1000"}, "enabled": {"true"}}))
	if err != nil {
		return nil, nil, nil, err
	}
	for i := range workers {
		if workers[i].ConnectedAt != nil {
			connected = append(connected, workers[i].Offer())
		} else {
			away = append(away, workers[i].Offer())
		}
	}
	ps, err := client.List[model.WorkerPool](s.ctx, s.c, client.WithQuery(pools.path(), url.Values{"limit": {"1000"}}))
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return connected, away, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	pooled = []model.Offer{}
	for i := range ps {
		if ps[i].CanStart() {
			pooled = append(pooled, ps[i].Offer())
		}
	}
	return connected, away, pooled, nil
}

// stranded returns the needs no offer can meet.
func stranded(needs []need, offers []model.Offer) []need {
	var out []need
	for _, n := range needs {
		if !slices.ContainsFunc(offers, func(o model.Offer) bool { return o.Runs(n.taskType, n.arch, n.backend) }) {
			out = append(out, n)
		}
	}
	return out
}

// describeOffers names offers for people: "runner-amd64 (amd64, i386;
// backends host, unshare)", "server-1 (Server tasks)"; beyond
// maxNamedOffers, what they offer between them, so that a large farm
// gets one line.
func describeOffers(offers []model.Offer) string {
	if len(offers) == 0 {
		return "none"
	}
	if len(offers) > maxNamedOffers {
		var archs, backends, other []string
		for _, o := range offers {
			if o.WorkerType != model.WorkerExternal {
				other = appendNew(other, string(o.WorkerType))
				continue
			}
			for _, a := range o.Architectures {
				archs = appendNew(archs, a)
			}
			for _, b := range o.Backends {
				backends = appendNew(backends, b)
			}
		}
		slices.Sort(archs)
		slices.Sort(backends)
		return fmt.Sprintf("%d workers: runners for %s (backends %s), and %s workers",
			len(offers), orNone(archs), orNone(backends), orNone(other))
	}
	parts := make([]string, len(offers))
	for i, o := range offers {
		switch o.WorkerType {
		case model.WorkerExternal:
			parts[i] = fmt.Sprintf("%s (%s; backends %s)", o.Name, orNone(o.Architectures), orNone(o.Backends))
		case model.WorkerServer:
			parts[i] = o.Name + " (Server tasks)"
		default:
			parts[i] = fmt.Sprintf("%s (%s worker)", o.Name, o.WorkerType)
		}
	}
	return strings.Join(parts, ", ")
}

// maxNamedOffers is how many connected workers --wait names one by one.
const maxNamedOffers = 6

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// runnerCheck is what --wait does about work that nothing connected can
// run: it says so at once on stderr, naming what is connected; then it
// waits runnerGrace for a runner that can to connect, and stops waiting
// with an error unless the user asked to wait anyway (--wait-for-runner).
type runnerCheck struct {
	anyway   bool
	abort    string // the command that drops the work, for the message
	deadline time.Time
	warned   bool
	noted    bool // said that a pool starts runners for some of it
	done     bool // settled: every need can be met, or waiting anyway
}

// poll looks at the unfinished requests among objs; it returns an error
// when waiting should stop.
func (rc *runnerCheck) poll(s *session, objs []object) error {
	if rc.done {
		return nil
	}
	needs := needsOf(objs)
	if len(needs) == 0 {
		rc.done = true
		return nil
	}
	connected, away, pooled, err := farmOffers(s)
	if err != nil {
		rc.done = true
		s.p.warn("cannot tell which workers are connected (%v); waiting", err)
		return nil
	}
	left := stranded(needs, connected)
	if len(left) == 0 {
		if rc.warned {
			s.p.warn("a worker that can run it is connected now; waiting for it to finish")
		}
		rc.done = true
		return nil
	}
	msg := make([]string, len(left))
	for i, n := range left {
		msg[i] = n.String()
	}
	if pooled == nil {
		// worker pools are admins' to see: one may be starting a runner
		rc.done = true
		s.p.warn("no connected worker can run %s; a worker pool may start one (only admins see pools); waiting.", strings.Join(msg, "; "))
		return nil
	}
	if still := stranded(left, pooled); len(still) < len(left) {
		if !rc.noted {
			rc.noted = true
			var offered, names []string
			for _, n := range left {
				if !slices.Contains(still, n) {
					offered = append(offered, n.String())
				}
			}
			for _, o := range pooled {
				if len(stranded(left, []model.Offer{o})) < len(left) {
					names = append(names, strings.TrimPrefix(o.Name, "worker pool "))
				}
			}
			s.p.note("no connected worker can run %s yet; worker pool %s starts runners for it.",
				strings.Join(offered, "; "), strings.Join(names, ", "))
		}
		if left = still; len(left) == 0 {
			rc.done = true
			return nil
		}
		msg = msg[:0]
		for _, n := range left {
			msg = append(msg, n.String())
		}
	}
	if !rc.warned {
		rc.warned = true
		rc.deadline = time.Now().Add(runnerGrace)
		s.p.warn("no connected worker can run %s, and no worker pool offers one.", strings.Join(msg, "; "))
		s.p.warn("connected: %s.", describeOffers(connected))
		var could []string
		for _, o := range away {
			if len(stranded(left, []model.Offer{o})) < len(left) {
				could = append(could, o.Name)
			}
		}
		if len(could) > 0 {
			s.p.warn("not connected now, but could run it: %s.", strings.Join(could, ", "))
		}
		if rc.anyway {
			s.p.warn("waiting until one connects (--wait-for-runner).")
			rc.done = true
			return nil
		}
		s.p.warn("giving a runner %s to connect.", runnerGrace)
	}
	if time.Now().After(rc.deadline) {
		what := make([]string, len(left))
		for i, n := range left {
			what[i] = n.String()
		}
		return fmt.Errorf("stopped waiting: nothing connected can run %s. It stays pending: --wait-for-runner waits until a runner that can connects; drop it with: %s",
			strings.Join(what, "; "), rc.abort)
	}
	return nil
}

// decodeObjects turns a JSON list of objects into objects.
func decodeObjects(list []any) []object {
	out := make([]object, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
