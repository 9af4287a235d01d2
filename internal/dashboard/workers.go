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
	URL     *url.URL
}

func (workersPage) title() string { return "Workers and pools" }

// workerRow is a worker with what it runs, if the visitor sees that
// request, and how long ago it was last heard from.
type workerRow struct {
	model.Worker
	Running   *model.WorkRequest
	Heartbeat *time.Duration
}

// poolRow is a pool with its instances: its workers, each with the age of
// its live instance.
type poolRow struct {
	store.PoolSummary
	Instances []instanceRow
	More      bool
}

type instanceRow struct {
	model.PoolInstance
	Age time.Duration
}

// instancesShown bounds the instances listed per pool on the page; the
// counts cover all of them.
const instancesShown = 50

// workers lists the workers — to signed-in users, as the API lists them
// to users only — with their state, what they run and their last
// heartbeat, and the pools with their instances.
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
	for _, ps := range farm.Pools {
		row := poolRow{PoolSummary: ps}
		insts, err := d.st.PoolInstances(v.ctx(), store.InstanceQuery{PoolID: ps.Pool.ID, Limit: instancesShown + 1})
		if err != nil {
			return err
		}
		if len(insts) > instancesShown {
			insts, row.More = insts[:instancesShown], true
		}
		for _, in := range insts {
			row.Instances = append(row.Instances, instanceRow{PoolInstance: in, Age: v.now.Sub(in.CreatedAt)})
		}
		p.Pools = append(p.Pools, row)
	}
	v.render(200, "workers", p)
	return nil
}
