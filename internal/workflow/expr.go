package workflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
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

// A when-condition is a small boolean language, after Argo's:
//
//	cond    := and ( "||" and )*
//	and     := unary ( "&&" unary )*
//	unary   := "!" unary | "(" cond ")" | operand op operand
//	op      := "==" | "!=" | "<" | "<=" | ">" | ">="
//	operand := {{variable}} | word | 'quoted' | "quoted"
//
// Words are runs of letters, digits and . _ - : / + (Succeeded, 3.5,
// build-amd64). == and != compare numbers when both sides are numbers and
// text otherwise; the ordering operators compare numbers only, which the
// validator checks before a template is saved.

// cond is a parsed when-condition.
type cond interface {
	eval(lookup func(string) string) bool
	walk(func(*comparison))
}

type logical struct {
	and  bool
	l, r cond
}

func (c *logical) eval(lookup func(string) string) bool {
	if c.and {
		return c.l.eval(lookup) && c.r.eval(lookup)
	}
	return c.l.eval(lookup) || c.r.eval(lookup)
}

func (c *logical) walk(f func(*comparison)) { c.l.walk(f); c.r.walk(f) }

type negation struct{ x cond }

func (c *negation) eval(lookup func(string) string) bool { return !c.x.eval(lookup) }
func (c *negation) walk(f func(*comparison))             { c.x.walk(f) }

// operand is a variable or a literal.
type operand struct {
	variable string
	literal  string
}

func (o operand) value(lookup func(string) string) string {
	if o.variable != "" {
		return lookup(o.variable)
	}
	return o.literal
}

func (o operand) String() string {
	if o.variable != "" {
		return "{{" + o.variable + "}}"
	}
	return strconv.Quote(o.literal)
}

type comparison struct {
	op   string
	l, r operand
}

func (c *comparison) walk(f func(*comparison)) { f(c) }

func (c *comparison) eval(lookup func(string) string) bool {
	a, b := c.l.value(lookup), c.r.value(lookup)
	x, errA := strconv.ParseFloat(a, 64)
	y, errB := strconv.ParseFloat(b, 64)
	numeric := errA == nil && errB == nil
	switch c.op {
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
	switch c.op {
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
}

func (t token) String() string {
	switch t.kind {
	case tokEnd:
		return "the end"
	case tokVar:
		return "{{" + t.text + "}}"
	case tokQuoted:
		return strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:/+", c) >= 0
}

func lex(s string) ([]token, error) {
	var out []token
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
			out = append(out, token{tokVar, s[i+m[2] : i+m[3]], i})
			i += m[1]
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("at %d: the quoted text is not closed", i+1)
			}
			out = append(out, token{tokQuoted, s[i+1 : i+1+j], i})
			i += j + 2
		case strings.HasPrefix(s[i:], "&&"):
			out = append(out, token{tokAnd, "&&", i})
			i += 2
		case strings.HasPrefix(s[i:], "||"):
			out = append(out, token{tokOr, "||", i})
			i += 2
		case strings.HasPrefix(s[i:], "=="), strings.HasPrefix(s[i:], "!="),
			strings.HasPrefix(s[i:], "<="), strings.HasPrefix(s[i:], ">="):
			out = append(out, token{tokOp, s[i : i+2], i})
			i += 2
		case c == '<' || c == '>':
			out = append(out, token{tokOp, s[i : i+1], i})
			i++
		case c == '!':
			out = append(out, token{tokNot, "!", i})
			i++
		case c == '(':
			out = append(out, token{tokLParen, "(", i})
			i++
		case c == ')':
			out = append(out, token{tokRParen, ")", i})
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
			out = append(out, token{tokWord, s[i:j], i})
			i = j
		default:
			return nil, fmt.Errorf("at %d: unexpected %q", i+1, string(rune(c)))
		}
	}
	return append(out, token{kind: tokEnd, pos: len(s)}), nil
}

func abbreviate(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token { t := p.toks[p.i]; p.i++; return t }

// parseCond parses a when-condition.
func parseCond(s string) (cond, error) {
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 1 {
		return nil, fmt.Errorf("is empty; leave when out to emit always")
	}
	p := &parser{toks: toks}
	c, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEnd {
		return nil, fmt.Errorf("at %d: unexpected %s; join conditions with && or ||", t.pos+1, t)
	}
	return c, nil
}

func (p *parser) or() (cond, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peek().kind == tokOr {
		p.next()
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &logical{and: false, l: l, r: r}
	}
	return l, nil
}

func (p *parser) and() (cond, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.peek().kind == tokAnd {
		p.next()
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &logical{and: true, l: l, r: r}
	}
	return l, nil
}

func (p *parser) unary() (cond, error) {
	switch t := p.peek(); t.kind {
	case tokNot:
		p.next()
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &negation{x}, nil
	case tokLParen:
		p.next()
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		if t := p.next(); t.kind != tokRParen {
			return nil, fmt.Errorf("at %d: expected ) but found %s", t.pos+1, t)
		}
		return c, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	op := p.next()
	if op.kind != tokOp {
		return nil, fmt.Errorf("at %d: expected ==, !=, <, <=, > or >= after %s but found %s", op.pos+1, l, op)
	}
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	return &comparison{op: op.text, l: l, r: r}, nil
}

func (p *parser) operand() (operand, error) {
	t := p.next()
	switch t.kind {
	case tokVar:
		return operand{variable: t.text}, nil
	case tokWord, tokQuoted:
		return operand{literal: t.text}, nil
	}
	return operand{}, fmt.Errorf("at %d: expected a {{variable}} or a value but found %s", t.pos+1, t)
}
