package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/kiln-build/kiln/docs"
	suggestpkg "github.com/kiln-build/kiln/internal/suggest"
)

// The structure of a template — its fields and their types, which are
// required, names' patterns, enumerations, ranges, the fields each kind
// takes — is docs/workflow-template.schema.json, the JSON Schema that
// users' editors read too. This file checks a document against it and
// words what fails like kiln's other problems: the path of the field in
// the document's notation, and the schema's own message for the failing
// keyword (x-kiln-message) or a plain one. What a schema cannot say —
// relations between fields, variables, conditions, tasks — is checked in
// validate.go.

// schemaURL names the embedded schema for the compiler; nothing is
// fetched from it.
const schemaURL = "https://kiln.invalid/workflow-template.schema.json"

// templateSchema is the compiled schema and its JSON, where the messages
// are looked up.
var templateSchema = func() (s struct {
	compiled *jsonschema.Schema
	raw      any
}) {
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(docs.WorkflowTemplateSchema))
	if err != nil {
		panic("workflow: docs/workflow-template.schema.json: " + err.Error())
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaURL, raw); err != nil {
		panic(err)
	}
	s.compiled, s.raw = c.MustCompile(schemaURL), raw
	return s
}()

// Schema returns the JSON Schema of workflow templates, to serve.
func Schema() []byte { return slices.Clone(docs.WorkflowTemplateSchema) }

// document is a template tree made ready for the schema: plain JSON
// values, with document order kept aside.
type document struct {
	value any
	order map[string]int // path → position in the document
}

var templateType = reflect.TypeFor[Template]()

// newDocument converts a template tree into plain JSON values, taking a
// scalar as the Go field it fills wants it: a number or a boolean where
// the field is text as written ("version: 1.10" is "1.10"), a quoted
// number where the field is a number as that number. What does not fit
// is left for the schema to refuse. A null field is a field left out.
func newDocument(tree any, ps *problems) *document {
	d := &document{order: map[string]int{}}
	d.value = d.convert(tree, templateType, "", ps)
	return d
}

func (d *document) convert(v any, t reflect.Type, path string, ps *problems) any {
	d.order[path] = len(d.order)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch v := v.(type) {
	case *object:
		out := make(map[string]any, len(v.keys))
		var fields map[string]int
		if t != nil && t.Kind() == reflect.Struct {
			fields, _ = structFields(t)
		}
		for _, k := range v.keys {
			var et reflect.Type
			switch {
			case fields != nil:
				if i, ok := fields[k]; ok {
					et = t.Field(i).Type
				}
			case t != nil && t.Kind() == reflect.Map:
				et = t.Elem()
			}
			if e := d.convert(v.vals[k], et, field(path, k), ps); e != nil {
				out[k] = e
			}
		}
		return out
	case []any:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = d.convert(e, et, index(path, i), ps)
		}
		return out
	case nil:
		return nil
	}
	want := reflect.Invalid
	if t != nil {
		want = t.Kind()
	}
	switch want {
	case reflect.String:
		if s, ok := scalarText(v); ok {
			return s
		}
	case reflect.Int, reflect.Int64, reflect.Float64:
		if s, ok := number(v); ok && json.Valid([]byte(s)) {
			// a number Go cannot hold (1e400, or 1e3 for an integer)
			// becomes text, which the schema refuses
			f, err := strconv.ParseFloat(s, 64)
			_, ierr := strconv.ParseInt(s, 10, 64)
			switch {
			case err != nil:
				return s
			case want == reflect.Float64 || ierr == nil || f != math.Trunc(f):
				return json.Number(s)
			}
			return s
		}
	case reflect.Interface: // task data: any JSON value
		return plain(v, path, ps)
	}
	if n, ok := v.(yamlNumber); ok {
		if json.Valid([]byte(n)) {
			return json.Number(n)
		}
		return string(n)
	}
	return v
}

// decodeInto fills t from a document that passed the schema.
func (d *document) decodeInto(t *Template) error {
	b, err := json.Marshal(d.value)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return dec.Decode(t)
}

// check validates the document against the schema: at most one problem
// per field (the first the schema finds), in document order.
func (d *document) check() []Problem {
	err := templateSchema.compiled.Validate(d.value)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{Message: err.Error()}}
	}
	var found []located
	d.collect(ve, &found)
	// a required field that a misspelt one explains is not reported twice
	typos := map[string]bool{}
	for _, f := range found {
		if f.typoOf != "" {
			typos[f.typoOf] = true
		}
	}
	slices.SortStableFunc(found, func(a, b located) int { return a.order - b.order })
	var out []Problem
	seen := map[string]bool{}
	for _, f := range found {
		if seen[f.Path] || f.required && typos[f.Path] {
			continue
		}
		seen[f.Path] = true
		out = append(out, f.Problem)
	}
	return out
}

// located is a problem with what orders and merges it.
type located struct {
	Problem
	order    int
	required bool   // a missing field
	typoOf   string // for an unknown field, the path of the field it misspells
}

