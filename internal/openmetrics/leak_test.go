package openmetrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// canaries makes private strings that must never reach the public
// endpoint: "CANARY-" and ten random letters outside the hex digits (so
// they cannot be mistaken for numbers in the output).
type canaries struct {
	rng  *rand.Rand
	made []string
}

func (c *canaries) next() string {
	b := make([]byte, 10)
	for i := range b {
		b[i] = byte('g' + c.rng.IntN(20))
	}
	c.made = append(c.made, string(b))
	return "CANARY-" + string(b)
}

// find reports every canary in out, also lower-cased or mangled into a
// label name (only the random part survives that).
func (c *canaries) find(out string) []string {
	var found []string
	low := strings.ToLower(out)
	if i := strings.Index(low, "canary"); i >= 0 {
		found = append(found, "…"+out[max(0, i-80):min(len(out), i+40)]+"…")
	}
	for _, m := range c.made {
		if strings.Contains(low, m) {
			found = append(found, m)
		}
	}
	return found
}

func (c *canaries) check(t *testing.T, what, out string) {
	t.Helper()
	for _, leak := range c.find(out) {
		t.Errorf("%s leaks private data: %s", what, leak)
	}
}

// TestNoPrivateDataLeaks builds random farms whose private fields (names
// of private workspaces, users, groups, collections, items, workers and
// templates; identity subjects; token comments; artifact, asset, item and
// task data; file paths) carry canaries, and checks that no canary appears
// in either exposition format nor in the service status. It also checks,
// on each random farm, that both formats parse and that the service status
// agrees with the metrics. ~20 farms on SQLite, one on PostgreSQL; the seed
// is logged (replay with KILN_LEAK_SEED).
func TestNoPrivateDataLeaks(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KILN_LEAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with KILN_LEAK_SEED=%d)", seed, seed)
	runs := map[string]int{"sqlite": 20, "postgres": 1}
	if testing.Short() {
		runs["sqlite"] = 3
	}
	testdb.Each(t, func(t *testing.T, first string) {
		name := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		for i := 0; i < runs[name]; i++ {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(i)))
				clk := &testClock{t: farmNow.Add(-400 * day)}
				dsn := first
				if i > 0 { // runs[postgres] is 1
					dsn = testdb.SQLite(t)
				}
				s := openStore(t, dsn, clk)
				c := &canaries{rng: rng}
				randomFarm(t, s, clk, rng, c)
				if len(c.made) < 10 || len(c.find("x_"+c.made[0]+"_y")) == 0 {
					t.Fatalf("the leak detector does not work: %d canaries", len(c.made))
				}
				clk.Set(farmNow)

				e := New(s, Options{CacheTTL: time.Minute, Now: clk.Now})
				om := scrapeHTTP(t, e, acceptOpenMetrics).Body.String()
				text := scrapeHTTP(t, e, acceptText).Body.String()
				status := httptest.NewRecorder()
				e.ServiceStatus().ServeHTTP(status, httptest.NewRequest("GET", "/api/1.0/service-status/", nil))
				c.check(t, "OpenMetrics", om)
				c.check(t, "text format", text)
				c.check(t, "service status", status.Body.String())

				parseOpenMetrics(t, []byte(om))
				ex := parseText(t, []byte(text))
				checkStatusAgrees(t, fetchStatus(t, e.ServiceStatus()), ex)
				if _, err := Gather(mustSnapshot(t, s)); err != nil {
					t.Errorf("a family failed on a random farm: %v", err)
				}
			})
		}
	})
}

