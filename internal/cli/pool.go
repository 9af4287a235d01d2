package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/client"
	"github.com/kiln-build/kiln/internal/model"
)

var pools = &resource{
	singular: "worker pool", plural: "worker-pools", nameKey: "name", command: "pool",
	cols: func(*names) []column {
		return []column{field("ID", "id"), field("NAME", "name"), field("PROVIDER", "provider"),
			field("ARCHITECTURES", "architectures"), field("MIN_IDLE", "min_idle"), field("MAX", "max_instances"),
			column{header: "INSTANCES", key: "status", value: poolInstances},
			computed("STATE", poolState), computed("RUNTIME", func(o object) string { return seconds(o["runtime_seconds"]) })}
	},
}

// poolDetails are the extra lines of `kiln pool show`: what the
// autoscaler last did and what failed.
var poolDetails = []column{
	field("BACKENDS", "backends"), field("CONCURRENT", "concurrent"),
	field("IDLE_TIMEOUT", "idle_timeout"), field("STARTUP_TIMEOUT", "startup_timeout"),
	computed("BUDGET", func(o object) string {
		used := seconds(statusOf(o)["budget_used_seconds"])
		if o["max_seconds_per_month"] == nil {
			return used + " this month (no budget)"
		}
		return used + " of " + seconds(o["max_seconds_per_month"]) + " this month"
	}),
	computed("LAST_DECISION", func(o object) string { return when(statusOf(o)["last_decision"], statusOf(o)["last_decision_at"]) }),
	computed("LAST_ERROR", func(o object) string { return when(statusOf(o)["last_error"], statusOf(o)["last_error_at"]) }),
	computed("FAILURES", func(o object) string { return format(statusOf(o)["failures"]) }),
	computed("BACKOFF_UNTIL", func(o object) string { return format(statusOf(o)["backoff_until"]) }),
}

func statusOf(o object) map[string]any {
	st, _ := o["status"].(map[string]any)
	return st
}

// poolInstances counts live instances by state: "3 (1 creating, 2 busy)".
func poolInstances(o object) string {
	counts, _ := statusOf(o)["instances"].(map[string]any)
	total := 0
	var parts []string
	for _, st := range model.LiveInstanceStates {
		n, _ := strconv.Atoi(format(counts[string(st)]))
		if n > 0 {
			total += n
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	if total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// poolState is the one word that says whether the pool can start
// instances.
func poolState(o object) string {
	st := statusOf(o)
	switch {
	case st["deleting"] == true:
		return "deleting"
	case o["enabled"] != true:
		return "disabled"
	}
	if until, ok := st["backoff_until"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, until); err == nil && time.Now().Before(t) {
			return "backing off"
		}
	}
	if e, _ := st["last_error"].(string); e != "" && format(st["failures"]) != "0" {
		return "failing"
	}
	return "active"
}

// when is "text (at time)", or "-".
func when(text, at any) string {
	if s, _ := text.(string); s != "" {
		return s + " (" + format(at) + ")"
	}
	return "-"
}

// seconds shows a number of seconds as a duration: "1h2m3s".
func seconds(v any) string {
	f, err := strconv.ParseFloat(format(v), 64)
	if err != nil {
		return format(v)
	}
	return (time.Duration(f * float64(time.Second))).Round(time.Second).String()
}

// instanceColumns are the columns of `kiln pool instances`.
var instanceColumns = []column{
	field("NAME", "name"), field("STATE", "state"),
	computed("AGE", func(o object) string {
		at, _ := o["created_at"].(string)
		created, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return "-"
		}
		end := time.Now()
		if s, ok := o["stopped_at"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				end = t
			}
		}
		return end.Sub(created).Round(time.Second).String()
	}),
	field("WORKER", "worker_name"), field("TASK", "current_work_request"), field("PROVIDER_ID", "provider_id"),
	computed("STOPPED", func(o object) string {
		if o["stopped_at"] == nil {
			return "-"
		}
		return format(o["stopped_at"]) + " (" + format(o["stop_reason"]) + ")"
	}),
	field("ERROR", "error"),
}

// poolFlags are the settings flags shared by create and update.
type poolFlags struct {
	provider, settings, command                    string
	archs, backends                                []string
	minIdle, maxInstances, concurrent              int
	idleTimeout, startupTimeout                    string
	budget                                         int64
	enabled                                        bool
	noBudget                                       bool
	name                                           string
	flagMinIdle, flagMax, flagBudget, flagSettings bool
}

