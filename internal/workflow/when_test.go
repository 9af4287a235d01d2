package workflow

import (
	"os"
	"path/filepath"
	"testing"
)

// The when-conditions of template metrics, pinned: every condition that
// the fixtures, the README and the tests used, and more of the syntax,
// with the result the evaluator gave for each row of whenRows — written
// before conditions were evaluated with expr-lang/expr, so that the
// switch kept what templates meant — and every refused condition with its
// message.

// whenRows are the values of the variables each condition is evaluated
// with; a missing variable reads as empty text.
var whenRows = []map[string]string{
	{"status": "Succeeded", "duration": "61.5", "task.name": "build-amd64", "workflow.status": "Succeeded", "workflow.duration": "120", "workflow.name": "build-all", "matrix.host_architecture": "amd64"},
	{"status": "Failed", "duration": "0", "task.name": "build-arm64", "workflow.status": "Failed", "workflow.duration": "3600", "workflow.name": "build-all", "matrix.host_architecture": "arm64"},
	{"status": "Error", "duration": "3600.0", "task.name": "a b", "workflow.status": "Error", "workflow.duration": "1e3", "workflow.name": "x && y", "matrix.host_architecture": "i386"},
	{"status": "Skipped", "duration": "", "task.name": `back\slash`, "workflow.status": "Aborted", "workflow.duration": "", "workflow.name": "it's", "matrix.host_architecture": "x;y"},
	{"status": "Aborted", "duration": "-1", "task.name": "Succeeded", "workflow.status": "Skipped", "workflow.duration": "NaN", "workflow.name": "é", "matrix.host_architecture": "amd64"},
	{"status": "Succeeded", "duration": "4000", "task.name": "build-i386", "workflow.status": "Succeeded", "workflow.duration": "0.5", "workflow.name": "a:b/c+d", "matrix.host_architecture": "i386"},
	{},
}

