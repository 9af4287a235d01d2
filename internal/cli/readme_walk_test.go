package cli_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testkit"
)

// readmeWalk are the README's sections a new user follows, in order, on
// one farm: each one's shell blocks run after the previous section's.
var readmeWalk = []string{
	"## Your first build",
	"## A short tour of the admin commands",
	"## Workflows and the metrics templates declare",
	"## Worker pools",
}

// mdBlock is one fenced block of the README with the prose before it.
type mdBlock struct {
	lang  string // "sh", "yaml", "" …
	text  string
	prose string // the paragraph lines between the previous block and this one
}

// readmeBlocks returns the fenced blocks of a section: from its heading to
// the next heading of any level outside a block (so "### Runners" ends
// "## Your first build").
func readmeBlocks(t *testing.T, heading string) []mdBlock {
	t.Helper()
	lines := strings.Split(readme(t), "\n")
	start := -1
	for i, l := range lines {
		if l == heading {
			start = i + 1
		}
	}
	if start < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	var blocks []mdBlock
	var prose, body []string
	inBlock, lang := false, ""
	for _, l := range lines[start:] {
		switch {
		case !inBlock && strings.HasPrefix(l, "#"):
			return blocks
		case !inBlock && strings.HasPrefix(l, "```"):
			inBlock, lang, body = true, strings.TrimPrefix(l, "```"), nil
		case inBlock && l == "```":
			blocks = append(blocks, mdBlock{lang: lang, text: strings.Join(body, "\n") + "\n", prose: strings.Join(prose, "\n")})
			inBlock, prose = false, nil
		case inBlock:
			body = append(body, l)
		default:
			prose = append(prose, l)
		}
	}
	return blocks
}

