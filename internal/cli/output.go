package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// object is one API resource as decoded for display. The admin commands
// decode into maps rather than the model types so that they show whatever
// the server sends, including fields added after this binary was built.
type object = map[string]any

// column is one column of a resource's table.
type column struct {
	header string
	value  func(object) string
	// key is the JSON field the column shows, "" for a computed column;
	// a record shows that field once, under the column's header.
	key string
}

// field is the column showing one JSON field as is.
func field(header, name string) column {
	return column{header: header, value: func(o object) string { return format(o[name]) }, key: name}
}

// computed is a column that derives its value from several fields.
func computed(header string, value func(object) string) column {
	return column{header: header, value: value}
}

// printer writes command results as aligned tables (for people) or as the
// server's JSON (for scripts, with --output json).
type printer struct {
	out, err io.Writer
	json     bool
}

func newPrinter(out, errw io.Writer, format string) (*printer, error) {
	switch format {
	case "table", "":
		return &printer{out: out, err: errw}, nil
	case "json":
		return &printer{out: out, err: errw, json: true}, nil
	}
	return nil, usageError{fmt.Errorf("--output %q: want table or json", format)}
}

// table prints objects under headers, one row each, in columns aligned with
// text/tabwriter.
func (p *printer) table(cols []column, objs []object) error {
	tw := tabwriter.NewWriter(p.out, 0, 4, 2, ' ', 0)
	headers := make([]string, len(cols))
	for i, c := range cols {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, o := range objs {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = clean(c.value(o))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// record prints one object as "FIELD  value" lines: the table's columns
// first, then every other field the server sent, sorted.
func (p *printer) record(cols []column, o object) error {
	tw := tabwriter.NewWriter(p.out, 0, 4, 2, ' ', 0)
	shown := map[string]bool{}
	for _, c := range cols {
		fmt.Fprintf(tw, "%s:\t%s\n", c.header, oneLine(c.value(o)))
		shown[c.key] = true
		shown[strings.ToLower(c.header)] = true
	}
	var rest []string
	for k := range o {
		if !shown[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		fmt.Fprintf(tw, "%s:\t%s\n", strings.ToUpper(k), oneLine(format(o[k])))
	}
	return tw.Flush()
}

// raw prints the server's JSON, indented.
func (p *printer) raw(data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		_, err = p.out.Write(append(bytes.TrimSpace(data), '\n'))
		return err
	}
	buf.WriteByte('\n')
	_, err := p.out.Write(buf.Bytes())
	return err
}

// rawList prints a list of results as one JSON array.
func (p *printer) rawList(items []json.RawMessage) error {
	data, err := json.Marshal(items)
	if err != nil {
		return err
	}
	return p.raw(data)
}

// note prints a message meant for the person, not for a script reading
// stdout: confirmations go to stderr in table mode and nowhere in JSON mode.
func (p *printer) note(format string, args ...any) {
	if !p.json {
		fmt.Fprintf(p.err, format+"\n", args...)
	}
}

// warn prints, in every output mode, something the person must know that
// is not the result: it goes to stderr, so stdout stays what scripts read.
func (p *printer) warn(format string, args ...any) {
	fmt.Fprintf(p.err, "kiln: "+format+"\n", args...)
}

// format renders a JSON value for a table cell.
func format(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil && len(x) >= 20 {
			return t.UTC().Format("2006-01-02 15:04:05Z")
		}
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = format(e)
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// clean keeps a cell on one line and bounded, so that one odd value cannot
// break the table's alignment.
func clean(s string) string {
	s = oneLine(s)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// decodeObject decodes one JSON object keeping numbers exact (ids are
// int64; a float64 would round large ones).
func decodeObject(data []byte) (object, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var o object
	if err := d.Decode(&o); err != nil {
		return nil, fmt.Errorf("unexpected answer from the server: %w", err)
	}
	return o, nil
}

// oneLine keeps a value on one line: a record's values are last on their
// line and shown whole (an error message, a provider's stderr).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