// whenResults holds each accepted condition and its results on whenRows,
// in order: T when it holds, F when not.
var whenResults = []struct{ src, results string }{
	{"{{workflow.status}} == Succeeded", "TFFFFTF"},
	{"{{status}} == Failed || {{status}} == Error", "FTTFFFF"},
	{"({{duration}} > 60 && {{status}} == 'Succeeded') || !({{duration}} <= 3600)", "TFFTFTT"},
	{"{{status}} == Succeeded", "TFFFFTF"},
	{"{{status}} != Succeeded", "FTTTTFT"},
	{"{{ status }} == 'Succeeded'", "TFFFFTF"},
	{"{{status}} == \"Failed\" || {{status}} == Error", "FTTFFFF"},
	{"{{duration}} > 60", "TFTFFTF"},
	{"{{duration}} >= 61.5 && {{duration}} <= 61.5", "TFFFFFF"},
	{"{{duration}} < 60", "FTFFTFF"},
	{"{{duration}} == 61.50", "TFFFFFF"},
	{"{{task.name}} == build-amd64", "TFFFFFF"},
	{"!({{task.name}} == build-amd64)", "FTTTTTT"},
	{"{{status}} == Failed || {{duration}} > 1 && 1 == 2", "FTFFFFF"},
	{"({{status}} == Failed || {{duration}} > 1) && 1 == 1", "TTTFFTF"},
	{"{{status}} == Succeeded && !({{duration}} > 3600)", "TFFFFFF"},
	{"{{status}} == Failed && {{duration}} > 1 || 2 == 2", "TTTTTTT"},
	{"{{status}} == Failed && ({{duration}} > 1 || 2 == 2)", "FTFFFFF"},
	{"!!({{status}} == Succeeded)", "TFFFFTF"},
	{"{{status}}==Succeeded&&{{task.name}}!=build-arm64", "TFFFFTF"},
	{"{{duration}} > {{duration}} || {{status}} == {{status}}", "TTTTTTT"},
	{"{{workflow.duration}} >= 120", "TTTFFFF"},
	{"{{workflow.name}} == build-all", "TTFFFFF"},
	{"{{matrix.host_architecture}} == amd64 || {{matrix.host_architecture}} == 'i386'", "TFTFTTF"},
	{"{{duration}} >= {{workflow.duration}}", "FFTFFTF"},
	{"{{status}} == {{workflow.status}}", "TTTFFTT"},
	{"{{status}} != {{workflow.status}}", "FFFTTFF"},
	{"{{task.name}} == \"a b\"", "FFTFFFF"},
	{"{{workflow.name}} == 'x && y'", "FFTFFFF"},
	{"{{workflow.name}} == \"it's\"", "FFFTFFF"},
	{"{{task.name}} == 'back\\slash'", "FFFTFFF"},
	{"{{workflow.name}} == 'é'", "FFFFTFF"},
	{"{{matrix.host_architecture}} == 'x;y'", "FFFTFFF"},
	{"{{duration}} == ''", "FFFTFFT"},
	{"{{status}} != \"\"", "TTTTTTF"},
	{"'a' == \"a\"", "TTTTTTT"},
	{"'say \"x\"' == 'say \"x\"'", "TTTTTTT"},
	{"{{status}} == 'Succeeded )'", "FFFFFFF"},
	{"{{workflow.name}} == a:b/c+d", "FFFFFTF"},
	{"{{status}} == succeeded", "FFFFFFF"},
	{"{{task.name}} == Succeeded", "FFFFTFF"},
	{"{{duration}} == 1e3 || {{workflow.duration}} == 1e3", "FFTFFFF"},
	{"{{workflow.duration}} == 1000", "FFTFFFF"},
	{"{{duration}} < -0.5", "FFFFTFF"},
	{"{{duration}} > +1", "TFTFFTF"},
	{"{{duration}} == 3600", "FFTFFFF"},
	{"{{duration}} == 0x1p-2 || {{workflow.duration}} == 0x1p-1", "FFFFFTF"},
	{"{{workflow.duration}} == .5", "FFFFFTF"},
	{"{{workflow.duration}} == NaN", "FFFFFFF"},
	{"{{workflow.duration}} != NaN", "TTTTTTT"},
	{"{{duration}} < Inf", "TTTFTTF"},
	{"{{duration}} > -Inf", "TTTFTTF"},
	{"{{duration}} < 1_000", "TTFFTFF"},
	{"1.2.3 == 1.2.3", "TTTTTTT"},
	{"1.2.3 < 2", "FFFFFFF"},
	{"{{status}} < 2", "FFFFFFF"},
	{"{{duration}} <= 0", "FTFFTFF"},
	{"{{duration}} > abc", "FFFFFFF"},
	{"010 == 10", "TTTTTTT"},
	{"-0 == 0", "TTTTTTT"},
	{"{{status}}\t==\tSucceeded", "TFFFFTF"},
	{"{{status}} == Failed\n|| {{status}} == Succeeded", "TTFFFTF"},
	{"  {{status}} == Succeeded  ", "TFFFFTF"},
	{"(({{status}} == Failed))", "FTFFFFF"},
	{"!{{status}} == Succeeded", "FTTTTFT"},
	{"!!{{status}} == Succeeded", "TFFFFTF"},
	{"! ({{status}} == Failed) && !{{duration}} > 100", "TFFTTFT"},
	{"!{{status}} == Failed || !{{status}} == Succeeded", "TTTTTTT"},
	{"!({{status}} == Failed || {{status}} == Error) && !({{duration}} > 3600)", "TFFTTFT"},
	{"{{status}} == Failed || {{status}} == Error || {{status}} == Aborted", "FTTFTFF"},
	{"{{duration}} > 60 && {{duration}} < 3600 && {{status}} != Failed", "TFFFFFF"},
	{"{{status}} == Succeeded || !({{duration}} > 1 || {{status}} == Error) && 1 == 1", "TTFTTTT"},
	{"{{task.name}} == build-amd64 && {{matrix.host_architecture}} == amd64 || {{workflow.status}} == Skipped", "TFFFTFF"},
	{"({{status}} == Succeeded || {{status}} == Failed) && ({{duration}} > 60 || {{duration}} == '')", "TFFFFTF"},
}