func mustSnapshot(t *testing.T, s Source) *store.Snapshot {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

var (
	leakScopes     = []string{"debian", "kali", "ubuntu"}
	leakIssuers    = []string{"salsa.debian.org", "gitlab.com", "accounts.google.com"}
	leakArchs      = []string{"amd64", "i386", "arm64", "armhf", "hurd-i386", "riscv64"}
	leakCategories = []string{"debian:source-package", "debian:binary-package", "debian:upload", "kiln:work-request-debug-logs", "user:notes"}
	leakTasks      = []string{"sbuild", "lintian", "autopkgtest", "noop"}
)

func pick[T any](rng *rand.Rand, list []T) T { return list[rng.IntN(len(list))] }

// randomFarm fills s with a random farm; every private field is a canary.
func randomFarm(t *testing.T, s *store.SQL, clk *testClock, rng *rand.Rand, c *canaries) {
	f := &farm{t: t, ctx: context.Background(), s: s, clk: clk}
	tick := func() { clk.Add(time.Duration(rng.IntN(int(10*day/time.Second))) * time.Second) }
	data := func() map[string]any {
		return map[string]any{"note": c.next(), "nested": map[string]any{"k": c.next()}}
	}

	var fileStores []int64
	for i, name := range []string{"default", "archive"} {
		fs := &model.FileStore{Name: name, Backend: model.BackendLocal, Configuration: json.RawMessage(`{"path": "` + c.next() + `"}`)}
		if i == 1 || rng.IntN(2) == 0 {
			fs.MaxSize = ptr(int64(1 << 40))
		}
		f.must(s.FileStores().Create(f.ctx, fs))
		fileStores = append(fileStores, fs.ID)
	}

	var workspaces []int64
	scopes := leakScopes[:1+rng.IntN(len(leakScopes))]
	for _, name := range scopes {
		sc := f.scope(name)
		for j := 0; j < 1+rng.IntN(3); j++ {
			var exp time.Duration
			if rng.IntN(2) == 0 {
				exp = day
			}
			workspaces = append(workspaces, f.workspace(sc, "ws-"+c.next(), rng.IntN(3) == 0, exp))
		}
		f.must(s.Groups().Create(f.ctx, &model.Group{ScopeID: sc, Name: "g-" + c.next(), Ephemeral: rng.IntN(2) == 0}))
	}

	var users []int64
	for i := 0; i < 1+rng.IntN(5); i++ {
		ids := map[string]string{}
		for j := 0; j < rng.IntN(3); j++ {
			ids[pick(rng, leakIssuers)] = c.next()
		}
		u := f.user("u-"+c.next(), ids)
		users = append(users, u)
		f.token(model.Token{UserID: &u, Enabled: rng.IntN(3) > 0, Comment: c.next()})
	}

	pool := &model.WorkerPool{Name: "pool-a", Provider: model.ProviderExec, Enabled: true, Architectures: []string{"amd64"},
		MaxInstances: 1, IdleTimeout: model.Duration(time.Minute), StartupTimeout: model.Duration(time.Minute)}
	f.must(s.WorkerPools().Create(f.ctx, pool))
	var workers []int64
	for i := 0; i < 1+rng.IntN(4); i++ {
		var archs []string
		for _, a := range leakArchs {
			if rng.IntN(3) == 0 {
				archs = append(archs, a)
			}
		}
		if len(archs) == 0 {
			archs = []string{"amd64"}
		}
		var poolID *int64
		if rng.IntN(3) == 0 {
			poolID = &pool.ID
		}
		meta := external(archs[0], []string{"unshare"}, archs...)
		w := f.worker("w-"+c.next(), model.WorkerExternal, poolID, meta, rng.IntN(3) > 0)
		workers = append(workers, w)
		f.token(model.Token{WorkerID: &w, Enabled: true, Comment: c.next()}, clk.Now())
	}
	server := f.worker("srv-"+c.next(), model.WorkerServer, nil, model.WorkerMetadata{}, true)

	for i := 0; i < 5+rng.IntN(15); i++ {
		tick()
		ws, by := pick(rng, workspaces), pick(rng, users)
		switch rng.IntN(4) {
		case 0:
			f.submit(model.TaskWorkflow, pick(rng, leakTasks), ws, &by, nil, data())
		case 1:
			f.submit(model.TaskServer, "apt-mirror", ws, &by, nil, data())
		default:
			d := data()
			d["host_architecture"] = pick(rng, leakArchs)
			if rng.IntN(2) == 0 {
				d["backend"] = "unshare"
			}
			f.submit(model.TaskWorker, pick(rng, leakTasks), ws, &by, nil, d)
		}
		if rng.IntN(2) == 0 {
			claimer := server
			if rng.IntN(3) > 0 {
				claimer = pick(rng, workers)
			}
			wr, err := s.ClaimWorkRequest(f.ctx, claimer)
			var fe *store.FieldError
			switch {
			case errors.Is(err, store.ErrNoWork), errors.As(err, &fe):
			case err != nil:
				t.Fatal(err)
			case rng.IntN(2) == 0:
				tick()
				_, err := s.CompleteWorkRequest(f.ctx, wr.ID, claimer, store.Completion{Result: pick(rng, []model.Result{model.ResultSuccess, model.ResultFailure}),
					Output: json.RawMessage(`{"log": "` + c.next() + `"}`)})
				f.must(err)
			}
		}
	}

	for i := 0; i < rng.IntN(6); i++ {
		ws := pick(rng, workspaces)
		a := &model.Artifact{WorkspaceID: ws, Category: pick(rng, leakCategories), Data: mustJSON(data())}
		for j := 0; j < rng.IntN(4); j++ {
			p := "f-" + c.next()
			a.Files = append(a.Files, model.ArtifactFile{Path: p, SHA256: sha(p), Size: rng.Int64N(1 << 22)})
		}
		f.must(s.Artifacts().Create(f.ctx, a))
		if rng.IntN(2) == 0 {
			for _, file := range a.Files {
				f.must(s.AttachFile(f.ctx, a.ID, file.Path, pick(rng, fileStores), nil))
			}
		}
		f.must(s.Assets().Create(f.ctx, &model.Asset{WorkspaceID: ws, Category: "debusine:signing-key", Data: mustJSON(data())}))
		col := &model.Collection{WorkspaceID: ws, Category: "debian:suite", Name: "c-" + c.next(), Data: mustJSON(data())}
		f.must(s.Collections().Create(f.ctx, col))
		for j := 0; j < rng.IntN(3); j++ {
			f.must(s.AddCollectionItem(f.ctx, &model.CollectionItem{CollectionID: col.ID, Name: "i-" + c.next(), Category: "debian:binary-package",
				ArtifactID: &a.ID, Data: mustJSON(data())}, nil))
		}
		f.must(s.WorkflowTemplates().Create(f.ctx, &model.WorkflowTemplate{WorkspaceID: ws, Name: "t-" + c.next(), TaskName: pick(rng, leakTasks),
			StaticData: mustJSON(data())}))
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
