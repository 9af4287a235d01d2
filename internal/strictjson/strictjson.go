// Package strictjson finds, in JSON that comes from outside, what
// encoding/json lets through without a word: a key given twice in one
// object (json keeps the last one, so {"name": "a", "name": "b"} renames),
// invalid UTF-8 and lone UTF-16 surrogates (json replaces them with U+FFFD,
// so the stored text is not what was sent), and NUL characters (SQLite
// stores them and PostgreSQL refuses them, so the same request would
// succeed on one database and fail with a 500 on the other).
//
// kiln decodes every input from outside strictly (API bodies, webhook
// events, workflow templates, runner messages): each decoder runs Check on
// the raw document before it decodes it, and answers its *Error as a
// refusal that names the field at fault.
//
// Check only looks; it never changes or decodes the document for its
// caller, so each decoder keeps its own error messages for the rest
// (unknown fields, wrong types).
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects Check accepts. kiln's
// documents nest a handful of levels; a deeper one is an attack on the
// decoder's stack, not a build request.
const MaxDepth = 200

// Error is the first problem Check found.
type Error struct {
	// Path is where the problem is, in the notation of kiln's field
	// names: "name", "data.k", "files[0].path"; "" for the document itself.
	Path string
	// Reason says what is wrong, without the path: "appears twice".
	Reason string
}

// Error names the path and the problem.
func (e *Error) Error() string {
	if e.Path == "" {
		return "the document " + e.Reason
	}
	return strconv.Quote(e.Path) + " " + e.Reason
}

// Reasons, so that callers and tests can tell them apart.
const (
	ReasonDuplicate = "appears twice in its object; give each key once"
	ReasonUTF8      = "is not valid UTF-8 text"
	ReasonSurrogate = "holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its pair), which is no character"
	ReasonNUL       = "must not contain NUL characters (\\u0000)"
	ReasonDepth     = "nests arrays and objects too deeply"
	ReasonSyntax    = "is not valid JSON"
	ReasonRange     = "is a number too large to be read (beyond ±1.8e308)"
)

// Check reports the first duplicate key, invalid UTF-8 text, lone
// surrogate or NUL character of the JSON document data, in document
// order, as an *Error. A document that is not JSON at all gives an *Error
// with ReasonSyntax and an empty path; callers that want their own syntax
// messages decode first and check after.
func Check(data []byte) error { return check(data, false) }

// CheckAllowingNUL is Check for documents whose strings may carry NUL
// characters on purpose, such as a program's output relayed as it was
// written (a runner's log chunks). Such strings must never reach a
// database column; the store refuses them there.
func CheckAllowingNUL(data []byte) error { return check(data, true) }

// frame is an array or object being read. Paths are only put together
// for an error (pathOf): building one for every key and value, with the
// regular expression of Field, was half of Check's time on a runner's
// messages.
type frame struct {
	object bool
	// the keys read so far: a list while it is short, a set beyond
	keys   []string
	keySet map[string]bool
	key    string // the current key of an object, once read
	index  int    // the next index of an array
	keyed  bool   // an object's key was read and its value is next
}

// seen records key k and reports whether f already had it.
func (f *frame) seen(k string) bool {
	if f.keySet != nil {
		if f.keySet[k] {
			return true
		}
		f.keySet[k] = true
		return false
	}
	for _, o := range f.keys {
		if o == k {
			return true
		}
	}
	f.keys = append(f.keys, k)
	if len(f.keys) > 8 {
		f.keySet = make(map[string]bool, 16)
		for _, o := range f.keys {
			f.keySet[o] = true
		}
		f.keys = nil
	}
	return false
}

// pathOf is the path of the value (or key) being read: the current key
// or index of every frame of stack, outermost first.
func pathOf(stack []*frame) string {
	p := ""
	for _, f := range stack {
		if f.object {
			p = Field(p, f.key)
		} else {
			p = Index(p, f.index)
		}
	}
	return p
}

func check(data []byte, allowNUL bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	var prev int64
	done := false
	for {
		tok, err := dec.Token()
		raw := data[prev:dec.InputOffset()]
		prev = dec.InputOffset()
		if err == io.EOF {
			if !done {
				return &Error{Reason: ReasonSyntax + ": it is empty"}
			}
			return nil
		}
		if err != nil {
			return &Error{Reason: ReasonSyntax + ": " + err.Error()}
		}
		if done {
			return &Error{Reason: ReasonSyntax + ": there is more after the first value"}
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				done = true
			} else {
				stack[len(stack)-1].advance()
			}
			continue
		}
		if top != nil && top.object && !top.keyed {
			// a key: the path of an error about it is the key's own
			k, _ := tok.(string)
			top.key = k
			if reason := checkString(raw, k, allowNUL); reason != "" {
				return &Error{Path: pathOf(stack), Reason: reason}
			}
			if top.seen(k) {
				return &Error{Path: pathOf(stack), Reason: ReasonDuplicate}
			}
			top.keyed = true
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			if len(stack) >= MaxDepth {
				return &Error{Path: pathOf(stack), Reason: ReasonDepth}
			}
			stack = append(stack, &frame{object: t == '{'})
			continue
		case string:
			if reason := checkString(raw, t, allowNUL); reason != "" {
				return &Error{Path: pathOf(stack), Reason: reason}
			}
		case json.Number:
			// encoding/json reads a number into a float64 and refuses one
			// beyond its range: say so with the path, before a decoder does
			// without it
			if _, err := strconv.ParseFloat(string(t), 64); err != nil {
				return &Error{Path: pathOf(stack), Reason: ReasonRange}
			}
		}
		if top == nil {
			done = true
		} else {
			top.advance()
		}
	}
}

// advance moves past a value of f.
func (f *frame) advance() {
	if f.object {
		f.keyed = false
	} else {
		f.index++
	}
}

// checkString looks at one string token: raw is its text as sent (with
// whatever separators preceded it, all ASCII), s its decoded value. It
// returns what is wrong with it, "" when nothing is.
func checkString(raw []byte, s string, allowNUL bool) string {
	if !utf8.Valid(raw) {
		return ReasonUTF8
	}
	if loneSurrogate(raw) {
		return ReasonSurrogate
	}
	if !allowNUL && strings.IndexByte(s, 0) >= 0 {
		return ReasonNUL
	}
	return ""
}

// loneSurrogate reports whether a string token has a \uXXXX escape of a
// surrogate that is not a high surrogate followed by a low one.
func loneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			continue
		}
		i += 4
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return true
			}
			lo, ok := hex4(raw[i+3:])
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 6
		}
	}
	return false
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 16)
	return rune(v), err == nil
}

// plainKey is a key that reads unambiguously after a dot.
var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// Field is the path of key k in the object at path: "k" at the top,
// "path.k" below, and path["k"] (Go-quoted) for keys that are not plain
// words, so that a path always reads back unambiguously.
func Field(path, k string) string {
	if !plainKey.MatchString(k) {
		return path + "[" + strconv.Quote(k) + "]"
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

// Index is the path of item i of the array at path: "path[i]".
func Index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// As returns err's *Error, if it is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