// collect turns the leaves of a validation error into problems.
func (d *document) collect(e *jsonschema.ValidationError, out *[]located) {
	switch e.ErrorKind.(type) {
	case *kind.Schema, *kind.Group, *kind.AllOf, *kind.Reference:
		for _, c := range e.Causes {
			d.collect(c, out)
		}
		return
	}
	path, value := d.locate(e.InstanceLocation)
	node := schemaNode(e.SchemaURL)
	add := func(path, msg string, required bool, typoOf string) {
		*out = append(*out, located{Problem{path, msg}, d.position(path), required, typoOf})
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			msg := "is required"
			if s, ok := keywordMessage(node, "required").(map[string]any)[m].(string); ok {
				msg = s
			}
			add(field(path, m), msg, true, "")
		}
	case *kind.AdditionalProperties:
		props, _ := node["properties"].(map[string]any)
		var known []string
		for p := range props {
			if !strings.HasPrefix(p, "$") {
				known = append(known, p)
			}
		}
		slices.Sort(known)
		for _, p := range k.Properties {
			if msg, ok := keywordMessage(node, "additionalProperties").(string); ok {
				add(field(path, p), expand(msg, "", p), false, "")
				continue
			}
			var hint, typoOf string
			if n, ok := suggestpkg.Closest(p, known, 1); ok {
				hint, typoOf = fmt.Sprintf(" (did you mean %q?)", n), field(path, n)
			}
			add(field(path, p), fmt.Sprintf("unknown field%s; use %s", hint, strings.Join(known, ", ")), false, typoOf)
		}
	case *kind.UniqueItems:
		list, _ := value.([]any)
		p := index(path, k.Duplicates[1])
		add(p, expand(keywordMessage(node, "uniqueItems"), "{value} is listed twice", list[k.Duplicates[1]]), false, "")
	default:
		add(path, expand(keywordMessage(node, keywordOf(e.ErrorKind)), plainMessage(e.ErrorKind, value), value), false, "")
	}
}

// locate turns a schema instance location into a document path and the
// value found there.
func (d *document) locate(loc []string) (string, any) {
	path, v := "", d.value
	for _, tok := range loc {
		switch c := v.(type) {
		case []any:
			i, _ := strconv.Atoi(tok)
			path, v = index(path, i), c[i]
		case map[string]any:
			path, v = field(path, tok), c[tok]
		}
	}
	return path, v
}

// position is where a path is in the document; missing fields come after
// every field present, in the order of their parents.
func (d *document) position(path string) int {
	if n, ok := d.order[path]; ok {
		return n
	}
	for path != "" {
		path = path[:max(0, strings.LastIndexAny(path, ".["))]
		if n, ok := d.order[path]; ok {
			return len(d.order) + n
		}
	}
	return len(d.order)
}

// schemaNode finds the schema object at a location of the schema.
func schemaNode(loc string) map[string]any {
	_, frag, _ := strings.Cut(loc, "#")
	if f, err := url.PathUnescape(frag); err == nil {
		frag = f
	}
	node := templateSchema.raw
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch n := node.(type) {
		case map[string]any:
			node = n[tok]
		case []any:
			i, _ := strconv.Atoi(tok)
			if i >= 0 && i < len(n) {
				node = n[i]
			}
		}
	}
	m, _ := node.(map[string]any)
	return m
}

// keywordMessage is the schema's message for a failing keyword of node.
func keywordMessage(node map[string]any, keyword string) any {
	msgs, _ := node["x-kiln-message"].(map[string]any)
	return msgs[keyword]
}

func keywordOf(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case *kind.Not:
		return "not"
	case *kind.AnyOf:
		return "anyOf"
	case *kind.OneOf:
		return "oneOf"
	}
	if p := k.KeywordPath(); len(p) > 0 {
		return p[0]
	}
	return ""
}

// expand fills {value} of the schema's message, or uses fallback.
func expand(msg any, fallback string, value any) string {
	s, ok := msg.(string)
	if !ok {
		s = fallback
	}
	text, _ := scalarText(value)
	return strings.NewReplacer("{value}", shown(value), "{text}", text).Replace(s)
}

var printer = message.NewPrinter(language.English)

// plainMessage words a failing keyword that the schema has no message
// for: types and list lengths; anything else as the validator words it.
func plainMessage(k jsonschema.ErrorKind, value any) string {
	switch k := k.(type) {
	case *kind.Type:
		want := make([]string, len(k.Want))
		scalar := false
		for i, w := range k.Want {
			want[i] = map[string]string{"string": "a string", "integer": "an integer", "number": "a number",
				"boolean": "true or false", "object": "an object", "array": "a list", "null": "null"}[w]
			scalar = scalar || w == "integer" || w == "number" || w == "boolean"
		}
		got := describe(value)
		if scalar {
			got = shown(value)
		}
		return fmt.Sprintf("must be %s, not %s", strings.Join(want, " or "), got)
	case *kind.MaxItems:
		return fmt.Sprintf("has %d items; at most %d are allowed", k.Got, k.Want)
	}
	return k.LocalizedString(printer)
}
