package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// pooled is what seedPools made, for figures computed by hand.
type pooled struct {
	// instances by role: stopped (ran 10 min, stopped for idle_timeout
	// after a failed create was recorded on it), busyPub (runs a public
	// request), busyPriv (runs a request of hushed-ws), idle, creating.
	inst map[string]*model.PoolInstance
	// pubTask, privTask are the requests the busy ones run.
	pubTask, privTask int64
	// runtime and used are the pool's runtime and the part of it in the
	// current month, in seconds, at the farm's clock.
	runtime, used float64
}

// poolArch is the architecture the seeded pool's instances build for.
const poolArch = "cloudarch"

// seedPools gives the farm two worker pools, on the store's clock: cloud
// (exec, instances of 2 at once, at most 5, a budget of 10 h a month) with
// one instance that ran 10 minutes and stopped, then four live for 30
// minutes — two busy, one idle for 25 minutes, one still creating — a
// recorded decision and failure; and spare (process, disabled), which
// never ran anything.
func (f *farm) seedPools() pooled {
	f.t.Helper()
	ctx := context.Background()
	budget := int64(36000)
	cloud := &model.WorkerPool{Name: "cloud", Provider: model.ProviderExec, Enabled: true, Architectures: []string{poolArch},
		Concurrent: 2, MaxInstances: 5, IdleTimeout: model.Duration(10 * time.Minute), StartupTimeout: model.Duration(5 * time.Minute),
		MaxSecondsPerMonth: &budget, Settings: json.RawMessage(`{"command": "/usr/local/bin/kiln-cloud-hushedsecret"}`)}
	f.must(f.st.WorkerPools().Create(ctx, cloud))
	spare := &model.WorkerPool{Name: "spare", Provider: model.ProviderProcess, Architectures: []string{"amd64"}, MaxInstances: 1,
		IdleTimeout: model.Duration(time.Minute), StartupTimeout: model.Duration(time.Minute)}
	f.must(f.st.WorkerPools().Create(ctx, spare))

	p := pooled{inst: map[string]*model.PoolInstance{}}
	start := func(role string) *model.PoolInstance {
		inst, _, err := f.st.StartPoolInstance(ctx, cloud.ID)
		f.must(err)
		p.inst[role] = inst
		return inst
	}
	connect := func(inst *model.PoolInstance) {
		_, _, err := f.st.ConnectWorker(ctx, inst.WorkerID, model.WorkerMetadata{Architectures: []string{poolArch},
			HostArchitecture: poolArch, Concurrent: 2})
		f.must(err)
		f.must(f.st.PoolInstanceConnected(ctx, inst.ID, f.now))
	}
	t0 := f.now
	stopped := start("stopped")
	f.must(f.st.RecordPoolInstanceFailure(ctx, stopped.ID, store.InstanceFailure{Error: "create: exit status 3: quota exceeded"}))
	connect(stopped)
	f.now = t0.Add(10 * time.Minute)
	f.must(f.st.DisconnectWorker(ctx, stopped.WorkerID))
	f.must(f.st.StopPoolInstance(ctx, stopped.ID, f.now, "idle_timeout"))
	for _, role := range []string{"busyPub", "busyPriv", "idle", "creating"} {
		inst := start(role)
		if role != "creating" {
			connect(inst)
		}
	}
	for _, ws := range []string{"pub", "priv"} {
		wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "pooltask", WorkspaceID: f.ids[ws],
			Data: json.RawMessage(`{"host_architecture": "` + poolArch + `"}`)}
		if ws == "priv" {
			wr.TaskName = "hushedtask"
		}
		f.must(f.st.SubmitWorkRequest(ctx, wr))
		role := map[string]string{"pub": "busyPub", "priv": "busyPriv"}[ws]
		got, err := f.st.ClaimWorkRequest(ctx, p.inst[role].WorkerID)
		f.must(err)
		if got.ID != wr.ID {
			f.t.Fatalf("%s claimed %d, want %d", role, got.ID, wr.ID)
		}
		if ws == "pub" {
			p.pubTask = wr.ID
		} else {
			p.privTask = wr.ID
		}
	}
	idleSince := t0.Add(15 * time.Minute)
	f.must(f.st.SetPoolInstanceIdle(ctx, p.inst["idle"].ID, &idleSince))
	decision, failure, one := "up: started instances for 2 pending requests", "instance cloud-1: create: exit status 3: quota exceeded", 1
	f.must(f.st.RecordPoolStatus(ctx, cloud.ID, store.PoolStatusUpdate{Decision: &decision}))
	f.must(f.st.RecordPoolStatus(ctx, cloud.ID, store.PoolStatusUpdate{Error: &failure, Failures: &one}))
	f.now = t0.Add(40 * time.Minute)

	// by hand: 10 min stopped, four live for 30 min each
	p.runtime = (10*time.Minute + 4*30*time.Minute).Seconds()
	month := store.MonthStart(f.now)
	for _, span := range [][2]time.Time{{t0, t0.Add(10 * time.Minute)}, {t0.Add(10 * time.Minute), f.now}} {
		n := 1.0
		if span[0].After(t0) {
			n = 4
		}
		from := span[0]
		if month.After(from) {
			from = month
		}
		if from.Before(span[1]) {
			p.used += n * span[1].Sub(from).Seconds()
		}
	}
	return p
}