func (f *poolFlags) register(cmd *cobra.Command, update bool) {
	fs := cmd.Flags()
	fs.StringVar(&f.provider, "provider", "", "how instances start: process (kiln runner children of the server) or exec (your executable, called as EXE create|destroy|list)")
	fs.StringSliceVar(&f.archs, "architectures", nil, "architectures the instances build for, e.g. amd64,i386")
	fs.StringSliceVar(&f.backends, "backends", nil, "backends the instances have, e.g. unshare (requests for backend auto match any pool)")
	fs.IntVar(&f.concurrent, "concurrent", 1, "requests each instance's runner runs at once (its --concurrent); one instance starts per this many pending requests")
	fs.IntVar(&f.minIdle, "min-idle", 0, "idle instances to keep ready")
	fs.IntVar(&f.maxInstances, "max-instances", 1, "most live instances")
	fs.StringVar(&f.idleTimeout, "idle-timeout", "", "stop an instance idle this long, beyond min-idle (default 10m)")
	fs.StringVar(&f.startupTimeout, "startup-timeout", "", "give up an instance whose runner does not connect (or reconnect) within this (default 10m)")
	fs.Int64Var(&f.budget, "max-seconds-per-month", 0, "runtime budget per calendar month (UTC), in seconds: no instance starts beyond it")
	fs.StringVar(&f.settings, "settings", "", "the provider's settings as a JSON object, or @file.json")
	fs.StringVar(&f.command, "command", "", "exec provider: the absolute path of the executable (sets settings.command)")
	if update {
		fs.StringVar(&f.name, "name", "", "new name")
		fs.BoolVar(&f.enabled, "enabled", true, "start instances (false: stop them as they become idle)")
		fs.BoolVar(&f.noBudget, "no-budget", false, "remove the monthly budget")
	} else {
		fs.BoolVar(&f.enabled, "enabled", true, "start instances; a disabled pool starts none")
	}
}

// body turns the flags given into the pool's JSON fields.
func (f *poolFlags) body(s *session) (map[string]any, error) {
	b := map[string]any{}
	if s.changed("provider") {
		b["provider"] = f.provider
	}
	if s.changed("architectures") {
		b["architectures"] = f.archs
	}
	if s.changed("backends") {
		b["backends"] = f.backends
	}
	if s.changed("concurrent") {
		b["concurrent"] = f.concurrent
	}
	if s.changed("min-idle") {
		b["min_idle"] = f.minIdle
	}
	if s.changed("max-instances") {
		b["max_instances"] = f.maxInstances
	}
	for flag, key := range map[string]string{"idle-timeout": "idle_timeout", "startup-timeout": "startup_timeout"} {
		if !s.changed(flag) {
			continue
		}
		v := f.idleTimeout
		if flag == "startup-timeout" {
			v = f.startupTimeout
		}
		d, err := parseDuration("--"+flag, v)
		if err != nil {
			return nil, err
		}
		b[key] = d
	}
	if s.changed("max-seconds-per-month") && f.noBudget {
		return nil, usageError{fmt.Errorf("--max-seconds-per-month and --no-budget exclude each other")}
	}
	if s.changed("max-seconds-per-month") {
		b["max_seconds_per_month"] = f.budget
	}
	if f.noBudget {
		b["max_seconds_per_month"] = nil
	}
	if s.changed("enabled") {
		b["enabled"] = f.enabled
	}
	if s.changed("name") {
		b["name"] = f.name
	}
	var settings map[string]any
	if s.changed("settings") {
		raw, err := jsonFlag("--settings", f.settings)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &settings); err != nil {
			return nil, usageError{fmt.Errorf("--settings: %w", err)}
		}
	}
	if s.changed("command") {
		if settings == nil {
			settings = map[string]any{}
		}
		settings["command"] = f.command
	}
	if settings != nil {
		b["settings"] = settings
	}
	return b, nil
}

