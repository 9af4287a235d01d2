package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/kiln-build/kiln/internal/strictjson"
	suggestpkg "github.com/kiln-build/kiln/internal/suggest"
)

// Templates arrive as YAML files, as JSON files and as JSON API bodies.
// All three are first read into one generic tree (object, []any, string,
// json.Number, bool, nil), which keeps the order of keys and the exact
// text of numbers; the tree is then checked against the schema
// (schema.go) and decoded. That gives the same error, naming the same
// field, whichever way a template came in — which encoding/json (no
// paths, no order) and yaml.v3 (line numbers, Go type names) cannot give
// on their own.

// object is a mapping with its keys in document order.
type object struct {
	keys []string
	vals map[string]any
}

func (o *object) get(key string) (any, bool) {
	v, ok := o.vals[key]
	return v, ok
}

func (o *object) has(key string) bool {
	_, ok := o.vals[key]
	return ok
}

// put sets a key, appending it when it is new.
func (o *object) put(key string, v any) {
	if !o.has(key) {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
}

// maxNodes bounds the size of a decoded document, aliases expanded, so that
// a YAML "billion laughs" cannot make the server build a huge tree.
const maxNodes = 100000

// readJSON reads one JSON value into a tree. Duplicate keys are refused: a
// JSON decoder would silently keep the last one.
func readJSON(data []byte) (any, error) {
	// what encoding/json would let through: invalid UTF-8 (turned into
	// U+FFFD) and NUL characters (which PostgreSQL refuses); duplicate
	// keys are found below, with this package's message
	if e, ok := strictjson.As(strictjson.Check(data)); ok && e.Reason != strictjson.ReasonDuplicate && !strings.HasPrefix(e.Reason, strictjson.ReasonSyntax) {
		return nil, fmt.Errorf("%s: %s", orRoot(e.Path), strings.TrimPrefix(e.Reason, "is "))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	budget := maxNodes
	v, err := jsonValue(dec, "", &budget)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON document")
	}
	return v, nil
}

func jsonValue(dec *json.Decoder, path string, budget *int) (any, error) {
	if *budget--; *budget < 0 {
		return nil, errors.New("the document is too large")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonSyntax(err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, jsonSyntax(err)
				}
				k := kt.(string)
				if _, dup := o.vals[k]; dup {
					return nil, fmt.Errorf("%s: the key appears twice", field(path, k))
				}
				v, err := jsonValue(dec, field(path, k), budget)
				if err != nil {
					return nil, err
				}
				o.keys = append(o.keys, k)
				o.vals[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonSyntax(err)
			}
			return o, nil
		case '[':
			list := []any{}
			for dec.More() {
				v, err := jsonValue(dec, index(path, len(list)), budget)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonSyntax(err)
			}
			return list, nil
		}
		return nil, fmt.Errorf("unexpected %q", t)
	default:
		return t, nil // string, json.Number, bool or nil
	}
}

