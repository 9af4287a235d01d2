package dashboard

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
)

type workersPage struct {
	Now     time.Time
	State   string // "connected", "disconnected" or "all"
	Pool    *model.WorkerPool
	Workers []workerRow
	Next    string
	First   string
	Counts  workerStates
	Pools   []poolRow
	// PoolNames names the pools of the workers listed.
	PoolNames map[int64]string
	URL       *url.URL
}

func (workersPage) title() string { return "Workers and pools" }

// workerRow is a worker with what it runs, if the visitor sees that
// request, and how long ago it was last heard from.
type workerRow struct {
	model.Worker
	Running   *model.WorkRequest
	Heartbeat *time.Duration
}

// poolRow is a pool with its live instances and the last ones that
// stopped. Admin is set for admins, who see what the API shows them only:
// the autoscaler's last decision, the provider's last error.
type poolRow struct {
	poolView
	Instances []instanceRow
	More      bool
	Stopped   []model.PoolInstance
	Admin     bool
}

// instanceRow is a live instance with its age and runtime (the same, as
// long as it lives: runtime runs from the moment kiln asked for it) and
// the request its runner runs, if the visitor sees it.
type instanceRow struct {
	model.PoolInstance
	Age  time.Duration
	Task *model.WorkRequest
}

// Others counts the requests its runner runs besides the one shown.
func (r instanceRow) Others() int {
	if r.Task == nil {
		return 0
	}
	return r.Running - 1
}

// instancesShown bounds the live instances listed per pool on the page
// (the counts cover all of them), stoppedShown the stopped ones.
const (
	instancesShown = 50
	stoppedShown   = 5
)

// workers lists the workers — to signed-in users, as the API lists them
// to users only — with their state, pool, what they run and their last
// heartbeat, and the pools with their live instances (state, age, task)
// and the last that stopped (runtime, why), their runtime and the budget
// they used this month.
func (d *Dashboard) workers(v *visit) error {
	if err := v.onlyParams("state", "pool", "after"); err != nil {
		return err
	}
	if !v.signedIn() {
		return &pageError{status: http.StatusUnauthorized, msg: "Workers are shown to signed-in users: sign in with your API token to see them."}
	}
	q := v.r.URL.Query()
	p := workersPage{Now: v.now, State: q.Get("state"), URL: v.r.URL}
	f := store.WorkerFilter{Limit: 100}
	switch p.State {
	case "", "connected":
		p.State = "connected"
		yes := true
		f.Connected = &yes
	case "disconnected":
		no := false
		f.Connected = &no
	case "all":
	default:
		return badRequest("state must be connected, disconnected or all, not %q", p.State)
	}
	if s := q.Get("pool"); s != "" {
		pool, err := d.st.WorkerPools().Lookup(v.ctx(), s, nil)
		if err != nil {
			return hiddenAs(err, badRequest("there is no worker pool %q", s))
		}
		p.Pool, f.PoolID = pool, pool.ID
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return badRequest("after must be the id of the last worker of the previous page, not %q", s)
		}
		f.After = n
		p.First = with(v.r.URL, "after", "")
	}
	ws, err := d.st.BrowseWorkers(v.ctx(), f)
	if err != nil {
		return err
	}
	var busy []int64
	for _, w := range ws {
		if w.Busy {
			busy = append(busy, w.ID)
		}
	}
	running, err := d.st.RunningOn(v.ctx(), busy, v.viewer)
	if err != nil {
		return err
	}
	for _, w := range ws {
		row := workerRow{Worker: w}
		if r, ok := running[w.ID]; ok {
			row.Running = &r
		}
		if w.LastSeenAt != nil {
			age := v.now.Sub(*w.LastSeenAt)
			row.Heartbeat = &age
		}
		p.Workers = append(p.Workers, row)
	}
	if len(ws) == f.Limit {
		p.Next = with(v.r.URL, "after", strconv.FormatInt(ws[len(ws)-1].ID, 10))
	}
	farm, err := d.st.Farm(v.ctx())
	if err != nil {
		return err
	}
	p.Counts = countWorkers(farm.Workers)
	p.PoolNames = map[int64]string{}
	var held []int64 // workers of busy instances
	for _, pv := range poolViews(farm.Pools, v.now) {
		p.PoolNames[pv.Pool.ID] = pv.Pool.Name
		row := poolRow{poolView: pv, Admin: v.viewer != nil && v.viewer.Admin}
		insts, err := d.st.PoolInstances(v.ctx(), store.InstanceQuery{PoolID: pv.Pool.ID, Limit: instancesShown + 1})
		if err != nil {
			return err
		}
		if row.Stopped, err = d.st.PoolInstances(v.ctx(), store.InstanceQuery{PoolID: pv.Pool.ID, Stopped: true, Limit: stoppedShown}); err != nil {
			return err
		}
		if len(insts) > instancesShown {
			insts, row.More = insts[:instancesShown], true
		}
		for _, in := range insts {
			row.Instances = append(row.Instances, instanceRow{PoolInstance: in, Age: v.now.Sub(in.CreatedAt)})
			if in.Running > 0 {
				held = append(held, in.WorkerID)
			}
		}
		p.Pools = append(p.Pools, row)
	}
	tasks, err := d.st.RunningOn(v.ctx(), held, v.viewer)
	if err != nil {
		return err
	}
	for i := range p.Pools {
		for j := range p.Pools[i].Instances {
			in := &p.Pools[i].Instances[j]
			if r, ok := tasks[in.WorkerID]; ok && in.Running > 0 {
				in.Task = &r
			}
		}
	}
	v.render(200, "workers", p)
	return nil
}
