package workflow

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Variables are written {{name}} (spaces inside the braces are allowed).
// Text in double braces that is not a variable name, such as a Jinja
// expression in a script, is left alone.
var varPattern = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}`)

// segment is a piece of a text template: literal text or a variable.
type segment struct {
	text     string
	variable string // set for a variable, text is then its source "{{…}}"
}

// textTemplate is a string with {{variables}}.
type textTemplate []segment

func parseText(s string) textTemplate {
	var out textTemplate
	last := 0
	for _, m := range varPattern.FindAllStringSubmatchIndex(s, -1) {
		if m[0] > last {
			out = append(out, segment{text: s[last:m[0]]})
		}
		out = append(out, segment{text: s[m[0]:m[1]], variable: s[m[2]:m[3]]})
		last = m[1]
	}
	if last < len(s) || len(out) == 0 {
		out = append(out, segment{text: s[last:]})
	}
	return out
}

// vars lists the variables used, in order, with repeats.
func (t textTemplate) vars() []string {
	var out []string
	for _, s := range t {
		if s.variable != "" {
			out = append(out, s.variable)
		}
	}
	return out
}

// single returns the variable when the template is exactly one variable.
func (t textTemplate) single() (string, bool) {
	if len(t) == 1 && t[0].variable != "" {
		return t[0].variable, true
	}
	return "", false
}

// render substitutes every variable with lookup's value.
func (t textTemplate) render(lookup func(string) string) string {
	var b strings.Builder
	for _, s := range t {
		if s.variable != "" {
			b.WriteString(lookup(s.variable))
		} else {
			b.WriteString(s.text)
		}
	}
	return b.String()
}

// A when-condition is a boolean expression after Argo's, evaluated with
// expr-lang/expr as Argo evaluates its own:
//
//	cond    := and ( "||" and )*
//	and     := unary ( "&&" unary )*
//	unary   := "!" unary | "(" cond ")" | operand op operand
//	op      := "==" | "!=" | "<" | "<=" | ">" | ">="
//	operand := {{variable}} | word | 'quoted' | "quoted"
//
// Words are runs of letters, digits and . _ - : / + (Succeeded, 3.5,
// build-amd64), which expr would read as arithmetic. So kiln reads the
// tokens, and hands expr each comparison as a call that compares text:
// `{{status}} == Failed` becomes `(cmp("==", Var("status"), "Failed"))`.
// expr parses the &&, ||, ! and parentheses around them and runs the
// program. == and != compare numbers when both sides are numbers and text
// otherwise; the ordering operators compare numbers only, which the
// validator checks before a template is saved.

// condition is a parsed when-condition.
type condition struct {
	program     *vm.Program
	comparisons []*comparison
}

// eval says whether the condition holds for the variables lookup gives.
func (c *condition) eval(lookup func(string) string) bool {
	out, err := expr.Run(c.program, whenEnv{lookup})
	holds, _ := out.(bool)
	return err == nil && holds
}

// walk calls f for every comparison, in source order.
func (c *condition) walk(f func(*comparison)) {
	for _, cmp := range c.comparisons {
		f(cmp)
	}
}

// whenEnv is what a condition's program reads: Var("status") is the value
// of {{status}}.
type whenEnv struct{ lookup func(string) string }

// Var returns the value of a variable; expr calls it.
func (e whenEnv) Var(name string) string { return e.lookup(name) }

var whenOptions = []expr.Option{
	expr.Env(whenEnv{}),
	expr.AsBool(),
	expr.Function("cmp", func(p ...any) (any, error) { return compare(p[0].(string), p[1].(string), p[2].(string)), nil },
		new(func(op, a, b string) bool)),
}

// compare compares two operands' values with op.
func compare(op, a, b string) bool {
	x, errA := strconv.ParseFloat(a, 64)
	y, errB := strconv.ParseFloat(b, 64)
	numeric := errA == nil && errB == nil
	switch op {
	case "==":
		if numeric {
			return x == y
		}
		return a == b
	case "!=":
		if numeric {
			return x != y
		}
		return a != b
	}
	if !numeric {
		return false
	}
	switch op {
	case "<":
		return x < y
	case "<=":
		return x <= y
	case ">":
		return x > y
	case ">=":
		return x >= y
	}
	return false
}

// operand is a variable or a literal.
type operand struct {
	variable string
	literal  string
}

func (o operand) String() string {
	if o.variable != "" {
		return "{{" + o.variable + "}}"
	}
	return strconv.Quote(o.literal)
}

// source is the operand as expr reads it.
func (o operand) source() string {
	if o.variable != "" {
		return "Var(" + strconv.Quote(o.variable) + ")"
	}
	return strconv.Quote(o.literal)
}

// comparison is one "operand op operand" of a condition.
type comparison struct {
	op   string
	l, r operand
}

type tokenKind int

const (
	tokEnd tokenKind = iota
	tokVar
	tokWord
	tokQuoted
	tokOp  // comparison operator
	tokAnd // &&
	tokOr  // ||
	tokNot
	tokLParen
	tokRParen
)

type token struct {
	kind tokenKind
	text string // variable name, word, unquoted text or operator
	pos  int    // byte offset, for messages
	at   int    // rune offset in expr's source, or -1 inside a comparison
}

func (t token) String() string {
	switch t.kind {
	case tokEnd:
		return "the end"
	case tokVar:
		return "{{" + t.text + "}}"
	}
	return strconv.Quote(t.text)
}

func (t token) isOperand() bool { return t.kind == tokVar || t.kind == tokWord || t.kind == tokQuoted }

func (t token) operand() operand {
	if t.kind == tokVar {
		return operand{variable: t.text}
	}
	return operand{literal: t.text}
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:/+", c) >= 0
}

func lex(s string) ([]token, error) {
	var out []token
	add := func(kind tokenKind, text string, pos int) { out = append(out, token{kind, text, pos, -1}) }
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(s[i:], "{{"):
			m := varPattern.FindStringSubmatchIndex(s[i:])
			if m == nil || m[0] != 0 {
				return nil, fmt.Errorf("at %d: %q does not start a {{variable}}", i+1, abbreviate(s[i:]))
			}
			add(tokVar, s[i+m[2]:i+m[3]], i)
			i += m[1]
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("at %d: the quoted text is not closed", i+1)
			}
			add(tokQuoted, s[i+1:i+1+j], i)
			i += j + 2
		case strings.HasPrefix(s[i:], "&&"):
			add(tokAnd, "&&", i)
			i += 2
		case strings.HasPrefix(s[i:], "||"):
			add(tokOr, "||", i)
			i += 2
		case strings.HasPrefix(s[i:], "=="), strings.HasPrefix(s[i:], "!="),
			strings.HasPrefix(s[i:], "<="), strings.HasPrefix(s[i:], ">="):
			add(tokOp, s[i:i+2], i)
			i += 2
		case c == '<' || c == '>':
			add(tokOp, s[i:i+1], i)
			i++
		case c == '!':
			add(tokNot, "!", i)
			i++
		case c == '(':
			add(tokLParen, "(", i)
			i++
		case c == ')':
			add(tokRParen, ")", i)
			i++
		case c == '=':
			return nil, fmt.Errorf("at %d: use == to compare, not =", i+1)
		case c == '&' || c == '|':
			return nil, fmt.Errorf("at %d: use && and || (doubled)", i+1)
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			add(tokWord, s[i:j], i)
			i = j
		default:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return nil, fmt.Errorf("at %d: unexpected %q", i+1, string(r))
		}
	}
	add(tokEnd, "", len(s))
	return out, nil
}

func abbreviate(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// parseCond parses a when-condition: kiln reads the comparisons, expr the
// rest.
func parseCond(s string) (*condition, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 1 {
		return nil, fmt.Errorf("is empty; leave when out to emit always")
	}
	var src strings.Builder
	var cmps []*comparison
	for i := 0; i < len(toks); i++ {
		t := &toks[i]
		t.at = utf8.RuneCountInString(src.String())
		switch {
		case t.isOperand():
			if i > 0 && (toks[i-1].isOperand() || toks[i-1].kind == tokRParen) {
				return nil, unexpected(toks, i)
			}
			if toks[i+1].kind != tokOp {
				return nil, unexpected(toks, i+1)
			}
			if !toks[i+2].isOperand() {
				return nil, unexpected(toks, i+2)
			}
			c := &comparison{op: toks[i+1].text, l: t.operand(), r: toks[i+2].operand()}
			cmps = append(cmps, c)
			fmt.Fprintf(&src, "(cmp(%q, %s, %s))", c.op, c.l.source(), c.r.source())
			i += 2
		case t.kind == tokOp:
			return nil, unexpected(toks, i)
		default:
			src.WriteString(t.text)
		}
		src.WriteByte(' ')
	}
	program, err := expr.Compile(src.String(), whenOptions...)
	if err != nil {
		var fe *file.Error
		if !errors.As(err, &fe) {
			return nil, err
		}
		i := len(toks) - 1
		for i > 0 && (toks[i].at < 0 || toks[i].at > fe.From) {
			i--
		}
		return nil, unexpected(toks, i)
	}
	return &condition{program: program, comparisons: cmps}, nil
}

// unexpected explains why token i cannot come where it is.
func unexpected(toks []token, i int) error {
	t := toks[i]
	var prev, before token
	if i > 0 {
		prev = toks[i-1]
	}
	if i > 1 {
		before = toks[i-2]
	}
	complete := prev.kind == tokRParen || prev.isOperand() && before.kind == tokOp
	open := 0
	for _, x := range toks[:i] {
		switch x.kind {
		case tokLParen:
			open++
		case tokRParen:
			open--
		}
	}
	switch {
	case t.kind == tokEnd && open > 0 && complete:
		return fmt.Errorf("at %d: expected ) but found the end", t.pos+1)
	case complete:
		return fmt.Errorf("at %d: unexpected %s; join conditions with && or ||", t.pos+1, t)
	case prev.isOperand():
		return fmt.Errorf("at %d: expected ==, !=, <, <=, > or >= after %s but found %s", t.pos+1, prev, t)
	}
	return fmt.Errorf("at %d: expected a {{variable}} or a value but found %s", t.pos+1, t)
}
