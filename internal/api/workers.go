package api

import (
	"context"
	"math"
	"net/http"
	"regexp"
	"strconv"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/runner/protocol"
)

// Dispatcher is the part of the scheduler the API talks to: it serves
// runner connections and is told when the queue changes. The server passes
// its *scheduler.Scheduler in Options.Dispatcher; without one, runners
// cannot connect (503) and the rest of the API works as usual. What the
// store records reaches the scheduler of every replica without the API:
// requests that become pending wake runners, aborted ones are cancelled
// on their runners (store.OnPending, store.OnFinish), and the logs
// runners stream are read from the store.
type Dispatcher interface {
	// ServeRunner speaks the runner protocol on an accepted WebSocket
	// until it ends.
	ServeRunner(ctx context.Context, conn *websocket.Conn, w *model.Worker)
	// Poke says that runners, wherever they are connected, may now get
	// work although no request became pending (a worker was enabled).
	Poke()
}

// nopDispatcher stands in when the API runs without a scheduler.
type nopDispatcher struct{}

// The methods of nopDispatcher do nothing: there is no scheduler.
func (nopDispatcher) ServeRunner(context.Context, *websocket.Conn, *model.Worker) {}
func (nopDispatcher) Poke()                                                       {}

func (a *API) dispatcher() Dispatcher {
	if a.opts.Dispatcher == nil {
		return nopDispatcher{}
	}
	return a.opts.Dispatcher
}

type workerInput struct {
	Name       *string           `json:"name"`
	WorkerType *model.WorkerType `json:"worker_type"`
	Enabled    *bool             `json:"enabled"`
}

// newWorker is the answer to POST workers/: the worker and, once, the
// secret of the token its runner uses.
type newWorker struct {
	model.Worker
	Token *model.NewToken `json:"token"`
}

// workerRoutes: users read workers (they are not secret: the dashboard and
// the public metrics show them); admins create, enable, disable and delete
// them. POST workers/ creates an enabled worker with its runner token (the
// secret is in that answer only). Runners without a token register
// themselves (workers/register/, anonymous): they start disabled until an
// admin enables them. Runners connect to workers/connect/ with their token.
func (a *API) workerRoutes() []Route {
	routes := (&resource[model.Worker, workerInput]{
		a: a, name: "worker", path: "workers", table: a.st.Workers(), readOnly: []string{"token"},
		id:      func(w *model.Worker) int64 { return w.ID },
		filters: map[string]filterFunc{"name": textFilter, "worker_type": textFilter, "enabled": boolFilter},
		read:    (*call).requireUser,
		write:   (*call).requireAdmin,
		create: func(c *call, in *workerInput) (*model.Worker, error) {
			if err := c.unrestricted(); err != nil {
				return nil, err
			}
			w := &model.Worker{WorkerType: model.WorkerExternal, Enabled: true}
			set(&w.Name, in.Name)
			set(&w.WorkerType, in.WorkerType)
			set(&w.Enabled, in.Enabled)
			if w.Name == "" {
				return nil, required("name")
			}
			return w, nil
		},
		insert: func(c *call, w *model.Worker) (int64, any, error) {
			if err := c.a.st.Workers().Create(c.ctx(), w); err != nil {
				return 0, nil, err
			}
			tok, err := c.a.st.CreateToken(c.ctx(), model.Token{WorkerID: &w.ID, Enabled: true, Comment: "runner " + w.Name})
			if err != nil {
				// leave no worker that nobody can use
				_ = c.a.st.Workers().Delete(context.WithoutCancel(c.ctx()), w.ID, nil)
				return 0, nil, err
			}
			return w.ID, newWorker{Worker: *w, Token: tok}, nil
		},
		allow: func(c *call, _ *model.Worker) error { return c.unrestricted() },
		update: func(c *call, in *workerInput) (func(*model.Worker) error, error) {
			if in.WorkerType != nil {
				return nil, invalidField("worker_type", "%q cannot be changed: create another worker", "worker_type")
			}
			return func(w *model.Worker) error {
				set(&w.Name, in.Name)
				set(&w.Enabled, in.Enabled)
				c.a.dispatcher().Poke() // an enabled runner may now get work
				return nil
			}, nil
		},
	}).routes()
	return append(routes,
		Route{"POST " + protocol.RegisterPath + "{$}", a.endpoint(registerWorker)},
		Route{"GET " + protocol.Path + "{$}", http.HandlerFunc(a.connectRunner)},
	)
}