func jsonSyntax(err error) error {
	if err == io.EOF {
		return errors.New("the JSON document ends too early")
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

// readYAML reads a single YAML document into a tree. Scalars keep their
// text: `version: 1.10` is the string "1.10" where a string is expected,
// not the float 1.1.
func readYAML(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, errors.New("the document is empty")
		}
		return nil, fmt.Errorf("invalid YAML: %v", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, errors.New("the file holds more than one YAML document; put one template in each file")
	}
	budget := maxNodes
	return yamlValue(&doc, "", &budget)
}

func yamlValue(n *yaml.Node, path string, budget *int) (any, error) {
	if *budget--; *budget < 0 {
		return nil, errors.New("the document is too large (too many nodes or aliases)")
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return yamlValue(n.Content[0], path, budget)
	case yaml.AliasNode:
		return yamlValue(n.Alias, path, budget)
	case yaml.MappingNode:
		o := &object{vals: map[string]any{}}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: %s: keys must be plain strings", kn.Line, orRoot(path))
			}
			if kn.ShortTag() == "!!merge" {
				return nil, fmt.Errorf("line %d: %s: YAML merge keys (<<) are not supported", kn.Line, orRoot(path))
			}
			k := kn.Value
			if strings.IndexByte(k, 0) >= 0 {
				return nil, fmt.Errorf("line %d: %s: a key must not contain NUL characters", kn.Line, orRoot(path))
			}
			if _, dup := o.vals[k]; dup {
				return nil, fmt.Errorf("line %d: %s: the key appears twice", kn.Line, field(path, k))
			}
			v, err := yamlValue(vn, field(path, k), budget)
			if err != nil {
				return nil, err
			}
			o.keys = append(o.keys, k)
			o.vals[k] = v
		}
		return o, nil
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := yamlValue(c, index(path, i), budget)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %s: %v", n.Line, orRoot(path), err)
			}
			return b, nil
		case "!!int", "!!float":
			return yamlNumber(n.Value), nil
		default: // !!str, !!timestamp, !!binary: the text as written
			if strings.IndexByte(n.Value, 0) >= 0 {
				return nil, fmt.Errorf("line %d: %s: must not contain NUL characters (\\0)", n.Line, orRoot(path))
			}
			return n.Value, nil
		}
	}
	return nil, fmt.Errorf("line %d: %s: unsupported YAML node", n.Line, orRoot(path))
}

// yamlNumber keeps a YAML number's text. Forms JSON does not know (0x1F,
// 1_000, .inf) stay text, and fail where a number is needed with the
// usual message.
type yamlNumber string

func orRoot(path string) string {
	if path == "" {
		return "the document"
	}
	return path
}

// scalarText is the text of a scalar for a string field: numbers and
// booleans written without quotes are taken as written.
func scalarText(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return string(t), true
	case yamlNumber:
		return string(t), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

// describe names the JSON type of a tree value for error messages.
func describe(v any) string {
	switch v.(type) {
	case *object, map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number, yamlNumber:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// plain converts a tree into what encoding/json produces for `any`, with
// numbers kept as json.Number so that re-encoding does not change them.
func plain(v any, path string, ps *problems) any {
	switch t := v.(type) {
	case *object:
		m := make(map[string]any, len(t.keys))
		for _, k := range t.keys {
			m[k] = plain(t.vals[k], field(path, k), ps)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = plain(e, index(path, i), ps)
		}
		return out
	case yamlNumber:
		n := json.Number(t)
		if _, err := strconv.ParseFloat(string(t), 64); err != nil || !json.Valid([]byte(t)) {
			ps.add(path, "%s is not a number JSON can carry; quote it if it is text", string(t))
			return string(t)
		}
		return n
	}
	return v
}

// number is the text of a numeric scalar; quoted numbers are accepted too,
// since YAML users quote values out of habit.
func number(v any) (string, bool) {
	switch t := v.(type) {
	case json.Number:
		return string(t), true
	case yamlNumber:
		return string(t), true
	case string:
		return strings.TrimSpace(t), true
	}
	return "", false
}

// shown is a value as the user wrote it, for messages.
func shown(v any) string {
	if s, ok := scalarText(v); ok {
		if _, isStr := v.(string); isStr {
			return strconv.Quote(s)
		}
		return s
	}
	return describe(v)
}

// structFields maps json names to field indexes; names is sorted.
func structFields(t reflect.Type) (map[string]int, []string) {
	m := map[string]int{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = i
		names = append(names, name)
	}
	slices.Sort(names)
	return m, names
}

// suggest returns ` (did you mean "x"?)` when a known name is one edit
// or one transposition away, or differs only in case or - versus _.
func suggest(key string, names []string) string {
	if n, ok := suggestpkg.Closest(key, names, 1); ok {
		return fmt.Sprintf(" (did you mean %q?)", n)
	}
	return ""
}
