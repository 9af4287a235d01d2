package store

import (
	"database/sql/driver"
	"strings"

	"github.com/kiln-build/kiln/internal/strictjson"
)

// NUL characters are where the two databases part ways: SQLite stores
// them, PostgreSQL refuses them in TEXT ("invalid byte sequence") and in
// JSONB ("unsupported Unicode escape sequence"). The API refuses them in
// every body before they get here (strictjson); the store is the last line
// for text from elsewhere — runners' results and metadata, server tasks,
// seeds — and refuses them the same way on both databases, with a
// FieldError naming the field, before any statement runs.

// jsonDoc is the text of a JSON column, so that the NUL check knows to look
// for the \u0000 escape rather than for a NUL byte.
type jsonDoc string

// Value hands the database the JSON text.
func (d jsonDoc) Value() (driver.Value, error) { return string(d), nil }

// checkText refuses a NUL character in a value bound for the column of
// field: a NUL byte in text, a \u0000 escape in JSON (named by its path
// inside the document, "data.k[0]").
func checkText(field string, v any) error {
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return invalid(field, "must not contain NUL characters (\\u0000)")
		}
	case jsonDoc:
		if !strings.Contains(string(x), `\u0000`) {
			return nil
		}
		if e, ok := strictjson.As(strictjson.Check([]byte(x))); ok && e.Reason == strictjson.ReasonNUL {
			return invalid(joinPath(field, e.Path), "must not contain NUL characters (\\u0000)")
		}
	}
	return nil
}

// joinPath joins a path inside a document to its column's field:
// ("data", "k[0]") → "data.k[0]", ("data", `["a b"]`) → `data["a b"]`.
func joinPath(field, p string) string {
	if field == "" || p == "" || strings.HasPrefix(p, "[") {
		return field + p
	}
	return field + "." + p
}

// checkArgs is checkText for the arguments of a statement that names no
// field: a catch-all, so that no NUL ever reaches PostgreSQL.
func checkArgs(args []any) error {
	for _, a := range args {
		if err := checkText("", a); err != nil {
			return err
		}
	}
	return nil
}