// RegistrationOptions bounds the self-registration of runners (POST
// workers/register/), which anyone may call: without bounds, 100 anonymous
// calls made 100 workers.
type RegistrationOptions struct {
	// Disabled refuses every registration (403): runners then need a
	// token an admin created (kiln worker create).
	Disabled bool
	// MaxPending caps the self-registered workers that wait for an admin
	// to enable or delete them (409 beyond); 0 means
	// DefaultMaxPendingRegistrations.
	MaxPending int
	// PerMinute is how many registrations this server process accepts per
	// minute, in a burst of as many at most (429 beyond, with
	// Retry-After); 0 means DefaultRegistrationsPerMinute.
	PerMinute int
}

// Defaults of RegistrationOptions: enough for a fleet of new runners to
// come up at once, too few to matter as a flood.
const (
	DefaultMaxPendingRegistrations = 20
	DefaultRegistrationsPerMinute  = 10
)

func (o *RegistrationOptions) setDefaults() {
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPendingRegistrations
	}
	if o.PerMinute <= 0 {
		o.PerMinute = DefaultRegistrationsPerMinute
	}
}

func (o *RegistrationOptions) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(o.PerMinute)/60), o.PerMinute)
}

// paceRegistration takes a registration from the rate limit, or answers
// 429 saying when to come back.
func (c *call) paceRegistration() error {
	r := c.a.registrations.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		secs := int(math.Ceil(d.Seconds()))
		e := errorf(http.StatusTooManyRequests, "", "too many runners register with this server just now (at most %d a minute): try again in %d s", c.a.opts.Registration.PerMinute, secs).(*apiError)
		e.retryAfter = secs
		return e
	}
	return nil
}

type registerInput struct {
	Name       *string `json:"name"`
	SecretHash *string `json:"secret_hash"`
}

var registerSpec = specOf[registerInput, model.Worker]("token")

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// registerWorker records a runner that has no token yet: an external
// worker, disabled, with a token whose hash the runner chose (it keeps the
// secret). Nothing runs on it until an admin enables it, so registering
// gives an anonymous caller nothing but a name in the list of workers —
// and RegistrationOptions bounds even that.
func registerWorker(c *call) error {
	if err := c.noQuery(); err != nil {
		return err
	}
	if c.a.opts.Registration.Disabled {
		return forbidden("runners cannot register themselves on this server: ask an admin for a runner token ('kiln worker create NAME') and start the runner with it")
	}
	if err := c.paceRegistration(); err != nil {
		return err
	}
	var in registerInput
	if err := c.decode(registerSpec, &in); err != nil {
		return err
	}
	if in.Name == nil || *in.Name == "" {
		return required("name")
	}
	if in.SecretHash == nil || !hexSHA256.MatchString(*in.SecretHash) {
		return invalidField("secret_hash", "%q must be the SHA-256 of the runner's secret, as 64 lower-case hex digits", "secret_hash")
	}
	w, err := c.a.st.RegisterWorker(c.ctx(), *in.Name, *in.SecretHash, c.a.opts.Registration.MaxPending)
	if err != nil {
		return err
	}
	c.a.log.Info("runner registered; it waits for an admin to enable it", "worker", w.Name, "id", w.ID)
	return c.created(Prefix+"workers/"+strconv.FormatInt(w.ID, 10)+"/", w)
}

// connectRunner upgrades a runner's request to the WebSocket of package
// protocol and hands it to the scheduler. Only worker tokens may connect.
func (a *API) connectRunner(w http.ResponseWriter, r *http.Request) {
	c := &call{a: a, w: w, r: r}
	if err := c.authenticate(); err != nil {
		a.fail(w, r, err)
		return
	}
	switch {
	case c.p == nil:
		a.fail(w, r, errorf(http.StatusUnauthorized, "", `runners connect with their token: send "Authorization: Token <secret>"`))
		return
	case c.p.Worker == nil:
		a.fail(w, r, forbidden("this token belongs to a user, not to a runner; create a worker with 'kiln worker create'"))
		return
	case c.p.Worker.WorkerType != model.WorkerExternal:
		a.fail(w, r, forbidden("worker %q is of type %s; only external workers connect as runners", c.p.Worker.Name, c.p.Worker.WorkerType))
		return
	case a.opts.Dispatcher == nil:
		a.fail(w, r, errorf(http.StatusServiceUnavailable, "", "this server does not accept runners (it runs without a scheduler)"))
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		return // Accept has answered
	}
	if conn.Subprotocol() != protocol.Subprotocol {
		conn.Close(websocket.StatusPolicyViolation, "speak "+protocol.Subprotocol)
		return
	}
	a.opts.Dispatcher.ServeRunner(r.Context(), conn, c.p.Worker)
}
