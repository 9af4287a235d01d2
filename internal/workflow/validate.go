package workflow

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/model"
)

// Limits on what one template may declare. They keep a template's cost
// (children per workflow, series per run) visible and bounded before it is
// saved, rather than discovered at run time. The schema bounds the rest:
// labels per metric, buckets per histogram, a step's max_retries.
const (
	// MaxChildren bounds the work requests one workflow creates (the
	// schema bounds a sequence's steps by it too).
	MaxChildren = 256
	// MaxMetrics bounds the metrics declared by one template, steps
	// included.
	MaxMetrics = 50
)

// MetricPrefix is put in front of every declared metric name, so that
// users' metrics can neither collide with nor impersonate kiln's own.
const MetricPrefix = "kiln_workflow_"

// paramNamePattern is what {{params.NAME}} may name in task data; the
// schema holds the same for the keys of parameters.
var paramNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)

// metricKind is the Prometheus type of a declared metric.
type metricKind string

const (
	kindCounter   metricKind = "counter"
	kindGauge     metricKind = "gauge"
	kindHistogram metricKind = "histogram"
)

// varKind says what a variable holds, for checking how it is used.
type varKind int

const (
	varText varKind = iota
	varStatus
	varNumber
)

// level is where a metric is declared: the variables it may use.
type level struct {
	name string // "workflow" or "step"
	vars map[string]varKind
}

var workflowLevel = level{name: "workflow", vars: map[string]varKind{
	"workflow.status": varStatus, "workflow.duration": varNumber, "workflow.name": varText,
}}

func stepLevel(matrixKeys []string) level {
	l := level{name: "step", vars: map[string]varKind{"status": varStatus, "duration": varNumber, "task.name": varText}}
	for _, k := range matrixKeys {
		l.vars["matrix."+k] = varText
	}
	return l
}

