package cli_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testkit"
)

// kilnBin is the kiln binary built once for the end-to-end tests, which
// run it exactly as a user would.
var kilnBin string

func TestMain(m *testing.M) {
	os.Exit(testkit.MainWithKiln(m, &kilnBin))
}

// cleanEnv is the test process's environment without KILN_ variables and
// with a private home, so that neither the developer's settings nor their
// client config reach the binary.
func cleanEnv(t *testing.T, extra ...string) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KILN_") || k == "HOME" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// server is a `kiln server` process started by startServer.
type server struct {
	url     string
	dataDir string
	cmd     *exec.Cmd
	stdout  *bytes.Buffer // what followed the "listening on" line
	stderr  *lockedBuffer
	exited  chan error
}

type lockedBuffer struct {
	ch  chan struct{}
	buf bytes.Buffer
}

func newLockedBuffer() *lockedBuffer {
	b := &lockedBuffer{ch: make(chan struct{}, 1)}
	b.ch <- struct{}{}
	return b
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	<-b.ch
	defer func() { b.ch <- struct{}{} }()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	<-b.ch
	defer func() { b.ch <- struct{}{} }()
	return b.buf.String()
}

// startServer starts `kiln server` on a free loopback port with a fresh
// data directory (unless args set --data-dir), waits for /-/ready and
// stops the process at the end of the test.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := &server{dataDir: filepath.Join(t.TempDir(), "kiln-data"), stdout: &bytes.Buffer{}, stderr: newLockedBuffer(), exited: make(chan error, 1)}
	full := append([]string{"server", "--listen", "127.0.0.1:0"}, args...)
	// The data directory may come from the arguments, the environment or
	// a config file, which the test then checks itself.
	joined := strings.Join(args, " ")
	if !strings.Contains(joined, "--data-dir") && !strings.Contains(joined, "--config") &&
		!hasEnv(env, "KILN_DATA_DIR") && !hasEnv(env, "KILN_CONFIG") {
		full = append(full, "--data-dir", s.dataDir)
	}
	s.cmd = exec.Command(kilnBin, full...)
	s.cmd.Env = env
	s.cmd.Stderr = s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kill(t) })

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		s.exited <- s.cmd.Wait()
	}()
	deadline := time.After(60 * time.Second)
	for s.url == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("kiln server exited before listening:\n%s", s.stderr)
			}
			s.stdout.WriteString(line + "\n")
			if u, ok := strings.CutPrefix(line, "kiln server listening on "); ok {
				s.url = u
			}
		case <-deadline:
			t.Fatalf("kiln server did not report its address within 60s:\n%s", s.stderr)
		}
	}
	// Keep the start-up message (its lines come at once), then drain the
	// rest.
message:
	for range 12 {
		select {
		case line, ok := <-lines:
			if !ok {
				break message
			}
			s.stdout.WriteString(line + "\n")
		case <-time.After(200 * time.Millisecond):
			break message
		}
	}
	go func() {
		for range lines {
		}
	}()
	waitReady(t, s.url)
	return s
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s/-/ready did not answer 200 within 30s", url)
}

// terminate sends SIGTERM and returns the exit error (nil for status 0).
func (s *server) terminate(t *testing.T) error {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		s.exited <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("kiln server did not exit within 30s of SIGTERM")
		return nil
	}
}

// kill makes sure the process is gone, whatever the test did.
func (s *server) kill(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case err := <-s.exited:
		s.exited <- err
	case <-time.After(10 * time.Second):
		t.Errorf("kiln server pid %d would not die", s.cmd.Process.Pid)
	}
}

