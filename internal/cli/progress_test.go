package cli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/store"
	"github.com/kiln-build/kiln/internal/testdb"
)

// asTerminal makes every writer count as a terminal for the test.
func asTerminal(t *testing.T) {
	t.Helper()
	was := isTerminal
	isTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { isTerminal = was })
}

// A bar of bytes reaches 100 % and ends its line; the same bar where
// nobody watches writes nothing.
func TestBarDrawsOnlyForAPerson(t *testing.T) {
	var out, errw bytes.Buffer
	bar := newBar(&out, &errw, 3<<20, "big.iso", true)
	io.Copy(bar, bytes.NewReader(make([]byte, 3<<20)))
	endBar(bar)
	if errw.Len() != 0 || out.Len() != 0 {
		t.Fatalf("a bar was drawn into buffers: %q %q", out.String(), errw.String())
	}

	asTerminal(t)
	bar = newBar(&out, &errw, 3<<20, "big.iso", true)
	io.Copy(bar, bytes.NewReader(make([]byte, 3<<20)))
	endBar(bar)
	got := errw.String()
	if !strings.Contains(got, "big.iso") || !strings.Contains(got, "100%") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("bar: %q", got)
	}
	if out.Len() != 0 {
		t.Fatalf("the bar went to stdout: %q", out.String())
	}
}

// seed.Fill's phases get a bar each, its one-step phase a spinner.
func TestSeedProgressPhases(t *testing.T) {
	asTerminal(t)
	var out, errw bytes.Buffer
	p := seedProgress(&out, &errw)
	for _, phase := range []string{"work_requests", "artifacts"} {
		for done := 0; done <= 10_000; done += 5000 {
			p(phase, done, 10_000)
		}
	}
	p("running totals", 0, 1)
	p("running totals", 1, 1)
	got := errw.String()
	for _, want := range []string{"work_requests", "artifacts", "10000/10000", "running totals"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in %q", want, got)
		}
	}
	if strings.Count(got, "\n") != 3 {
		t.Errorf("want one finished line per phase: %q", got)
	}
}

// kiln metrics recount: a spinner for a person, the plain line otherwise.
func TestRecountProgress(t *testing.T) {
	dsn := testdb.SQLite(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	recount := func() string {
		var out, errw bytes.Buffer
		if code := Main(ctx, []string{"metrics", "recount", "--database", dsn}, &out, &errw); code != ExitOK {
			t.Fatalf("exit %d: %s%s", code, out.String(), errw.String())
		}
		return errw.String()
	}
	if got := recount(); got != "recounting from the base tables…\n" {
		t.Errorf("piped: %q", got)
	}
	asTerminal(t)
	if got := recount(); !strings.Contains(got, "recounting from the base tables") || strings.Contains(got, "…") || !strings.HasSuffix(got, "\n") {
		t.Errorf("on a terminal: %q", got)
	}
}