// names lists the level's variables for messages.
func (l level) names() string {
	var out []string
	for v := range l.vars {
		out = append(out, "{{"+v+"}}")
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// checkVar reports a variable that the level does not have, saying where
// it belongs when it is the other level's.
func (l level) checkVar(path, v string, ps *problems) (varKind, bool) {
	if k, ok := l.vars[v]; ok {
		return k, true
	}
	other := stepLevel(nil)
	if l.name == "step" {
		other = workflowLevel
	}
	switch {
	case hasVar(other, v):
		ps.add(path, "{{%s}} is a %s-level variable; here (%s level) use %s", v, other.name, l.name, l.names())
	case strings.HasPrefix(v, "matrix."):
		ps.add(path, "{{%s}} is not a key of this step's matrix; here use %s", v, l.names())
	case strings.HasPrefix(v, "params."):
		ps.add(path, "{{%s}}: parameters change with every workflow, so metrics may not use them; here use %s", v, l.names())
	default:
		ps.add(path, "{{%s}} is not a variable; here use %s", v, l.names())
	}
	return 0, false
}

// compiled is a validated template, ready to expand and to emit metrics.
type compiled struct {
	t        *Template
	workflow []*metricSpec
	steps    map[string]*compiledStep // by step name
	// params maps every {{params.NAME}} used in task data to the paths
	// that use it, in document order.
	params     map[string][]string
	paramOrder []string
}

// compiledStep is one step of a template with its metrics.
type compiledStep struct {
	step    *Step
	path    string
	matrix  bool // the task of a matrix: named NAME-VALUE…
	metrics []*metricSpec
}

// metricSpec is a declared metric, checked and parsed.
type metricSpec struct {
	path    string
	name    string // with MetricPrefix
	help    string
	kind    metricKind
	keys    []string // declared keys, sorted
	values  map[string]textTemplate
	when    *condition
	value   textTemplate
	buckets []float64
}

// shape is what every declaration of one metric name must agree on.
func (m *metricSpec) shape() string {
	return fmt.Sprintf("%s %v %v", m.kind, m.keys, m.buckets)
}

func (m *metricSpec) describeShape() string {
	s := "a " + string(m.kind)
	if len(m.keys) > 0 {
		s += " with labels " + strings.Join(m.keys, ", ")
	} else {
		s += " without labels"
	}
	if m.kind == kindHistogram {
		s += fmt.Sprintf(" and buckets %v", m.buckets)
	}
	return s
}

// Validate checks everything about a template that can be checked before a
// workflow runs: its document against the schema (names, kinds, steps,
// types), then what the schema cannot say — parameters used in task data,
// steps named once, every declared metric (labels, buckets, values,
// when-conditions, variables of the right level). The error is an *Error
// naming each field.
//
// Each step's task is also checked as the API checks a single work
// request (package tasks): the task must exist for its type and its data
// must be well-formed. A step whose task data uses parameters is checked
// for its task name only, since a placeholder is no valid timeout or
// duration; Expand checks it fully with the run's values.
func (t *Template) Validate() error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	tree, err := readJSON(b)
	if err != nil {
		return err
	}
	var ps problems
	fromDocument(tree.(*object), nil, true, &ps)
	return ps.err()
}

// beyondSchema checks what the schema cannot say; withTasks adds the
// check of each step's task.
func (t *Template) beyondSchema(withTasks bool) []Problem {
	c, err := t.compile()
	if err != nil {
		return err.(*Error).Problems
	}
	if !withTasks {
		return nil
	}
	var ps problems
	wf, paths := c.expand(func(name string) string { return "{{params." + name + "}}" })
	for i, st := range wf.Steps {
		if c.usesParams(paths[i]) {
			st.Request.Data = nil // the task name is still checked
		}
	}
	c.checkTasks(wf, paths, &ps)
	var kept []Problem
	for _, p := range ps.list {
		if !strings.Contains(p.Path, ".task_data") || !c.usesParams(strings.SplitN(p.Path, ".task_data", 2)[0]) {
			kept = append(kept, p)
		}
	}
	return kept
}

// usesParams reports whether the step at path uses {{params.…}} in its
// task data.
func (c *compiled) usesParams(step string) bool {
	for _, paths := range c.params {
		for _, p := range paths {
			if strings.HasPrefix(p, step+".task_data") {
				return true
			}
		}
	}
	return false
}

func (t *Template) compile() (*compiled, error) {
	var ps problems
	c := &compiled{t: t, steps: map[string]*compiledStep{}, params: map[string][]string{}}
	var steps []*compiledStep
	switch t.Kind {
	case KindSequence:
		for i := range t.Steps {
			steps = append(steps, &compiledStep{step: &t.Steps[i], path: index("steps", i)})
		}
	case KindMatrix:
		combos := 1
		for _, vals := range t.Matrix {
			combos *= max(1, len(vals))
		}
		if combos+1 > MaxChildren {
			ps.add("matrix", "makes %d combinations; at most %d children are allowed", combos, MaxChildren-1)
		}
		if t.Task != nil {
			steps = append(steps, &compiledStep{step: t.Task, path: "task", matrix: true})
			for _, k := range sortedKeys(t.Matrix) {
				if _, ok := t.Task.TaskData[k]; ok {
					ps.add(field("task.task_data", k), "is set by the matrix; remove it from task_data")
				}
			}
		}
		if t.Then != nil {
			steps = append(steps, &compiledStep{step: t.Then, path: "then"})
			if t.Task != nil && t.Task.Name != "" && strings.HasPrefix(t.Then.Name, t.Task.Name+"-") {
				ps.add("then.name", "%q could be the name of a run of the task (they are named %s-VALUE); choose a name that does not start with %q",
					t.Then.Name, t.Task.Name, t.Task.Name+"-")
			}
		}
	}

	names := map[string]string{}
	for _, s := range steps {
		c.checkStep(s, names, &ps)
	}

	// metrics: the template's, then each step's
	var all []*metricSpec
	if len(t.Metrics) > 0 {
		c.workflow = compileMetrics(t.Metrics, "metrics", workflowLevel, &ps)
		all = append(all, c.workflow...)
	}
	for _, s := range steps {
		var keys []string
		if s.matrix {
			keys = sortedKeys(t.Matrix)
		}
		s.metrics = compileMetrics(s.step.Metrics, field(s.path, "metrics"), stepLevel(keys), &ps)
		all = append(all, s.metrics...)
	}
	if n := countMetrics(t); n > MaxMetrics {
		ps.add("metrics", "the template declares %d metrics; at most %d are allowed", n, MaxMetrics)
	}
	first := map[string]*metricSpec{}
	for _, m := range all {
		if f, ok := first[m.name]; ok && f.shape() != m.shape() {
			ps.add(field(m.path, "name"), "%q is declared at %s as %s; every declaration of a metric must agree, but this one is %s",
				strings.TrimPrefix(m.name, MetricPrefix), f.path, f.describeShape(), m.describeShape())
			continue
		}
		if _, ok := first[m.name]; !ok {
			first[m.name] = m
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	for _, s := range steps {
		c.steps[s.step.Name] = s
	}
	return c, nil
}

func countMetrics(t *Template) int {
	n := len(t.Metrics)
	for i := range t.Steps {
		n += len(t.Steps[i].Metrics)
	}
	if t.Task != nil {
		n += len(t.Task.Metrics)
	}
	if t.Then != nil {
		n += len(t.Then.Metrics)
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkStep checks one step; names maps step names to their paths, to
// refuse duplicates.
func (c *compiled) checkStep(s *compiledStep, names map[string]string, ps *problems) {
	st, p := s.step, s.path
	if names[st.Name] != "" {
		ps.add(field(p, "name"), "%q is already the name of %s; step names must differ", st.Name, names[st.Name])
	} else {
		names[st.Name] = p
	}
	var matrixKeys []string
	if s.matrix {
		matrixKeys = sortedKeys(c.t.Matrix)
	}
	dataPath := field(p, "task_data")
	walkStrings(st.TaskData, dataPath, func(path, text string) {
		for _, v := range parseText(text).vars() {
			switch {
			case strings.HasPrefix(v, "params."):
				name := strings.TrimPrefix(v, "params.")
				if !paramNamePattern.MatchString(name) {
					ps.add(path, "{{%s}}: %q is not a valid parameter name", v, name)
					continue
				}
				if _, seen := c.params[name]; !seen {
					c.paramOrder = append(c.paramOrder, name)
				}
				c.params[name] = append(c.params[name], path)
			case strings.HasPrefix(v, "matrix."):
				if !slices.Contains(matrixKeys, strings.TrimPrefix(v, "matrix.")) {
					if s.matrix {
						ps.add(path, "{{%s}} is not a key of the matrix (%s)", v, strings.Join(matrixKeys, ", "))
					} else {
						ps.add(path, "{{%s}}: only the matrix task may use matrix values", v)
					}
				}
			default:
				ps.add(path, "{{%s}} is not a variable of task data: use {{params.NAME}}%s", v,
					map[bool]string{true: " or {{matrix.KEY}}", false: ""}[s.matrix])
			}
		}
	})
	if st.TaskType == model.TaskWorker && !slices.Contains(matrixKeys, "host_architecture") {
		arch, ok := st.TaskData["host_architecture"]
		if a, isStr := arch.(string); !ok || !isStr || a == "" {
			ps.add(field(dataPath, "host_architecture"), "Worker tasks need a host_architecture (e.g. \"amd64\", or {{params.arch}}, or a matrix over host_architecture)")
		}
	}
}

// walkStrings calls f for every string in a task-data tree, with its path.
func walkStrings(v any, path string, f func(path, s string)) {
	switch t := v.(type) {
	case string:
		f(path, t)
	case map[string]any:
		for _, k := range sortedKeys(t) {
			walkStrings(t[k], field(path, k), f)
		}
	case []any:
		for i, e := range t {
			walkStrings(e, index(path, i), f)
		}
	}
}

func compileMetrics(ms []Metric, path string, l level, ps *problems) []*metricSpec {
	var out []*metricSpec
	for i := range ms {
		if m := compileMetric(&ms[i], index(path, i), l, ps); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// compileMetric checks one declared metric; it returns nil when the
// metric has problems.
func compileMetric(m *Metric, p string, l level, ps *problems) *metricSpec {
	before := len(ps.list)
	spec := &metricSpec{path: p, name: MetricPrefix + m.Name, help: m.Help, values: map[string]textTemplate{}}
	seen := map[string]string{}
	for i, lb := range m.Labels {
		lp := index(field(p, "labels"), i)
		if seen[lb.Key] != "" {
			ps.add(field(lp, "key"), "%q is already the key of %s", lb.Key, seen[lb.Key])
		} else {
			seen[lb.Key] = lp
		}
		vp := field(lp, "value")
		tt := parseText(lb.Value)
		for _, v := range tt.vars() {
			kind, ok := l.checkVar(vp, v, ps)
			if ok && kind == varNumber {
				ps.add(vp, "{{%s}} would make a new series for every run; use it as the metric's value, not in a label", v)
			}
		}
		spec.values[lb.Key] = tt
		spec.keys = append(spec.keys, lb.Key)
	}
	slices.Sort(spec.keys)
	if m.When != "" {
		wp := field(p, "when")
		c, err := parseCond(m.When)
		if err != nil {
			ps.add(wp, "%v", err)
		} else {
			spec.when = c
			c.walk(func(cmp *comparison) { checkComparison(cmp, wp, l, ps) })
		}
	}
	switch {
	case m.Counter != nil:
		spec.kind = kindCounter
		v := m.Counter.Value
		if v == "" {
			v = "1"
		}
		spec.value = checkValue(v, field(field(p, "counter"), "value"), l, true, ps)
	case m.Gauge != nil:
		spec.kind = kindGauge
		spec.value = checkValue(m.Gauge.Value, field(field(p, "gauge"), "value"), l, false, ps)
	case m.Histogram != nil:
		spec.kind = kindHistogram
		spec.value = checkValue(m.Histogram.Value, field(field(p, "histogram"), "value"), l, false, ps)
		bp := field(field(p, "histogram"), "buckets")
		b := m.Histogram.Buckets
		for i, x := range b {
			switch {
			case math.IsNaN(x) || math.IsInf(x, 0):
				ps.add(index(bp, i), "must be a finite number (+Inf is implicit)")
			case i > 0 && x <= b[i-1]:
				ps.add(index(bp, i), "%s is not greater than the previous bucket %s; buckets must be strictly increasing",
					formatFloat(x), formatFloat(b[i-1]))
			}
		}
		spec.buckets = b
	}
	if len(ps.list) > before {
		return nil
	}
	return spec
}

func hasVar(l level, v string) bool {
	_, ok := l.vars[v]
	return ok
}

// checkValue checks a metric's value: a number, or exactly one numeric
// variable of the level.
func checkValue(v, p string, l level, counter bool, ps *problems) textTemplate {
	tt := parseText(strings.TrimSpace(v))
	if v == "" {
		ps.add(p, "is required: a number or %s", numericVars(l))
		return tt
	}
	if name, ok := tt.single(); ok {
		if kind, ok := l.checkVar(p, name, ps); ok && kind != varNumber {
			ps.add(p, "{{%s}} is not a number; a value is a number or %s", name, numericVars(l))
		}
		return tt
	}
	if len(tt.vars()) > 0 {
		ps.add(p, "%q: a value is a number or a single variable (%s), not a mix", v, numericVars(l))
		return tt
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	switch {
	case err != nil:
		ps.add(p, "%q is not a number or %s", v, numericVars(l))
	case math.IsNaN(f) || math.IsInf(f, 0):
		ps.add(p, "must be a finite number")
	case counter && f < 0:
		ps.add(p, "%s: a counter only goes up; its value must not be negative", v)
	}
	return tt
}

func numericVars(l level) string {
	var out []string
	for v, k := range l.vars {
		if k == varNumber {
			out = append(out, "{{"+v+"}}")
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// checkComparison checks the variables of one comparison and that it can
// be true: ordering compares numbers; a status is compared with a phase.
func checkComparison(c *comparison, p string, l level, ps *problems) {
	kinds := [2]varKind{}
	known := [2]bool{}
	for i, o := range []operand{c.l, c.r} {
		if o.variable != "" {
			kinds[i], known[i] = l.checkVar(p, o.variable, ps)
		}
	}
	for i, o := range []operand{c.l, c.r} {
		other := []operand{c.r, c.l}[i]
		if o.variable == "" || !known[i] {
			continue
		}
		switch {
		case c.op != "==" && c.op != "!=" && kinds[i] != varNumber:
			ps.add(p, "%s compares numbers, and {{%s}} is not a number", c.op, o.variable)
		case kinds[i] == varStatus && other.variable == "" && !validPhase(other.literal):
			ps.add(p, "%s is not a status: compare {{%s}} with %s", other, o.variable, phaseList())
		}
	}
	if c.op != "==" && c.op != "!=" {
		for _, o := range []operand{c.l, c.r} {
			if o.variable != "" {
				continue
			}
			if _, err := strconv.ParseFloat(o.literal, 64); err != nil {
				ps.add(p, "%s compares numbers, and %s is not a number", c.op, o)
			}
		}
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// CheckShared checks that the metrics t declares agree with those that
// other templates declare under the same names: one metric name has one
// type, one set of label keys and one set of buckets on a /metrics page,
// whichever template emits it. Call it when a template is saved, with
// every other stored template; what slips through (templates saved
// concurrently) is dropped at emission and counted with reason
// "conflict". The other templates are not named in the error, since the
// caller may not see them.
func CheckShared(t *Template, others []*Template) error {
	c, err := t.compile()
	if err != nil {
		return err
	}
	theirs := map[string]*metricSpec{}
	for _, o := range others {
		oc, err := o.compile()
		if err != nil {
			continue // an invalid stored template emits nothing
		}
		for _, m := range oc.all() {
			if _, ok := theirs[m.name]; !ok {
				theirs[m.name] = m
			}
		}
	}
	var ps problems
	reported := map[string]bool{}
	for _, m := range c.all() {
		o, ok := theirs[m.name]
		if !ok || o.shape() == m.shape() || reported[m.name] {
			continue
		}
		reported[m.name] = true
		ps.add(field(m.path, "name"), "%q is already declared by another workflow template as %s; declare it the same way (this one is %s) or choose another name",
			strings.TrimPrefix(m.name, MetricPrefix), o.describeShape(), m.describeShape())
	}
	return ps.err()
}

// all lists every declared metric, the template's first.
func (c *compiled) all() []*metricSpec {
	out := append([]*metricSpec(nil), c.workflow...)
	for _, name := range sortedKeys(c.steps) {
		out = append(out, c.steps[name].metrics...)
	}
	return out
}
