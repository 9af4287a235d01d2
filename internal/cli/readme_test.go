package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/config"
)

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// readmeRows returns the configuration table rows of README.md by flag:
// the cells of every row that starts with a `--flag` cell.
func readmeRows(t *testing.T) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(readme(t), "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		flag := strings.Trim(strings.SplitN(cells[0], ",", 2)[0], "`")
		rows[strings.TrimPrefix(flag, "--")] = cells
	}
	return rows
}

// TestReadmeConfigurationTable keeps the README's configuration reference
// true: every flag of `kiln server` and every client flag has a row with
// the environment variable and key that internal/config derives, and the
// flag's real default.
func TestReadmeConfigurationTable(t *testing.T) {
	rows := readmeRows(t)
	root := cli.New(nil, nil)
	check := func(f *pflag.Flag, fileFlag string) {
		if f.Name == "help" {
			return
		}
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("README has no row for --%s", f.Name)
			return
		}
		if len(row) < 5 {
			t.Errorf("README row for --%s has %d cells", f.Name, len(row))
			return
		}
		if want := "`" + config.EnvName(f.Name) + "`"; row[1] != want {
			t.Errorf("README: --%s has environment %s, want %s", f.Name, row[1], want)
		}
		wantKey := "`" + config.Key(f.Name) + "`"
		if f.Name == fileFlag {
			wantKey = "—"
		}
		if row[2] != wantKey {
			t.Errorf("README: --%s has key %s, want %s", f.Name, row[2], wantKey)
		}
		if f.DefValue != "" && f.DefValue != "[]" && row[3] != "`"+f.DefValue+"`" {
			t.Errorf("README: --%s has default %s, want `%s`", f.Name, row[3], f.DefValue)
		}
	}
	server, _, err := root.Find([]string{"server"})
	if err != nil {
		t.Fatal(err)
	}
	server.Flags().VisitAll(func(f *pflag.Flag) { check(f, "config") })
	scope, _, err := root.Find([]string{"scope", "list"})
	if err != nil {
		t.Fatal(err)
	}
	scope.InheritedFlags().VisitAll(func(f *pflag.Flag) { check(f, "client-config") })
}

// TestReadmeSameShape keeps the tour's promise true: every resource it
// lists has each subcommand of `kiln RESOURCE create|list|show|update|delete`,
// and each extra command it names exists.
func TestReadmeSameShape(t *testing.T) {
	text := strings.Join(strings.Fields(readme(t)), " ")
	i := strings.Index(text, "Everything has the same shape: `kiln RESOURCE ")
	if i < 0 {
		t.Fatal("the README no longer says that everything has the same shape")
	}
	text = text[i:]
	end := strings.Index(text, "`kiln version`")
	if end < 0 {
		t.Fatal("the same-shape sentence no longer ends with `kiln version`")
	}
	text = text[:end]
	subs := strings.Split(strings.TrimSuffix(strings.Fields(text[len("Everything has the same shape: `kiln RESOURCE "):])[0], "`"), "|")
	resources := regexp.MustCompile("`([a-z-]+)`").FindAllStringSubmatch(text[:strings.Index(text, ", plus")], -1)
	if len(subs) != 5 || len(resources) < 9 {
		t.Fatalf("cannot read the same-shape sentence: %q gives %v and %v", text, subs, resources)
	}
	root := cli.New(nil, nil)
	for _, r := range resources {
		for _, sub := range subs {
			if c, _, err := root.Find([]string{r[1], sub}); err != nil || c.Name() != sub {
				t.Errorf("the README promises `kiln %s %s`, which does not exist", r[1], sub)
			}
		}
	}
	for _, m := range regexp.MustCompile("`kiln ([a-z -]+) ([a-z|-]+)`").FindAllStringSubmatch(text[strings.Index(text, ", plus"):], -1) {
		for _, sub := range strings.Split(m[2], "|") {
			args := append(strings.Fields(m[1]), sub)
			if c, _, err := root.Find(args); err != nil || c.Name() != sub {
				t.Errorf("the README promises `kiln %s`, which does not exist", strings.Join(args, " "))
			}
		}
	}
}

// TestArchitectureCitations keeps the citations of docs/architecture.md
// followable: every "docs/architecture.md#<anchor>" in the repository's Go
// and Markdown files, and every "#<anchor>" link inside the document, names
// an anchor the document defines. Nothing cites the product spec by section
// number: it lives outside the repository, so a reader of the code
// could not follow the citation.
func TestArchitectureCitations(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`<a id="([a-z0-9-]+)"></a>`).FindAllStringSubmatch(string(doc), -1) {
		if anchors[m[1]] {
			t.Errorf("docs/architecture.md defines the anchor %q twice", m[1])
		}
		anchors[m[1]] = true
	}
	if len(anchors) < 15 {
		t.Fatalf("docs/architecture.md defines only %d anchors", len(anchors))
	}
	for _, m := range regexp.MustCompile(`\]\(#([a-z0-9-]+)\)`).FindAllStringSubmatch(string(doc), -1) {
		if !anchors[m[1]] {
			t.Errorf("docs/architecture.md links to #%s, which it does not define", m[1])
		}
	}
	cite := regexp.MustCompile(`architecture\.md#([a-z0-9-]+)`)
	cited := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".md")) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if i := bytes.Index(data, []byte("SPEC "+"§")); i >= 0 {
			t.Errorf("%s cites the spec by section (%q): cite docs/architecture.md#<anchor> instead", path,
				data[i:min(len(data), i+12)])
		}
		for _, m := range cite.FindAllStringSubmatch(string(data), -1) {
			cited++
			if !anchors[m[1]] {
				t.Errorf("%s cites docs/architecture.md#%s, which does not exist", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited == 0 {
		t.Error("nothing cites docs/architecture.md")
	}
}
