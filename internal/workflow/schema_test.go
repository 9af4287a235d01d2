package workflow

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// schemaDefs returns the schema's object definitions by Go type.
func schemaDefs(t *testing.T) map[reflect.Type]map[string]any {
	t.Helper()
	root := templateSchema.raw.(map[string]any)
	defs := root["$defs"].(map[string]any)
	metric := defs["metric"].(map[string]any)["properties"].(map[string]any)
	return map[reflect.Type]map[string]any{
		reflect.TypeFor[Template]():  root,
		reflect.TypeFor[Step]():      defs["step"].(map[string]any),
		reflect.TypeFor[Metric]():    defs["metric"].(map[string]any),
		reflect.TypeFor[Label]():     defs["label"].(map[string]any),
		reflect.TypeFor[Counter]():   metric["counter"].(map[string]any),
		reflect.TypeFor[Gauge]():     metric["gauge"].(map[string]any),
		reflect.TypeFor[Histogram](): metric["histogram"].(map[string]any),
	}
}

// The schema and the Go types name the same fields, so that nothing the
// schema lets through is dropped when the document is decoded.
func TestSchemaNamesTheGoFields(t *testing.T) {
	for typ, def := range schemaDefs(t) {
		var inSchema []string
		for p := range def["properties"].(map[string]any) {
			if p != "$schema" {
				inSchema = append(inSchema, p)
			}
		}
		slices.Sort(inSchema)
		_, inGo := structFields(typ)
		if !slices.Equal(inSchema, inGo) {
			t.Errorf("%s: the schema has %v, the Go type %v", typ.Name(), inSchema, inGo)
		}
		if def["additionalProperties"] != false {
			t.Errorf("%s: the schema lets unknown fields through", typ.Name())
		}
	}
}

// Limits and patterns that Go also uses agree with the schema.
func TestSchemaAgreesWithGo(t *testing.T) {
	root := templateSchema.raw.(map[string]any)
	props := root["properties"].(map[string]any)
	if got := props["steps"].(map[string]any)["maxItems"]; got != json.Number("256") || MaxChildren != 256 {
		t.Errorf("steps maxItems %v, MaxChildren %d", got, MaxChildren)
	}
	for pattern := range props["parameters"].(map[string]any)["patternProperties"].(map[string]any) {
		if pattern != paramNamePattern.String() {
			t.Errorf("parameter names: schema %s, {{params.NAME}} %s", pattern, paramNamePattern)
		}
	}
}