// cells reads the cells of the rows of a table that carry attr="value",
// with their text squeezed: row value → texts.
func cells(body, attr string) map[string][]string {
	row := regexp.MustCompile(`(?s)<tr ` + attr + `="([^"]+)">(.*?)</tr>`)
	cell := regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tag := regexp.MustCompile(`<[^>]+>`)
	out := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(body, -1) {
		for _, c := range cell.FindAllStringSubmatch(m[2], -1) {
			out[m[1]] = append(out[m[1]], strings.Join(strings.Fields(tag.ReplaceAllString(c[1], "")), " "))
		}
	}
	return out
}

// TestPoolsOnTheOverviewAndWorkersPage: the overview shows every visitor
// each pool's state, live instances by state, runtime and the budget used
// this month, as computed by hand; the workers page shows signed-in users
// the live instances with state, age, the request they run (when the
// visitor sees it) and idle time, and the last stopped ones with their
// runtime and why they stopped; what the API shows admins only — the
// autoscaler's last decision, the provider's errors, the settings — stays
// with admins. On both databases.
func TestPoolsOnTheOverviewAndWorkersPage(t *testing.T) {
	testdb.Each(t, func(t *testing.T, dsn string) {
		f := newFarm(t, dsn)
		p := f.seedPools()

		body := f.get("/", "").body
		rows := cells(body, "data-pool")
		used := duration(p.used)
		want := map[string][]string{
			"cloud": {"cloud", "exec", "failing", "4 of 5 (1 creating, 1 idle, 2 busy)", "2 h 10 min", used + " of 10 h 00 min (" +
				percent(p.used/36000) + ")"},
			"spare": {"spare", "process", "disabled", "0 of 1", "0 s", "0 s"},
		}
		for name, w := range want {
			if strings.Join(rows[name], " | ") != strings.Join(w, " | ") {
				t.Errorf("the overview's row of pool %s:\n got %q\nwant %q", name, rows[name], w)
			}
		}
		for _, secret := range []string{"hushedsecret", "quota exceeded", "started instances"} {
			if strings.Contains(body, secret) {
				t.Errorf("the overview shows anonymous visitors %q", secret)
			}
		}

		inst := func(role string) string { return p.inst[role].Name }
		for _, c := range []struct {
			who        string
			privLinked bool
			admin      bool
		}{{outsider, false, false}, {member, true, false}, {admin, true, true}} {
			body := f.get("/workers/", f.session(visitorToken[c.who])).body
			rows := cells(body, "data-instance")
			pub := "#" + itoa(p.pubTask) + " pooltask"
			priv := "a request you do not see"
			if c.privLinked {
				priv = "#" + itoa(p.privTask) + " hushedtask"
			}
			want := map[string][]string{
				inst("busyPub"):  {inst("busyPub"), p.inst["busyPub"].WorkerName, "busy", "30 min 00 s", pub, "—"},
				inst("busyPriv"): {inst("busyPriv"), p.inst["busyPriv"].WorkerName, "busy", "30 min 00 s", priv, "—"},
				inst("idle"):     {inst("idle"), p.inst["idle"].WorkerName, "idle", "30 min 00 s", "—", "25 min 00 s"},
				inst("creating"): {inst("creating"), p.inst["creating"].WorkerName, "creating", "30 min 00 s", "—", "—"},
				inst("stopped"):  {inst("stopped"), p.inst["stopped"].WorkerName, "10 min 00 s", "30 min 00 s ago", "idle_timeout"},
			}
			if c.admin {
				want[inst("stopped")] = append(want[inst("stopped")], "create: exit status 3: quota exceeded")
			}
			for name, w := range want {
				if strings.Join(rows[name], " | ") != strings.Join(w, " | ") {
					t.Errorf("%s: the workers page's row of instance %s:\n got %q\nwant %q", c.who, name, rows[name], w)
				}
			}
			for fig, want := range map[string]string{"state": "failing", "live": "4", "budget-share": percent(p.used / 36000)} {
				if got := figureIn(body, "pool-cloud", fig); got != want {
					t.Errorf("%s: pool cloud's %s is %q, want %q", c.who, fig, got, want)
				}
			}
			if !strings.Contains(body, "1 creating, 1 idle, 2 busy · each runs 2 at once") {
				t.Errorf("%s: the workers page does not count the instances by state", c.who)
			}
			for _, secret := range []string{"started instances for 2 pending", "quota exceeded"} {
				if strings.Contains(body, secret) != c.admin {
					t.Errorf("%s: %q shown: %v", c.who, secret, !c.admin)
				}
			}
			if strings.Contains(body, "hushedsecret") {
				t.Errorf("%s: the workers page shows a pool's settings", c.who)
			}
		}
	})
}

