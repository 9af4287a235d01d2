package runner_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/cli"
	"github.com/kiln-build/kiln/internal/config"
)

// readmeSection returns the README's text from heading to the next heading
// of the same level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	s = s[i+len(heading)+2:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s
}

// TestReadmeRunnerTable keeps the README's table of runner settings true:
// one row per flag of `kiln runner`, with the variable and key that
// internal/config derives.
func TestReadmeRunnerTable(t *testing.T) {
	section := readmeSection(t, "## Your first build")
	rows := map[string][]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`--") {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[strings.Trim(cells[1], "`-")] = cells
	}
	cmd, _, err := cli.New(nil, nil).Find([]string{"runner"})
	if err != nil {
		t.Fatal(err)
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("README has no row for kiln runner --%s", f.Name)
			return
		}
		key := "`" + config.Key(f.Name) + "`"
		if f.Name == "config" {
			key = "—"
		}
		if row[0] != key || row[2] != "`"+config.EnvName(f.Name)+"`" {
			t.Errorf("README row of --%s: key %s, environment %s; want %s, `%s`", f.Name, row[0], row[2], key, config.EnvName(f.Name))
		}
		if d := f.DefValue; d != "" && d != "[]" && d != "false" && row[3] != "`"+d+"`" {
			t.Errorf("README row of --%s: default %s, want `%s`", f.Name, row[3], d)
		}
	})
}
