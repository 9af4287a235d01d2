package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a template or with the parameters of a
// workflow: the path of the field to blame, in the notation of the
// document ("metrics[1].labels[0].key", "steps[0].task_data.script"), and
// what is wrong with it. Paths name what the user wrote, so that an error
// can be found in the file without knowing how kiln stores templates.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// String is "path: message", or the message alone for the whole document.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error lists every problem found, in document order, so that a user fixes
// a template in one round trip rather than one error at a time.
type Error struct {
	Problems []Problem
}

// Error joins the problems with "; ".
func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// problems accumulates Problems while a document is decoded and checked.
type problems struct {
	list []Problem
}

func (ps *problems) add(path, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// err returns the accumulated problems as an *Error, or nil when there
// are none.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &Error{Problems: ps.list}
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// field extends a path with a key: "a.b", or a["odd key"] for keys that
// would be ambiguous after a dot.
func field(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// index extends a path with a list index: "a[3]".
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