// figureIn is the text of the data-figure fig inside the element of id.
func figureIn(body, id, fig string) string {
	i := strings.Index(body, `id="`+id+`"`)
	if i < 0 {
		return ""
	}
	m := regexp.MustCompile(`data-figure="` + fig + `"[^>]*>([^<]*)<`).FindStringSubmatch(body[i:])
	if m == nil {
		return ""
	}
	return m[1]
}

// duration and percent are the dashboard's formats, for figures computed
// by hand (at least a minute, at most two days).
func duration(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	if d < time.Hour {
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
}

func percent(r float64) string { return strconv.FormatFloat(r*100, 'f', 1, 64) + " %" }

// TestBrowserPools: in the browser, an anonymous visitor reads the pools
// on the overview; a member signs in, goes from the overview to the pool
// on the workers page, and from a busy instance to the private request it
// runs. No console errors on the way (the tab checks).
func TestBrowserPools(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	p := f.seedPools()
	tb := newTab(t)
	tb.open(f.srv.URL+"/", 200)
	row := strings.Join(strings.Fields(tb.text(`#pools tr[data-pool="cloud"]`)), " ")
	if !strings.Contains(row, "failing 4 of 5 (1 creating, 1 idle, 2 busy) 2 h 10 min") {
		t.Fatalf("the overview's row of pool cloud reads %q", row)
	}
	if n := eval[int](tb, `document.querySelectorAll('#pools a').length`); n != 0 {
		t.Fatalf("an anonymous visitor gets %d links to the workers page", n)
	}
	tb.signIn(f, "alice", "/")
	tb.follow(`#pools a[href="/workers/#pool-cloud"]`)
	busy := `#pool-cloud tr[data-instance="` + p.inst["busyPriv"].Name + `"]`
	if got := strings.Join(strings.Fields(tb.text(busy)), " "); !strings.Contains(got, "busy 30 min 00 s #"+itoa(p.privTask)+" hushedtask") {
		t.Fatalf("the busy instance's row reads %q", got)
	}
	tb.follow(busy + ` a[href="/work-requests/` + itoa(p.privTask) + `/"]`)
	if got := tb.path(); got != "/work-requests/"+itoa(p.privTask)+"/" {
		t.Fatalf("the instance's task link led to %s", got)
	}
}
