package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onTerminal runs kiln with stdout and stderr on a pseudo-terminal, as in
// a person's shell, and returns what it drew there.
func onTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	if err := unix.IoctlSetPointerInt(int(pty.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(pty.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 120}); err != nil {
		t.Fatal(err)
	}
	var drawn bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&drawn, pty); close(read) }() // ends with EIO once the tty is closed
	cmd := exec.Command(kilnBin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, tty, tty
	err = cmd.Run()
	tty.Close()
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output never ended")
	}
	if err != nil {
		t.Fatalf("kiln %s on a terminal: %v\n%s", strings.Join(args, " "), err, drawn.String())
	}
	return drawn.String()
}

// Long commands draw a progress bar for a person at a terminal, and
// nothing of it when their output is piped.
func TestProgressBarsOnATerminalOnly(t *testing.T) {
	env := cleanEnv(t)
	db := filepath.Join(t.TempDir(), "seed.db")
	seed := []string{"dev", "seed", "--database", db, "--scopes", "2", "--workspaces-per-scope", "2", "--users", "10",
		"--workers", "10", "--work-requests", "20000", "--artifacts", "100", "--files-per-artifact", "1"}

	t.Run("dev seed and metrics recount", func(t *testing.T) {
		if r := ok(t, env, seed...); r.stderr != "" || strings.Contains(r.stdout, "\r") {
			t.Errorf("piped seed drew something: %s", r)
		}
		if r := ok(t, env, "metrics", "recount", "--database", db); r.stderr != "recounting from the base tables…\n" {
			t.Errorf("piped recount: %q", r.stderr)
		}
		again := append([]string(nil), seed...)
		again[3] = filepath.Join(t.TempDir(), "again.db")
		drawn := onTerminal(t, env, again...)
		for _, want := range []string{"work_requests", "100%", "20000/20000", "running totals", "seeded in"} {
			if !strings.Contains(drawn, want) {
				t.Errorf("seed on a terminal: no %q in %q", want, drawn)
			}
		}
		drawn = onTerminal(t, env, "metrics", "recount", "--database", db)
		if !strings.Contains(drawn, "recounting from the base tables") || !strings.Contains(drawn, "agree") {
			t.Errorf("recount on a terminal: %q", drawn)
		}
	})

	t.Run("artifact upload and download", func(t *testing.T) {
		srv := startServer(t, env)
		as := append(cleanEnv(t), "KILN_SERVER="+srv.url, "KILN_TOKEN="+readAdminToken(t, srv.dataDir))
		ok(t, as, "scope", "create", "demo")
		ok(t, as, "workspace", "create", "main", "--scope", "demo")
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "big.bin"), bytes.Repeat([]byte("kiln"), 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		up := []string{"artifact", "upload", filepath.Join(dir, "big.bin"), "--workspace", "demo/main", "-o", "json"}
		if r := ok(t, as, up...); strings.Contains(r.stderr, "%") || strings.Contains(r.stderr, "\r") {
			t.Errorf("piped upload drew a bar: %s", r)
		}
		if drawn := onTerminal(t, as, up...); !strings.Contains(drawn, "big.bin") || !strings.Contains(drawn, "100%") {
			t.Errorf("upload on a terminal: %q", drawn)
		}
		down := []string{"artifact", "download", "1", "--dir", filepath.Join(t.TempDir(), "out")}
		if r := ok(t, as, down...); strings.Contains(r.stderr, "%") || strings.Contains(r.stderr, "\r") {
			t.Errorf("piped download drew a bar: %s", r)
		}
		if drawn := onTerminal(t, as, down...); !strings.Contains(drawn, "big.bin") || !strings.Contains(drawn, "100%") {
			t.Errorf("download on a terminal: %q", drawn)
		}
	})
}
