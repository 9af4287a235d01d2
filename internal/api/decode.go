package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kiln-build/kiln/internal/strictjson"
)

// inputSpec is what the strict decoder knows about one input struct: the
// JSON names it accepts, which of them may be null, and which names belong
// to read-only fields of the resource (refused with a message that says
// so, rather than as unknown).
type inputSpec struct {
	fields   map[string]int // JSON name → struct field index
	nullable map[string]bool
	readOnly map[string]bool
	names    []string // accepted names, sorted, for error messages
}

// nullMarker is implemented by input field types that accept JSON null
// (nullable[T]); every other field refuses null.
type nullMarker interface{ acceptsNull() }

var nullMarkerType = reflect.TypeFor[nullMarker]()

// specOf describes input type In for the resource whose objects are T:
// every JSON field of T that In does not accept is read-only, and so are
// extra (names that only exist on output, such as a token's secret).
func specOf[In, T any](extra ...string) *inputSpec {
	s := &inputSpec{fields: map[string]int{}, nullable: map[string]bool{}, readOnly: map[string]bool{}}
	in := reflect.TypeFor[In]()
	for i := range in.NumField() {
		f := in.Field(i)
		name := jsonName(f)
		if name == "" {
			continue
		}
		s.fields[name] = i
		s.names = append(s.names, name)
		if reflect.PointerTo(f.Type).Implements(nullMarkerType) {
			s.nullable[name] = true
		}
	}
	slices.Sort(s.names)
	for _, name := range append(outputNames(reflect.TypeFor[T]()), extra...) {
		if _, ok := s.fields[name]; !ok {
			s.readOnly[name] = true
		}
	}
	return s
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// outputNames lists the JSON names of a model type, embedded structs
// included.
func outputNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "" {
			out = append(out, outputNames(f.Type)...)
			continue
		}
		if name := jsonName(f); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// decode reads the request body into dst (a pointer to the input struct
// described by spec), field by field, so that every error names its field:
// the media type must be JSON (415), the body at most MaxBodyBytes (413)
// and one JSON object (400); a key given twice, invalid UTF-8 and NUL
// characters anywhere in it (checkText), unknown and read-only fields,
// nulls where none is allowed and values of the wrong type are 400 naming
// the field.
func (c *call) decode(spec *inputSpec, dst any) error {
	if err := checkJSONMediaType(c.r.Header.Get("Content-Type")); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.a.opts.MaxBodyBytes))
	if err != nil {
		return bodyError(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(http.StatusBadRequest, "", "the request body is empty: send a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return errorf(http.StatusBadRequest, "", "the request body is not valid JSON: %v (at byte %d)", syn, syn.Offset)
		case errors.As(err, &typ):
			return errorf(http.StatusBadRequest, "", "the request body must be a JSON object, not %s", article(typ.Value))
		}
		return errorf(http.StatusBadRequest, "", "the request body is not valid JSON: %v", err)
	}
	if raw == nil {
		return errorf(http.StatusBadRequest, "", "the request body must be a JSON object, not null")
	}
	if err := checkText(body); err != nil {
		return err
	}
	v := reflect.ValueOf(dst).Elem()
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad field in name order, the same every time
	for _, k := range keys {
		i, ok := spec.fields[k]
		switch {
		case !ok && spec.readOnly[k]:
			return invalidField(k, "%q is read-only: kiln sets it", k)
		case !ok:
			return invalidField(k, "unknown field %q; this resource accepts %s", k, strings.Join(spec.names, ", "))
		case string(raw[k]) == "null" && !spec.nullable[k]:
			return invalidField(k, "%q must not be null", k)
		}
		f := v.Field(i)
		if err := json.Unmarshal(raw[k], f.Addr().Interface()); err != nil {
			return invalidField(k, "%s", typeMessage(k, err))
		}
	}
	return nil
}

// bodyError answers a failure to read a request body: too big (413), too
// slow (408: the server's deadline for the route passed), or cut (400).
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errorf(http.StatusRequestEntityTooLarge, "", "the request body is larger than the limit of %d bytes", tooBig.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errorf(http.StatusRequestTimeout, "", "the request body did not arrive in time")
	}
	return errorf(http.StatusBadRequest, "", "reading the request body: %v", err)
}

