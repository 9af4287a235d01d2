package cli_test

import (
	"os"
	"path/filepath"
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

// TestReadmeTour runs the README's tour, line by line, against a real
// server, so that it keeps working as written.
func TestReadmeTour(t *testing.T) {
	text := readme(t)
	i := strings.Index(text, "## A short tour")
	if i < 0 {
		t.Fatal("README has no tour section")
	}
	text = text[i:]
	start := strings.Index(text, "```sh\n")
	end := strings.Index(text[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("the tour has no sh block")
	}
	block := text[start+6 : start+6+end]

	srv := startServer(t, cleanEnv(t))
	// The tour relies on the default server address and KILN_TOKEN from
	// the admin-token file; here the server has a random port and a temp
	// data directory.
	env := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))
	ran := 0
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case line == "export KILN_TOKEN=$(cat kiln-data/admin-token)":
		case strings.HasPrefix(line, "kiln "):
			r := ok(t, env, splitWords(line)[1:]...)
			ran++
			if strings.HasPrefix(line, "kiln workspace list") {
				ws := rows(t, r.stdout)
				if len(ws) != 2 || ws[0]["NAME"] != "sandbox" || ws[1]["NAME"] != "embargoed" || ws[1]["PUBLIC"] != "no" ||
					ws[1]["EXPIRATION_DELAY"] != "720h0m0s" {
					t.Errorf("workspace list differs from the README:\n%s", r.stdout)
				}
			}
		default:
			t.Errorf("the tour has a line this test does not know how to run: %q", line)
		}
	}
	if ran < 5 {
		t.Errorf("only %d kiln commands in the tour", ran)
	}
}

// splitWords splits a shell command line on spaces, honouring single and
// double quotes (enough for the README's examples).
func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