// whenRefused holds refused conditions and their messages, which a
// template's validation prefixes with the field ("metrics[0].when: ").
var whenRefused = []struct{ src, err string }{
	{"", "is empty; leave when out to emit always"},
	{"   ", "is empty; leave when out to emit always"},
	{"{{workflow.status}} = Succeeded", "at 21: use == to compare, not ="},
	{"{{workflow.status}}", "at 20: expected ==, !=, <, <=, > or >= after {{workflow.status}} but found the end"},
	{"{{workflow.status}} == Failed & 1 == 1", "at 31: use && and || (doubled)"},
	{"({{workflow.status}} == Failed || 1 == 1 && 2 == 2", "at 51: expected ) but found the end"},
	{"{{status}} == Failed |", "at 22: use && and || (doubled)"},
	{"{{status}} == 'Failed", "at 15: the quoted text is not closed"},
	{"{{ not a var }} == a", "at 1: \"{{ not a var…\" does not start a {{variable}}"},
	{"{{{{status}} == Succeeded", "at 1: \"{{{{status}}…\" does not start a {{variable}}"},
	{"{{status}} == Failed Error", "at 22: unexpected \"Error\"; join conditions with && or ||"},
	{"== a", "at 1: expected a {{variable}} or a value but found \"==\""},
	{"{{status}} ==", "at 14: expected a {{variable}} or a value but found the end"},
	{"{{status}} == Failed &&", "at 24: expected a {{variable}} or a value but found the end"},
	{"!", "at 2: expected a {{variable}} or a value but found the end"},
	{"()", "at 2: expected a {{variable}} or a value but found \")\""},
	{"(a == b", "at 8: expected ) but found the end"},
	{"a == b)", "at 7: unexpected \")\"; join conditions with && or ||"},
	{"a == b == c", "at 8: unexpected \"==\"; join conditions with && or ||"},
	{"(a == b) == c", "at 10: unexpected \"==\"; join conditions with && or ||"},
	{"a == !b", "at 6: expected a {{variable}} or a value but found \"!\""},
	{"a == (b)", "at 6: expected a {{variable}} or a value but found \"(\""},
	{"a b", "at 3: expected ==, !=, <, <=, > or >= after \"a\" but found \"b\""},
	{"a == b # c", "at 8: unexpected \"#\""},
	{"a == b, c", "at 7: unexpected \",\""},
	{"é == é", "at 1: unexpected \"é\""},
	{"a < b < c", "at 7: unexpected \"<\"; join conditions with && or ||"},
	{"{{status}} == Failed ||| x", "at 24: use && and || (doubled)"},
	{"!{{status}}", "at 12: expected ==, !=, <, <=, > or >= after {{status}} but found the end"},
	{"{{status}} == Failed && {{duration}}", "at 37: expected ==, !=, <, <=, > or >= after {{duration}} but found the end"},
	{"a == b && (c)", "at 13: expected ==, !=, <, <=, > or >= after \"c\" but found \")\""},
	{"a === b", "at 5: use == to compare, not ="},
	{"a =! b", "at 3: use == to compare, not ="},
	{"a <> b", "at 4: expected a {{variable}} or a value but found \">\""},
	{"a == b;", "at 7: unexpected \";\""},
	{"{{}} == a", "at 1: \"{{}} == a\" does not start a {{variable}}"},
	{"{{1x}} == a", "at 1: \"{{1x}} == a\" does not start a {{variable}}"},
	{"a == [b]", "at 6: unexpected \"[\""},
	{"a ?? b", "at 3: unexpected \"?\""},
}

func TestWhenResults(t *testing.T) {
	for _, c := range whenResults {
		cond, err := parseCond(c.src)
		if err != nil {
			t.Errorf("%q refused: %v", c.src, err)
			continue
		}
		got := make([]byte, len(whenRows))
		for i, row := range whenRows {
			got[i] = 'F'
			if cond.eval(func(v string) string { return row[v] }) {
				got[i] = 'T'
			}
		}
		if string(got) != c.results {
			t.Errorf("%q gives %s on whenRows, want %s", c.src, got, c.results)
		}
	}
}

func TestWhenRefused(t *testing.T) {
	for _, c := range whenRefused {
		if _, err := parseCond(c.src); err == nil || err.Error() != c.err {
			t.Errorf("%q: got %v, want %s", c.src, err, c.err)
		}
	}
}

// Every condition of the good fixtures is pinned in whenResults.
func TestWhenFixturesPinned(t *testing.T) {
	pinned := map[string]bool{}
	for _, c := range whenResults {
		pinned[c.src] = true
	}
	for _, path := range fixtures(t, "good") {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := Parse(path, data)
		if err != nil {
			t.Fatal(err)
		}
		ms := tmpl.Metrics
		for _, st := range tmpl.Steps {
			ms = append(ms, st.Metrics...)
		}
		if tmpl.Then != nil {
			ms = append(ms, tmpl.Then.Metrics...)
		}
		for _, m := range ms {
			if m.When != "" && !pinned[m.When] {
				t.Errorf("%s: when %q is not in whenResults", filepath.Base(path), m.When)
			}
		}
	}
}