// checkText refuses, with a 400 naming the field by its path ("name",
// "data.k", "files[0].path"), what encoding/json would let through
// silently: a key given twice (the last would win), invalid UTF-8 (it would
// become U+FFFD) and NUL characters (SQLite would store them, PostgreSQL
// would refuse them with a 500). Every JSON body of the API goes through
// it, whichever decoder reads it next.
func checkText(body []byte) error {
	err := strictjson.Check(body)
	if err == nil {
		return nil
	}
	if e, ok := strictjson.As(err); ok && e.Path != "" {
		return invalidField(e.Path, "%v", e)
	}
	return errorf(http.StatusBadRequest, "", "the request body %v", err)
}

// checkParams refuses NUL characters and invalid UTF-8 in the query
// parameters and path of a request, naming the parameter ("path" for the
// path): no route stores them, and PostgreSQL fails on them even in a
// lookup.
func checkParams(r *http.Request) error {
	for k, vs := range r.URL.Query() {
		for _, v := range append([]string{k}, vs...) {
			if msg := badText(v); msg != "" {
				return invalidField(k, "the query parameter %q %s", k, msg)
			}
		}
	}
	if msg := badText(r.URL.Path); msg != "" {
		return invalidField("path", "the path %s", msg)
	}
	return nil
}

// badText says what is wrong with a string from outside, or "".
func badText(s string) string {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return strictjson.ReasonNUL
	case !utf8.ValidString(s):
		return strictjson.ReasonUTF8
	}
	return ""
}

func checkJSONMediaType(ct string) error {
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return nil
	}
	if ct == "" {
		ct = "none"
	}
	return errorf(http.StatusUnsupportedMediaType, "", "the request body must be JSON with Content-Type: application/json (got %s)", ct)
}

// typeMessage explains why the value of field k was refused.
func typeMessage(k string, err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Sprintf("%q must be %s, not %s", k, jsonKind(typ.Type), article(typ.Value))
	}
	return fmt.Sprintf("%q: %v", k, err)
}

// jsonKind names the JSON shape a Go type reads.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// article prefixes json's value words ("string", "number 1.5") for a
// sentence.
func article(v string) string {
	switch {
	case v == "":
		return "this value"
	case strings.HasPrefix(v, "array"), strings.HasPrefix(v, "object"):
		return "an " + v
	case v == "bool":
		return "a boolean"
	}
	return "a " + v
}

// nullable is an input field that may be null. PATCH needs three states:
// absent (set false: leave the value alone), null (clear it) and a value.
type nullable[T any] struct {
	set   bool
	null  bool
	value T
}

func (nullable[T]) acceptsNull() {}

// UnmarshalJSON records that the field was given, as null or as a value.
func (n *nullable[T]) UnmarshalJSON(b []byte) error {
	n.set = true
	if string(b) == "null" {
		n.null = true
		return nil
	}
	return json.Unmarshal(b, &n.value)
}

// ptr is the value as a pointer: nil for null.
func (n nullable[T]) ptr() *T {
	if n.null {
		return nil
	}
	v := n.value
	return &v
}

// setPtr applies n to a nullable model field when it was given.
func setPtr[T any](dst **T, n nullable[T]) {
	if n.set {
		*dst = n.ptr()
	}
}

// set copies a given (non-nil) input value into a model field.
func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

// timestamp is an RFC 3339 time in a request body, with an error message
// that shows the expected form.
type timestamp time.Time

// UnmarshalJSON reads an RFC 3339 string.
func (t *timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`must be an RFC 3339 time string such as "2030-01-02T15:04:05Z"`)
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf(`must be an RFC 3339 time such as "2030-01-02T15:04:05Z", not %q`, s)
	}
	*t = timestamp(v.UTC())
	return nil
}

// duration is a length of time in a request body: a Go duration string
// with its unit ("72h", "90m"). A bare number is refused rather than read
// as seconds: for a workspace's expiration delay, 1.5 was meant as days as
// often as seconds, and a silent guess keeps artifacts for the wrong time.
type duration time.Duration

// UnmarshalJSON reads a duration string such as "72h".
func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`must be a duration with its unit, such as "72h" or "90m", not %s: a bare number says neither seconds nor days`, b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf(`must be a duration such as "72h" or "90m", not %q`, s)
	}
	*d = duration(v)
	return nil
}

// emptyObject is the default of JSON object fields ("data",
// "configuration"): what the store reads back for an empty column, so that
// POST answers the object as GET will show it.
func emptyObject() json.RawMessage { return json.RawMessage("{}") }