// result is one run of the kiln binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// kiln runs the binary with env and args, as a user would from a shell.
func kiln(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(kilnBin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = nil
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("kiln %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs kiln and fails the test unless it exits 0.
func ok(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r := kiln(t, env, args...)
	if r.code != 0 {
		t.Fatalf("kiln %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// fails runs kiln and checks that it exits with code and says want on
// stderr.
func fails(t *testing.T, env []string, code int, want string, args ...string) result {
	t.Helper()
	r := kiln(t, env, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Errorf("kiln %s: want exit %d and %q on stderr, got %s", strings.Join(args, " "), code, want, r)
	}
	return r
}

func readAdminToken(t *testing.T, dataDir string) string {
	t.Helper()
	path := filepath.Join(dataDir, "admin-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("admin token file: %v", err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %#o, want 0600", path, mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// rows parses a table printed by kiln into maps keyed by header. Columns
// are cut at the positions of the headers, as tabwriter aligns them, since
// cells may contain spaces ("10 GiB", dates).
func rows(t *testing.T, table string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	header := lines[0]
	headers := strings.Fields(header)
	if len(headers) == 0 {
		t.Fatalf("no table in %q", table)
	}
	starts := make([]int, len(headers))
	pos := 0
	for i, h := range headers {
		starts[i] = pos + strings.Index(header[pos:], h)
		pos = starts[i] + len(h)
	}
	var out []map[string]string
	for _, l := range lines[1:] {
		m := map[string]string{}
		for i, h := range headers {
			end := len(l)
			if i+1 < len(starts) && starts[i+1] < end {
				end = starts[i+1]
			}
			if starts[i] < end {
				m[h] = strings.TrimSpace(l[starts[i]:end])
			}
		}
		out = append(out, m)
	}
	return out
}

// byColumn indexes table rows by the value of one column.
func byColumn(rows []map[string]string, col string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, r := range rows {
		m[r[col]] = r
	}
	return m
}

// TestAdminTour runs the README's tour against a real server process: a
// scope, a public and a private workspace, a user and a token for them,
// then checks what each of them sees, and that SIGTERM stops the server
// cleanly.
func TestAdminTour(t *testing.T) {
	env := cleanEnv(t)
	srv := startServer(t, env)
	admin := readAdminToken(t, srv.dataDir)
	if !strings.Contains(srv.stdout.String(), "export KILN_SERVER="+srv.url+" KILN_TOKEN=$(cat "+filepath.Join(srv.dataDir, "admin-token")+")") {
		t.Errorf("the start-up message does not say how to use the token:\n%s", srv.stdout)
	}
	if strings.Contains(srv.stdout.String()+srv.stderr.String(), admin) {
		t.Error("the admin secret was printed or logged")
	}
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+admin)

	r := ok(t, as, "scope", "create", "debian", "--label", "Debian")
	if !strings.Contains(r.stdout, "debian") || !strings.Contains(r.stderr, "scope debian (id 1) created") {
		t.Errorf("scope create: %s", r)
	}
	ok(t, as, "workspace", "create", "sandbox", "--scope", "debian", "--public")
	ok(t, as, "workspace", "create", "secret", "--scope", "debian", "--private", "--expiration-delay", "72h")
	ok(t, as, "user", "create", "alice", "--email", "alice@example.org")
	tok := ok(t, as, "token", "create", "--user", "alice", "--comment", "tour")
	alice := strings.TrimSpace(tok.stdout)
	if !strings.HasPrefix(alice, "kiln_") || strings.Contains(alice, "\n") {
		t.Fatalf("token create should print only the secret on stdout: %s", tok)
	}
	if !strings.Contains(tok.stderr, "shown only now") {
		t.Errorf("token create does not warn that the secret is shown once: %s", tok)
	}

	// The admin sees both workspaces, with their scope by name.
	ws := rows(t, ok(t, as, "workspace", "list").stdout)
	if len(ws) != 2 || ws[0]["NAME"] != "sandbox" || ws[0]["PUBLIC"] != "yes" || ws[1]["NAME"] != "secret" ||
		ws[1]["PUBLIC"] != "no" || ws[1]["SCOPE"] != "debian" || ws[1]["EXPIRATION_DELAY"] != "72h0m0s" {
		t.Errorf("admin's workspace list: %v", ws)
	}
	// Alice is no member of the private workspace: she sees only the public one.
	asAlice := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+alice)
	ws = rows(t, ok(t, asAlice, "workspace", "list").stdout)
	if len(ws) != 1 || ws[0]["NAME"] != "sandbox" {
		t.Errorf("alice's workspace list: %v", ws)
	}
	fails(t, asAlice, 1, "HTTP 403", "scope", "create", "ubuntu")
	// Once a member, she sees it.
	ok(t, as, "workspace", "member", "add", "debian/secret", "--user", "alice", "--role", "viewer")
	if ws = rows(t, ok(t, asAlice, "workspace", "list").stdout); len(ws) != 2 {
		t.Errorf("alice's workspace list as a member: %v", ws)
	}

	// JSON output is the server's JSON.
	var scopes []struct {
		ID    int64  `json:"id"`
		Name  string `json:"name"`
		Label string `json:"label"`
	}
	if err := json.Unmarshal([]byte(ok(t, as, "scope", "list", "-o", "json").stdout), &scopes); err != nil {
		t.Fatalf("scope list -o json: %v", err)
	}
	if len(scopes) != 1 || scopes[0].Name != "debian" || scopes[0].Label != "Debian" {
		t.Errorf("scopes: %+v", scopes)
	}
	if u := byColumn(rows(t, ok(t, as, "user", "list").stdout), "USERNAME"); u["alice"]["EMAIL"] != "alice@example.org" ||
		u["admin"]["IS_ADMIN"] != "yes" {
		t.Errorf("users: %v", u)
	}
	tokens := rows(t, ok(t, as, "token", "list", "--user", "alice").stdout)
	if len(tokens) != 1 || tokens[0]["USER"] != "alice" || tokens[0]["ENABLED"] != "yes" {
		t.Errorf("alice's tokens: %v", tokens)
	}
	ok(t, as, "token", "disable", tokens[0]["ID"])
	fails(t, asAlice, 1, "HTTP 401", "workspace", "list")
	ok(t, as, "token", "enable", tokens[0]["ID"])
	ok(t, asAlice, "workspace", "list")

	// Errors are clear and exit non-zero.
	fails(t, as, 1, `kiln: name: a scope named "debian" already exists (field name, HTTP 409)`, "scope", "create", "debian")
	fails(t, as, 1, `no workspace named "nope"`, "workspace", "show", "nope")
	fails(t, as, 2, `required flag(s) "scope" not set`, "workspace", "create", "lost")
	fails(t, as, 2, "--expiration-delay", "workspace", "create", "x", "--scope", "debian", "--expiration-delay", "soon")
	anon := append(cleanEnv(t), "KILN_SERVER="+srv.url)
	fails(t, anon, 1, "No token given", "user", "list")

	if err := srv.terminate(t); err != nil {
		t.Errorf("kiln server exited with %v after SIGTERM:\n%s", err, srv.stderr)
	}
	if !strings.Contains(srv.stderr.String(), "kiln server stopped") {
		t.Errorf("no clean stop in the server log:\n%s", srv.stderr)
	}
	fails(t, as, 1, "cannot reach the server at "+srv.url, "scope", "list")
}

// TestEveryAdminCommand exercises the remaining admin subcommands once.
func TestEveryAdminCommand(t *testing.T) {
	env := cleanEnv(t)
	srv := startServer(t, env)
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))

	ok(t, as, "scope", "create", "debian")
	ok(t, as, "scope", "update", "debian", "--label", "The Debian project")
	if r := ok(t, as, "scope", "show", "debian"); !strings.Contains(r.stdout, "The Debian project") {
		t.Errorf("scope show: %s", r)
	}
	ok(t, as, "workspace", "create", "main", "--scope", "debian", "--public")
	ok(t, as, "workspace", "update", "main", "--private", "--expiration-delay", "30d")
	if r := ok(t, as, "workspace", "show", "debian/main", "-o", "json"); !strings.Contains(r.stdout, `"public": false`) ||
		!strings.Contains(r.stdout, `"expiration_delay": "720h0m0s"`) {
		t.Errorf("workspace show: %s", r)
	}
	ok(t, as, "user", "create", "bob")
	ok(t, as, "user", "create", "carol", "--admin")
	ok(t, as, "user", "update", "bob", "--active=false", "--email", "bob@example.org")
	if r := ok(t, as, "user", "show", "bob"); !strings.Contains(r.stdout, "bob@example.org") || !regexpLine(r.stdout, "ACTIVE:", "no") {
		t.Errorf("user show: %s", r)
	}
	ok(t, as, "identity", "create", "--user", "bob", "--issuer", "https://sso.example.org", "--subject", "b0b")
	ids := rows(t, ok(t, as, "identity", "list").stdout)
	if len(ids) != 1 || ids[0]["USER"] != "bob" {
		t.Errorf("identities: %v", ids)
	}
	ok(t, as, "identity", "update", ids[0]["ID"], "--user", "carol", "--subject", "c4r0l")
	if r := ok(t, as, "identity", "show", ids[0]["ID"]); !regexpLine(r.stdout, "USER:", "carol") || !regexpLine(r.stdout, "SUBJECT:", "c4r0l") {
		t.Errorf("identity show after update: %s", r)
	}
	fails(t, as, 2, "nothing to update", "identity", "update", ids[0]["ID"])
	ok(t, as, "identity", "delete", ids[0]["ID"])

	ok(t, as, "group", "create", "devs", "--scope", "debian", "--member", "bob", "--ephemeral")
	ok(t, as, "group", "add-member", "devs", "carol")
	if g := rows(t, ok(t, as, "group", "list").stdout); len(g) != 1 || g[0]["MEMBERS"] != "bob,carol" || g[0]["EPHEMERAL"] != "yes" {
		t.Errorf("groups: %v", g)
	}
	ok(t, as, "group", "remove-member", "debian/devs", "bob")
	fails(t, as, 1, "not a member", "group", "remove-member", "devs", "bob")
	ok(t, as, "group", "update", "devs", "--name", "team", "--ephemeral=false", "--members", "bob,carol")
	if g := rows(t, ok(t, as, "group", "list").stdout); len(g) != 1 || g[0]["NAME"] != "team" || g[0]["MEMBERS"] != "bob,carol" || g[0]["EPHEMERAL"] != "no" {
		t.Errorf("groups after update: %v", g)
	}
	ok(t, as, "group", "update", "debian/team", "--name", "devs", "--members", "")
	if g := rows(t, ok(t, as, "group", "list").stdout); len(g) != 1 || g[0]["MEMBERS"] != "-" {
		t.Errorf("groups after emptying: %v", g)
	}
	ok(t, as, "group", "add-member", "devs", "carol")
	ok(t, as, "workspace", "member", "add", "main", "--group", "devs", "--role", "contributor")
	ok(t, as, "workspace", "member", "add", "main", "--user", "bob", "--role", "owner")
	if m := rows(t, ok(t, as, "workspace", "member", "list", "main").stdout); len(m) != 2 {
		t.Errorf("members: %v", m)
	}
	ok(t, as, "workspace", "member", "remove", "main", "--group", "devs")
	ok(t, as, "workspace", "member", "remove", "main", "--user", "bob")

	ok(t, as, "token", "create", "--user", "carol", "--scope", "debian", "--expires", "720h")
	tokens := rows(t, ok(t, as, "token", "list", "--user", "carol").stdout)
	if len(tokens) != 1 || tokens[0]["SCOPE"] != "debian" || tokens[0]["EXPIRES_AT"] == "-" {
		t.Errorf("carol's tokens: %v", tokens)
	}
	ok(t, as, "token", "update", tokens[0]["ID"], "--comment", "ci", "--no-expiry")
	if tk := rows(t, ok(t, as, "token", "list", "--user", "carol").stdout); tk[0]["COMMENT"] != "ci" || tk[0]["EXPIRES_AT"] != "-" {
		t.Errorf("carol's token after update: %v", tk)
	}
	fails(t, as, 2, "exclude each other", "token", "update", tokens[0]["ID"], "--expires", "1d", "--no-expiry")
	ok(t, as, "token", "delete", tokens[0]["ID"])

	ok(t, as, "file-store", "create", "big", "--backend", "Local", "--max-size", "10GiB", "--base-directory", t.TempDir())
	if fs := rows(t, ok(t, as, "file-store", "list").stdout); len(fs) != 2 || fs[1]["NAME"] != "big" || fs[1]["MAX_SIZE"] != "10 GiB" {
		t.Errorf("file stores: %v", fs)
	}
	ok(t, as, "file-store", "update", "big", "--unlimited")
	ok(t, as, "file-store", "delete", "big")

	ok(t, as, "asset", "create", "--workspace", "debian/main", "--category", "test:key", "--data", `{"fingerprint": "abc"}`)
	assets := rows(t, ok(t, as, "asset", "list", "--workspace", "main").stdout)
	if len(assets) != 1 || assets[0]["WORKSPACE"] != "debian/main" {
		t.Errorf("assets: %v", assets)
	}
	ok(t, as, "asset", "update", assets[0]["ID"], "--data", `{"fingerprint": "def"}`)
	if r := ok(t, as, "asset", "show", assets[0]["ID"]); !strings.Contains(r.stdout, `"fingerprint":"def"`) {
		t.Errorf("asset show after update: %s", r)
	}
	fails(t, as, 2, "--data: want a JSON object", "asset", "create", "--workspace", "main", "--category", "x", "--data", "{broken")
	ok(t, as, "asset", "delete", assets[0]["ID"])

	ok(t, as, "collection", "create", "suites", "--workspace", "main", "--category", "debian:suites")
	ok(t, as, "collection", "item", "add", "suites", "--name", "bookworm", "--category", "debian:suite", "--data", `{"version": 12}`)
	ok(t, as, "collection", "item", "add", "suites", "--name", "trixie", "--category", "debian:suite")
	if items := rows(t, ok(t, as, "collection", "item", "list", "suites").stdout); len(items) != 2 {
		t.Errorf("items: %v", items)
	}
	ok(t, as, "collection", "item", "remove", "suites", "bookworm")
	if c := rows(t, ok(t, as, "collection", "list").stdout); len(c) != 1 || c[0]["ITEM_COUNT"] != "1" {
		t.Errorf("collections: %v", c)
	}
	ok(t, as, "collection", "update", "suites", "--name", "releases", "--data", `{"vendor": "debian"}`)
	if r := ok(t, as, "collection", "show", "releases"); !strings.Contains(r.stdout, `"vendor":"debian"`) {
		t.Errorf("collection show after update: %s", r)
	}
	ok(t, as, "collection", "update", "releases", "--name", "suites")
	ok(t, as, "collection", "item", "remove", "suites", "trixie")
	ok(t, as, "collection", "delete", "suites")

	ok(t, as, "workspace", "delete", "debian/main")
	ok(t, as, "group", "delete", "devs")
	ok(t, as, "user", "delete", "bob")
	if r := ok(t, as, "scope", "delete", "debian"); !strings.Contains(r.stdout, "deleted scope debian") {
		t.Errorf("scope delete: %s", r)
	}
	if s := rows(t, ok(t, as, "scope", "list").stdout); len(s) != 0 {
		t.Errorf("scopes left: %v", s)
	}
}

// regexpLine reports whether some line of text has key followed by value.
func regexpLine(text, key, value string) bool {
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == key && f[1] == value {
			return true
		}
	}
	return false
}

// TestBootstrapTokenFromEnvironment checks that KILN_BOOTSTRAP_TOKEN
// becomes the admin token and that no token file is written then.
func TestBootstrapTokenFromEnvironment(t *testing.T) {
	const secret = "kiln_e2e_bootstrap_secret_0123456789abcdef"
	srv := startServer(t, cleanEnv(t, "KILN_BOOTSTRAP_TOKEN="+secret))
	if _, err := os.Stat(filepath.Join(srv.dataDir, "admin-token")); !os.IsNotExist(err) {
		t.Errorf("admin-token written although KILN_BOOTSTRAP_TOKEN was set: %v", err)
	}
	as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+secret)
	if u := byColumn(rows(t, ok(t, as, "user", "list").stdout), "USERNAME"); u["admin"]["IS_ADMIN"] != "yes" {
		t.Errorf("users: %v", u)
	}
	if err := srv.terminate(t); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if strings.Contains(srv.stdout.String()+srv.stderr.String(), secret) {
		t.Error("the bootstrap secret was printed or logged")
	}
}

// TestServerConfigLayers starts the server from a config file and the
// environment, and checks that flags win.
func TestServerConfigLayers(t *testing.T) {
	dir := t.TempDir()
	fileDir := filepath.Join(dir, "from-file")
	envDir := filepath.Join(dir, "from-env")
	conf := filepath.Join(dir, "kiln.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("data_dir = %q\nlog_format = \"json\"\n", fileDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	// the file alone
	srv := startServer(t, cleanEnv(t), "--config", conf)
	if _, err := os.Stat(filepath.Join(fileDir, "admin-token")); err != nil {
		t.Errorf("data_dir from the config file not used: %v", err)
	}
	if !strings.Contains(srv.stderr.String(), `"msg":"kiln server listening"`) {
		t.Errorf("log_format from the config file not used:\n%s", srv.stderr)
	}
	if err := srv.terminate(t); err != nil {
		t.Fatal(err)
	}
	// the environment beats the file
	srv = startServer(t, cleanEnv(t, "KILN_DATA_DIR="+envDir, "KILN_CONFIG="+conf, "KILN_LOG_FORMAT=text"))
	if _, err := os.Stat(filepath.Join(envDir, "admin-token")); err != nil {
		t.Errorf("KILN_DATA_DIR not used: %v", err)
	}
	if !strings.Contains(srv.stderr.String(), `msg="kiln server listening"`) {
		t.Errorf("KILN_LOG_FORMAT not used:\n%s", srv.stderr)
	}
	if err := srv.terminate(t); err != nil {
		t.Fatal(err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("listen = \"127.0.0.1:0\"\ndatadir = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fails(t, cleanEnv(t), 2, `unknown key "datadir" (did you mean "data_dir"?)`, "server", "--config", bad)
	fails(t, cleanEnv(t), 1, "--local-runners: must be 0 or more", "server", "--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "runners"), "--local-runners=-1")
	fails(t, cleanEnv(t, "KILN_LOCAL_RUNNERS=two"), 2, "environment variable KILN_LOCAL_RUNNERS", "server")
}

// TestClientSettings checks the admin commands' layers: --token beats
// KILN_TOKEN, which beats the client config file.
func TestClientSettings(t *testing.T) {
	srv := startServer(t, cleanEnv(t))
	admin := readAdminToken(t, srv.dataDir)

	env := cleanEnv(t)
	var xdg string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "XDG_CONFIG_HOME="); ok {
			xdg = v
		}
	}
	if err := os.MkdirAll(filepath.Join(xdg, "kiln"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	defaultFile := filepath.Join(xdg, "kiln", "client.toml")
	write(defaultFile, fmt.Sprintf("server = %q\ntoken = %q\n", srv.url, admin))
	ok(t, env, "scope", "list") // from the default client config alone

	other := filepath.Join(t.TempDir(), "other.toml")
	write(other, fmt.Sprintf("server = %q\ntoken = \"kiln_wrong\"\noutput = \"json\"\n", srv.url))
	fails(t, env, 1, "HTTP 401", "scope", "list", "--client-config", other)
	if r := ok(t, append(env, "KILN_TOKEN="+admin), "scope", "list", "--client-config", other); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("output from the client config: %s", r)
	}
	fails(t, append(env, "KILN_TOKEN="+admin), 1, "HTTP 401", "scope", "list", "--token", "kiln_wrong")

	bad := filepath.Join(t.TempDir(), "bad.toml")
	write(bad, "server = \"http://x\"\nscope = \"debian\"\n")
	fails(t, env, 2, `unknown key "scope"`, "workspace", "list", "--client-config", bad)
	fails(t, env, 2, "no such file", "scope", "list", "--client-config", filepath.Join(t.TempDir(), "missing.toml"))
	fails(t, env, 2, "invalid server URL", "scope", "list", "--server", "ftp://127.0.0.1:8420")
}

func TestVersionAndHelp(t *testing.T) {
	env := cleanEnv(t)
	if r := ok(t, env, "version"); !strings.HasPrefix(r.stdout, "kiln ") || !strings.Contains(r.stdout, runtime.Version()) {
		t.Errorf("version: %s", r)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(ok(t, env, "version", "--json").stdout), &v); err != nil || v["go_version"] != runtime.Version() {
		t.Errorf("version --json: %v %v", v, err)
	}
	r := ok(t, env, "--help")
	for _, sub := range []string{"server", "scope", "workspace", "user", "identity", "group", "token", "file-store", "asset", "collection", "version"} {
		if !strings.Contains(r.stdout, "  "+sub+" ") {
			t.Errorf("kiln --help does not list %s", sub)
		}
	}
	fails(t, env, 2, `unknown command "frobnicate"`, "frobnicate")
	fails(t, env, 2, "unknown flag: --nope", "scope", "list", "--nope")
}