var (
	// saveAs is how the README asks the reader to save a block to a file.
	saveAs = regexp.MustCompile("Save this \\w+ as `([^`/]+)`")
	// printsSample introduces a block of what a command prints.
	printsSample = regexp.MustCompile("`(kiln [^`]+)` prints:\\s*$")
	// timestamp is how tables show times; samples and output differ there.
	timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ`)
)

// TestReadmeInOrder follows the README as a new user would, in a fresh
// directory laid out like a clone: "Your first build" starts a server with
// a runner of its own (its go build replaced by the binary the tests
// built), then the shell blocks of the first build, the tour and the
// workflow example run with bash, in order, as written but for the
// server's address. Files the README asks the reader to save are saved;
// each "`kiln …` prints:" sample must be what the command prints then
// (times aside); the first build takes less than a minute; and nothing the
// README made is left for git to see.
func TestReadmeInOrder(t *testing.T) {
	dir := t.TempDir()
	gitignore, err := os.ReadFile(filepath.Join("..", "..", ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".gitignore"), gitignore, 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q")
	// the example the worker pools section uses, as a clone has it
	example := filepath.Join("examples", "pool-exec", "kiln-pool-processes")
	script, err := os.ReadFile(filepath.Join("..", "..", example))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(example)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, example), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", example)

	sections := make([][]mdBlock, len(readmeWalk))
	for i, h := range readmeWalk {
		sections[i] = readmeBlocks(t, h)
	}
	first := sections[0]
	if len(first) < 2 || first[0].lang != "sh" || !strings.Contains(first[0].text, "\nkiln server --local-runners 1\n") {
		t.Fatalf("Your first build should start with the block that runs `kiln server --local-runners 1`: %+v", first)
	}
	url := startReadmeServer(t, dir)
	began := time.Now()

	env := append(cleanEnv(t), "PATH="+filepath.Dir(kilnBin)+":"+os.Getenv("PATH"))
	state := filepath.Join(t.TempDir(), "exported")
	var all strings.Builder
	ran, saved, samples := 0, 0, 0
	for i, blocks := range sections {
		for j, b := range blocks {
			if i == 0 && j == 0 {
				continue // the server, started above
			}
			switch {
			case b.lang == "sh":
				out := runShell(t, dir, env, state, strings.ReplaceAll(b.text, "http://127.0.0.1:8420", url))
				all.WriteString(out)
				ran++
			case saveAs.MatchString(b.prose):
				name := saveAs.FindStringSubmatch(b.prose)[1]
				if err := os.WriteFile(filepath.Join(dir, name), []byte(b.text), 0o644); err != nil {
					t.Fatal(err)
				}
				saved++
			case printsSample.MatchString(b.prose) && b.lang == "":
				cmd := printsSample.FindStringSubmatch(b.prose)[1]
				got := runShell(t, dir, env, state, cmd+" 2>/dev/null")
				if timestamp.ReplaceAllString(got, "TIME") != timestamp.ReplaceAllString(b.text, "TIME") {
					t.Errorf("the README says `%s` prints:\n%s\nit prints:\n%s", cmd, b.text, got)
				}
				samples++
			}
		}
		if i == 0 {
			if took := time.Since(began); took > time.Minute {
				t.Errorf("your first build took %s, the README promises under a minute", took)
			}
			for _, want := range []string{"hello from", "kiln: the script succeeded", "kiln:file", "kiln:work-request-debug-logs", "hello, kiln"} {
				if !strings.Contains(all.String(), want) {
					t.Errorf("your first build's output lacks %q:\n%s", want, all.String())
				}
			}
		}
	}
	if ran < 3 || saved < 1 || samples < 1 {
		t.Errorf("%d shell blocks ran, %d files saved, %d samples checked: the README's walk lost its way", ran, saved, samples)
	}
	for _, want := range []string{`build-i386\s+Worker\s+command\s+completed\s+success\s+stand-in-i386\s`,
		`build-arm64\s+Worker\s+command\s+completed\s+success\s+stand-in-arm64\s`,
		`no connected worker can run step build-i386 \(work request \d+\), for i386 with backend auto`,
		`not connected now, but could run it: stand-in-i386, stand-in-arm64`, `workflow 7 aborted`,
		`worker pool procs starts runners for it`, `procs-\d+\s+(idle|busy)\s+\d+(\.\d+)?m?s\s+procs-1\s`,
		`INSTANCES:\s+1 \(1 idle\)`, `worker pool procs is being deleted: draining 1 \(1 idle\)`,
		`deleted worker pool procs`} {
		if !regexp.MustCompile(want).MatchString(all.String()) {
			t.Errorf("the README's output lacks %s:\n%s", want, all.String())
		}
	}
	if status := git(t, dir, "status", "--porcelain", "--untracked-files=all"); status != "A  "+example+"\n?? .gitignore\n" {
		t.Errorf("the README's steps leave files that .gitignore does not cover (every later build would read -dirty):\n%s", status)
	}
}

// startReadmeServer runs `kiln server --local-runners 1` in dir as the
// README's first terminal does, on a free port (KILN_LISTEN), and returns
// its URL once it is ready.
func startReadmeServer(t *testing.T, dir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(kilnBin, "server", "--local-runners", "1")
	srv.Dir = dir
	// the first terminal put the kiln it built on its PATH (the worker
	// pools section's provider runs it)
	srv.Env = cleanEnv(t, "KILN_LISTEN="+addr, "PATH="+filepath.Dir(kilnBin)+":"+os.Getenv("PATH"))
	out := &testkit.Buffer{}
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = srv.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- kiln server ---\n%s", out)
			logs, _ := filepath.Glob(filepath.Join(dir, "kiln-data", "runners", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s ---\n%s", filepath.Base(l), b)
			}
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server is not ready after 30s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runShell runs script with bash in dir, as the README's second terminal:
// the variables an earlier script exported (saved in state) are set, and
// this script's are saved for the next. It fails the test unless bash
// exits 0 within two minutes (then bash and everything it started are
// killed), and returns what it printed.
func runShell(t *testing.T, dir string, env []string, state, script string) string {
	t.Helper()
	full := "if [ -f " + state + " ]; then . " + state + "; fi\n" + script + "\nexport -p > " + state + "\n"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-u", "-o", "pipefail", "-c", full)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s\n--- output ---\n%s", err, script, out)
	}
	return string(out)
}

// git runs git in dir and returns its output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
