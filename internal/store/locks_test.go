package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAdvisoryLockKeys: the one-key advisory locks of locks.go are
// distinct, and no SQL of kiln's code names a key by its number, so that
// every key is in that list. (The running-totals folder once shared the
// autoscaler's key: while an autoscaler ran, nothing was ever folded.)
func TestAdvisoryLockKeys(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "locks.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok {
				t.Fatalf("%s: a key is a number", v.Names[0])
			}
			if other, dup := seen[lit.Value]; dup {
				t.Errorf("%s and %s are both advisory lock %s", other, v.Names[0], lit.Value)
			}
			seen[lit.Value] = v.Names[0].Name
		}
	}
	if len(seen) < 6 {
		t.Fatalf("locks.go lists %d keys: %v", len(seen), seen)
	}
	literal := regexp.MustCompile(`advisory_(xact_)?(un)?lock(_shared)?\(\s*[0-9]`)
	root := filepath.Join("..", "..")
	err = filepath.WalkDir(filepath.Join(root, "internal"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if m := literal.Find(src); m != nil {
			t.Errorf("%s takes an advisory lock by number (%q): name its key in internal/store/locks.go", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
