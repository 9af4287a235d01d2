package runner_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// shellBlocks returns the ```sh blocks of a README section.
func shellBlocks(section string) []string {
	var out []string
	for _, part := range strings.Split(section, "```sh\n")[1:] {
		out = append(out, part[:strings.Index(part, "```")])
	}
	return out
}

// TestReadmeFirstBuild runs "Your first build" as written, in a fresh
// directory: the first block starts the server (its go build is replaced
// by the binary the tests built), the second is run by bash with the
// server's real address. It must succeed, show the log and the artifact,
// and take less than a minute.
func TestReadmeFirstBuild(t *testing.T) {
	blocks := shellBlocks(readmeSection(t, "## Your first build"))
	if len(blocks) < 2 {
		t.Fatalf("want the server block and the client block, got %d blocks", len(blocks))
	}
	serverLine := ""
	for _, l := range strings.Split(blocks[0], "\n") {
		if strings.HasPrefix(l, "kiln server") {
			serverLine = l
		}
	}
	if serverLine != "kiln server --local-runners 1" {
		t.Fatalf("the first block should start `kiln server --local-runners 1`, has %q", serverLine)
	}
	dir := t.TempDir()
	binDir := filepath.Dir(kilnBin)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr

	began := time.Now()
	srv := exec.Command(kilnBin, strings.Fields(serverLine)[1:]...)
	srv.Dir = dir
	srv.Env = env("KILN_LISTEN=" + addr)
	out := &syncBuffer{}
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: "server", cmd: srv, out: out, done: make(chan struct{})}
	go func() { srv.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(15 * time.Second)
		if t.Failed() {
			t.Logf("--- server ---\n%s", tail(out.String(), 4000))
			b, _ := os.ReadFile(filepath.Join(dir, "kiln-data", "runners", "local-"+hostname()+"-"+addr[strings.LastIndex(addr, ":")+1:]+"-1.log"))
			t.Logf("--- local runner ---\n%s", tail(string(b), 4000))
		}
	})
	waitFor(t, 30*time.Second, "the server to be ready", func() bool {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	script := strings.ReplaceAll(blocks[1], "http://127.0.0.1:8420", url)
	cmd := exec.Command("bash", "-e", "-u", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = env("PATH=" + binDir + ":" + os.Getenv("PATH"))
	b, err := cmd.CombinedOutput()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s", err, b)
	}
	got := string(b)
	for _, want := range []string{"hello from", "kiln: the script succeeded", "kiln:file", "kiln:work-request-debug-logs", "hello, kiln"} {
		if !strings.Contains(got, want) {
			t.Errorf("the output lacks %q:\n%s", want, got)
		}
	}
	if took > time.Minute {
		t.Errorf("your first build took %s, the README promises under a minute", took)
	}
	t.Logf("first build in %s", took.Round(time.Millisecond))
}

func hostname() string {
	h, _ := os.Hostname()
	return h
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