// An editor that knows only the schema accepts every good fixture as
// written.
func TestEditorsAcceptTheGoodFixtures(t *testing.T) {
	for _, path := range fixtures(t, "good") {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if strings.HasSuffix(path, ".json") {
			doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(data))
		} else {
			var y any
			if err = yaml.Unmarshal(data, &y); err == nil {
				b, _ := json.Marshal(y)
				doc, err = jsonschema.UnmarshalJSON(bytes.NewReader(b))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(path, "stored-form.json") {
			continue // the API's spelling, which kiln also takes
		}
		if err := templateSchema.compiled.Validate(doc); err != nil {
			t.Errorf("%s: %v", filepath.Base(path), err)
		}
	}
}

// Scalars are taken as the field they fill wants them, as written: YAML
// users quote numbers out of habit and leave version numbers unquoted.
func TestScalarsAsWritten(t *testing.T) {
	tmpl, err := ParseYAML([]byte(`
name: 2024
kind: sequence
priority: "5"
parameters: {version: 1.10, debug: true}
steps:
  - {name: s, task_type: Wait, task_name: delay, max_retries: "2", task_data: {delay: 0}}
metrics:
  - {name: last, help: h, gauge: {value: 1}}
  - {name: d, help: h, histogram: {buckets: ["1", 2.5], value: "{{workflow.duration}}"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.Name != "2024" || tmpl.Priority != 5 || tmpl.Parameters["version"] != "1.10" || tmpl.Parameters["debug"] != "true" ||
		*tmpl.Steps[0].MaxRetries != 2 || tmpl.Metrics[0].Gauge.Value != "1" || !slices.Equal(tmpl.Metrics[1].Histogram.Buckets, []float64{1, 2.5}) {
		t.Fatalf("scalars not taken as written: %+v", tmpl)
	}
	if d := tmpl.Steps[0].TaskData["delay"]; d != json.Number("0") {
		t.Fatalf("task data number %#v, want json.Number 0", d)
	}
}

// Problems the schema finds read like kiln's others: the field's path,
// and what is wrong.
func TestSchemaMessages(t *testing.T) {
	for doc, want := range map[string]string{
		`{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay, max_retries: many}]}`:                                                                 `steps[0].max_retries: must be an integer, not "many"`,
		`{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay, task_data: [1]}]}`:                                                                    `steps[0].task_data: must be an object, not a list`,
		`{name: t, kind: sequence, priority: 1.5, steps: [{name: s, task_type: Wait, task_name: delay}]}`:                                                                     `priority: must be an integer, not 1.5`,
		`{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay, metrics: [{name: x_total, help: h, counter: {valu: 1}}]}]}`:                           `steps[0].metrics[0].counter.valu: unknown field (did you mean "value"?); use value`,
		`{name: t, kind: matrix, matrix: {bad key: [a]}, task: {name: s, task_type: Wait, task_name: delay}}`:                                                                 `matrix["bad key"]: "bad key" is not a valid task data key`,
		`{name: t, kind: matrix, matrix: {k: [a, ""]}, task: {name: s, task_type: Wait, task_name: delay}}`:                                                                   `matrix.k[1]: must not be empty`,
		`{name: t, kind: sequence, steps: [{name: "", task_type: Wait, task_name: delay}]}`:                                                                                   `steps[0].name: is required`,
		`{name: t, kind: sequence, steps: [{task_type: Wait, task_name: delay}, {name: s, task_name: delay}]}`:                                                                `steps[0].name: is required; steps[1].task_type: is required: use Worker, Server or Wait`,
		`{name: t, kind: matrix, steps: [], matrix: {k: [a]}, task: {name: s, task_type: Wait, task_name: delay}}`:                                                            `steps: belongs to kind sequence`,
		`{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay}], then: {name: u, task_type: Wait, task_name: delay}}`:                                `then: belongs to kind matrix`,
		`{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay}], metrics: [{name: "` + strings.Repeat("a", 101) + `", help: h, gauge: {value: 1}}]}`: `metrics[0].name: is longer than 100 characters`,
	} {
		_, err := ParseYAML([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n got %v\nwant %s", doc, err, want)
		}
	}
}

// A template read back from the store is checked against the schema too,
// with the stored form's paths.
func TestFromModelChecksTheSchema(t *testing.T) {
	tmpl, err := ParseYAML([]byte("{name: t, kind: sequence, steps: [{name: s, task_type: Wait, task_name: delay}]}"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := tmpl.Model()
	if err != nil {
		t.Fatal(err)
	}
	m.StaticData = []byte(`{"steps": [{"name": "S", "task_type": "Wait", "task_name": "delay"}]}`)
	_, err = FromModel(m)
	if err == nil || !strings.HasPrefix(err.Error(), `static_parameters.steps[0].name: "S" is not a valid step name`) {
		t.Fatalf("got %v", err)
	}
}

// Validate checks a template built in Go against the schema as well.
func TestValidateChecksTheSchema(t *testing.T) {
	tmpl := &Template{Name: "t", Kind: KindSequence, Steps: []Step{{Name: "s", TaskType: "Signing", TaskName: "delay"}}}
	err := tmpl.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), `steps[0].task_type: "Signing" is not a step task type`) {
		t.Fatalf("got %v", err)
	}
}