// newPoolCommand is `kiln pool`: the worker pools that start and stop
// runners as the queue needs them (admins only).
func newPoolCommand() *cobra.Command {
	cmd, o := group("pool", "Manage worker pools: runners started and stopped with the queue (admins only)")

	var cf poolFlags
	create := &cobra.Command{
		Use:   "create NAME --provider process|exec --architectures ARCH[,ARCH] --max-instances N",
		Short: "Create a worker pool",
		Long: `Create a worker pool. The farm's autoscaler starts an instance for each
pending Worker request for one of its architectures (and backend "auto" or
one of its backends) that no idle worker can take — one per --concurrent
requests when each instance runs several at once — up to --max-instances and
within the monthly budget, keeps --min-idle instances ready and stops those
idle longer than --idle-timeout.

  kiln pool create local --provider process --architectures amd64 --max-instances 4
  kiln pool create cloud --provider exec --command /usr/local/bin/kiln-cloud \
      --architectures arm64 --backends unshare --max-instances 10 \
      --settings '{"config": {"machine_type": "c7g.large"}}'`,
		Args: cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			body, err := cf.body(s)
			if err != nil {
				return err
			}
			body["name"] = args[0]
			if _, ok := body["max_instances"]; !ok {
				body["max_instances"] = cf.maxInstances
			}
			_, err = pools.create(s, body)
			return err
		}),
	}
	cf.register(create, false)

	var listProvider string
	list := &cobra.Command{
		Use:   "list",
		Short: "List worker pools",
		Args:  cobra.NoArgs,
		RunE: run(o, func(s *session, _ []string) error {
			q := url.Values{}
			if listProvider != "" {
				q.Set("provider", listProvider)
			}
			return pools.list(s, q)
		}),
	}
	list.Flags().StringVar(&listProvider, "provider", "", "only pools of this provider")

	show := &cobra.Command{
		Use:   "show POOL",
		Short: "Show a worker pool: its settings, its instances, the autoscaler's last decision and the provider's last failure",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := pools.byName(s, args[0])
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodGet, pools.path(id), nil, &raw); err != nil {
				return err
			}
			return printObject(s, raw, append(pools.cols(s.n), poolDetails...))
		}),
	}

	var uf poolFlags
	update := &cobra.Command{
		Use:   "update POOL",
		Short: "Change a worker pool's settings",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := pools.byName(s, args[0])
			if err != nil {
				return err
			}
			body, err := uf.body(s)
			if err != nil {
				return err
			}
			_, err = pools.update(s, id, body)
			return err
		}),
	}
	uf.register(update, true)

	var wait time.Duration
	del := &cobra.Command{
		Use:     "delete POOL",
		Aliases: []string{"rm"},
		Short:   "Delete a worker pool; its live instances are drained first (no new work, running tasks finish, then they are destroyed)",
		Args:    cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := pools.byName(s, args[0])
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := s.c.Do(s.ctx, http.MethodDelete, pools.path(id), nil, &raw); err != nil {
				return err
			}
			if len(raw) == 0 {
				return printDeleted(s, pools.singular, id, args[0])
			}
			obj, err := decodeObject(raw)
			if err != nil {
				return err
			}
			s.p.note("worker pool %s is being deleted: draining %s; it goes once they are stopped", args[0], poolInstances(obj))
			if wait <= 0 {
				return pools.print(s, raw)
			}
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				err := s.c.Do(s.ctx, http.MethodGet, pools.path(id), nil, nil)
				if err != nil {
					var ae *client.Error
					if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
						fmt.Fprintf(s.p.out, "deleted worker pool %s (id %s)\n", args[0], id)
						return nil
					}
					return err
				}
				select {
				case <-s.ctx.Done():
					return s.ctx.Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
			return fmt.Errorf("worker pool %s still drains after %s; see kiln pool instances %s", args[0], wait, args[0])
		}),
	}
	del.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the pool to be drained and deleted")

	var all bool
	instances := &cobra.Command{
		Use:   "instances POOL",
		Short: "List a worker pool's instances: state, age, worker and current task (--all: with the stopped ones)",
		Args:  cobra.ExactArgs(1),
		RunE: run(o, func(s *session, args []string) error {
			id, err := pools.byName(s, args[0])
			if err != nil {
				return err
			}
			q := url.Values{}
			if all {
				q.Set("all", "true")
			}
			return listAt(s, pools.path(id, "instances"), q, instanceColumns)
		}),
	}
	instances.Flags().BoolVar(&all, "all", false, "include stopped instances, with why they stopped")

	cmd.AddCommand(create, list, show, update, del, instances)
	return cmd
}
