package runner_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/testkit"
	"github.com/kiln-build/kiln/internal/testpeers"
)

// TestVersionInfoOfAReleaseBuild builds kiln the way a release is built,
// with the build stamps set by -ldflags -X (see the README), runs a runner
// with --metrics-server and reads kiln_build_info from its
// /metrics: every label carries the real value, the stamps and the
// toolchain's, and `kiln version` says the same.
func TestVersionInfoOfAReleaseBuild(t *testing.T) {
	builtAt := time.Now().UTC().Format(time.RFC3339)
	stamps := map[string]string{"Version": "1.2.3-e2e", "Revision": "0123abcd", "Branch": "release-1.2", "BuiltAt": builtAt}
	var ldflags []string
	for k, v := range stamps {
		ldflags = append(ldflags, "-X github.com/kiln-build/kiln/internal/telemetry."+k+"="+v)
	}
	bin, err := testkit.BuildKiln(t.TempDir(), ldflags...)
	if err != nil {
		t.Fatal(err)
	}

	// A server that is not there: the runner keeps trying to connect and
	// serves its metrics meanwhile.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "runner", "--server", down, "--name", "stamped", "--work-dir", t.TempDir(),
		"--metrics-server", "127.0.0.1:0", "--max-backoff", "1s")
	cmd.Env = env("KILN_TOKEN=kiln_unused")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		defer close(exited)
		b := make([]byte, 0, 4096)
		buf := make([]byte, 1024)
		re := regexp.MustCompile(`metrics server listening.*address=(\S+)`)
		for {
			n, err := stderr.Read(buf)
			b = append(b, buf[:n]...)
			if m := re.FindSubmatch(b); m != nil {
				select {
				case addr <- string(m[1]):
				default:
				}
			}
			if err != nil {
				break
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-exited:
		t.Fatal("the runner exited")
	case <-time.After(30 * time.Second):
		t.Fatal("the runner never said where its metrics listener is")
	}

	text := string(testpeers.ScrapeText(t, base+"/metrics"))
	want := map[string]string{"version": stamps["Version"], "revision": stamps["Revision"], "branch": stamps["Branch"],
		"built_at": builtAt, "go_version": runtime.Version(), "os": runtime.GOOS, "architecture": runtime.GOARCH}
	var line string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "kiln_build_info{") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no kiln_build_info in:\n%s", text)
	}
	for k, v := range want {
		if !strings.Contains(line, k+`="`+v+`"`) {
			t.Errorf("version info lacks %s=%q: %s", k, v, line)
		}
	}
	if !strings.HasSuffix(line, "} 1") {
		t.Errorf("version info value: %s", line)
	}
	// a runner of one task at a time runs one goroutine at a time
	// (cli's runner command): more threads only spun looking for work
	checkGOMAXPROCS(t, text, 1)
	testpeers.CheckMetrics(t, []byte(text))

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{stamps["Version"], stamps["Revision"], stamps["Branch"], builtAt} {
		if !strings.Contains(string(out), v) {
			t.Errorf("kiln version does not say %s:\n%s", v, out)
		}
	}

	// SIGTERM stops it cleanly even while it cannot reach its server.
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Error("the runner did not stop on SIGINT")
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("the metrics listener still answers after the runner stopped")
	}
}

// checkGOMAXPROCS: a runner started without GOMAXPROCS in its
// environment runs with as many threads as tasks at once, at most the
// machine's CPUs, as its go_sched_gomaxprocs_threads says.
func checkGOMAXPROCS(t *testing.T, metrics string, concurrent int) {
	t.Helper()
	if os.Getenv("GOMAXPROCS") != "" {
		return // the runner inherits the test's setting
	}
	want := fmt.Sprintf("go_sched_gomaxprocs_threads %d", min(runtime.NumCPU(), concurrent))
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "go_sched_gomaxprocs_threads ") {
			if l != want {
				t.Errorf("%s, want %s", l, want)
			}
			return
		}
	}
	t.Errorf("no go_sched_gomaxprocs_threads in the runner's metrics")
}
