package dashboard_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/tasks"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestBrowserDrillDownAnonymously: an anonymous visitor goes from the
// overview to a public work request by following links, reads its log and
// downloads its log file.
func TestBrowserDrillDownAnonymously(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	tb := newTab(t)
	tb.open(f.srv.URL+"/", 200)
	tb.follow(`a[href="/scopes/` + itoa(f.ids["scope:debian"]) + `/"]`)
	if got := tb.text("h1"); got != "debian" {
		t.Fatalf("scope page titled %q", got)
	}
	if body := tb.text("main"); strings.Contains(body, "hushed") || !strings.Contains(body, "main") {
		t.Fatalf("an anonymous visitor's scope page:\n%s", body)
	}
	tb.follow(`a[href="/workspaces/` + itoa(f.ids["pub"]) + `/"]`)
	tb.follow(`a[href="/work-requests/` + itoa(f.ids["wr:pub"]) + `/"]`)
	tb.waitFor("the log", `document.getElementById("log").textContent === "log of the public request\n"`)
	if got := tb.text("#log-state"); !strings.Contains(got, "whole log") {
		t.Fatalf("log state %q", got)
	}

	dir := t.TempDir()
	_, err := chromedp.CallBrowser(tb.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true),
		BrowserContextID: chromedp.FromContext(tb.ctx).BrowserContextID})
	if err != nil {
		t.Fatal(err)
	}
	progress := chromedp.BrowserEvents(tb.ctx, browser.DownloadProgress)
	link := `a[href="/artifacts/` + itoa(f.ids["log:pub"]) + `/files/` + tasks.LogFileName + `"]`
	tb.do("click the download link", chromedp.Click(chromedp.CSS(link), chromedp.NodeVisible))
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	var file string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("waiting for the download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the download was cancelled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the download did not complete")
		}
	}
	got, err := os.ReadFile(file)
	if err != nil || string(got) != "log of the public request\n" {
		t.Fatalf("downloaded %q, %v", got, err)
	}
}

// signIn signs in through the form with the token of who, coming back to
// next.
func (tb *tab) signIn(f *farm, who, next string) {
	tb.t.Helper()
	tb.open(f.srv.URL+"/sign-in/?next="+next, 200)
	tb.do("type the token", chromedp.SendKeys(chromedp.ID("token"), f.tok[who]))
	tb.follow(`form.sign-in button[type=submit]`)
	if got := tb.path(); got != next {
		tb.t.Fatalf("signed in at %s, want %s", got, next)
	}
	if got := tb.text(".who strong"); got != map[string]string{"alice": "alice", "bob": "bob", "admin": "admin"}[who] {
		tb.t.Fatalf("signed in as %q", got)
	}
}

// TestBrowserPrivateWorkspaceForMembersOnly: a private workspace is absent
// for anonymous visitors and for a signed-in user who is no member — in
// the list and at its own address — and present once a member signs in.
func TestBrowserPrivateWorkspaceForMembersOnly(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	tb := newTab(t)
	scope := "/scopes/" + itoa(f.ids["scope:debian"]) + "/"
	priv := f.srv.URL + "/workspaces/" + itoa(f.ids["priv"]) + "/"
	absent := func(who string) {
		t.Helper()
		tb.open(f.srv.URL+scope, 200)
		if body := tb.text("main"); strings.Contains(body, "hushed") {
			t.Fatalf("%s sees the private workspace:\n%s", who, body)
		}
		tb.open(priv, 404)
		if body := tb.text("main"); strings.Contains(body, "hushed") || !strings.Contains(body, "no workspace here") {
			t.Fatalf("%s at the private workspace's address:\n%s", who, body)
		}
	}
	absent("an anonymous visitor")
	tb.signIn(f, "bob", scope)
	absent("bob")
	tb.open(f.srv.URL+"/", 200)
	tb.follow(`.who button[type=submit]`) // sign out
	if strings.TrimSpace(tb.text(".who")) != "Sign in" {
		t.Fatalf("still signed in: %q", tb.text(".who"))
	}

	tb.signIn(f, "alice", scope)
	tb.follow(`a[href="/workspaces/` + itoa(f.ids["priv"]) + `/"]`)
	if got := tb.text("h1"); !strings.Contains(got, "hushed-ws") || !strings.Contains(got, "private") {
		t.Fatalf("alice's private workspace page titled %q", got)
	}
	tb.follow(`a[href="/work-requests/` + itoa(f.ids["wr:priv"]) + `/"]`)
	tb.waitFor("the private log", `document.getElementById("log").textContent === "log of the hushed request\n"`)
}

// xss is what a hostile name or log line holds.
const xss = "<script>alert(1)</script>"

// TestBrowserShowsNamesAsText: a workspace, task data and a log line that
// hold markup are shown as text; no script of theirs runs (a dialog would
// fail the test) and the page has no script element but its own.
func TestBrowserShowsNamesAsText(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	ctx := context.Background()
	// the API refuses such a name: put it in the database itself, as a
	// bulk load or an older kiln could have
	if _, err := f.st.DB().ExecContext(ctx, "UPDATE workspaces SET name = $1 WHERE id = $2", xss, f.ids["pub"]); err != nil {
		t.Fatal(err)
	}
	data := json.RawMessage(`{"host_architecture": "s390x", "note": "` + xss + `"}`)
	wr := &model.WorkRequest{TaskType: model.TaskWorker, TaskName: "noop", WorkspaceID: f.ids["pub"], Data: data}
	f.must(f.st.SubmitWorkRequest(ctx, wr))
	logArt := f.upload("pub", tasks.DebugLogsCategory, wr.ID, tasks.LogFileName, "building\n"+xss+"\ndone\n")

	tb := newTab(t)
	tb.open(f.srv.URL+"/scopes/"+itoa(f.ids["scope:debian"])+"/", 200)
	if got := tb.text(`a[href="/workspaces/` + itoa(f.ids["pub"]) + `/"]`); got != xss {
		t.Fatalf("the workspace's link reads %q", got)
	}
	tb.ownScriptsOnly()
	tb.open(f.srv.URL+"/workspaces/"+itoa(f.ids["pub"])+"/", 200)
	if got := tb.text("h1"); !strings.Contains(got, xss) {
		t.Fatalf("the workspace's title reads %q", got)
	}
	tb.ownScriptsOnly()
	tb.open(f.srv.URL+"/work-requests/"+itoa(wr.ID)+"/", 200)
	tb.waitFor("the log", `document.getElementById("log").textContent.includes("done")`)
	if got := tb.text("#log"); got != "building\n"+xss+"\ndone\n" {
		t.Fatalf("the log reads %q", got)
	}
	if got := tb.text("pre.data"); !strings.Contains(got, `"note": "`+xss+`"`) {
		t.Fatalf("the task data reads %q", got)
	}
	if got := tb.text(".crumbs"); !strings.Contains(got, xss) {
		t.Fatalf("the breadcrumbs read %q", got)
	}
	tb.ownScriptsOnly()
	// the raw log is shown as text, never as a page; the file is a
	// download (see TestBrowserDrillDownAnonymously)
	tb.open(f.srv.URL+"/work-requests/"+itoa(wr.ID)+"/logs/", 200)
	if n := eval[int](tb, `document.querySelectorAll("script").length`); n != 0 || !strings.Contains(tb.text("body"), xss) {
		t.Fatalf("the raw log rendered %d script elements: %q", n, tb.text("body"))
	}
	if a := f.get("/artifacts/"+itoa(logArt)+"/files/"+tasks.LogFileName, ""); a.status != 200 ||
		!strings.HasPrefix(a.header.Get("Content-Disposition"), "attachment") || a.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("the log file is served with %v", a.header)
	}
}

// ownScriptsOnly fails when the page has a script element other than the
// dashboard's own.
func (tb *tab) ownScriptsOnly() {
	tb.t.Helper()
	srcs := eval[[]string](tb, `Array.from(document.querySelectorAll("script")).map(s => s.getAttribute("src") || "inline: " + s.textContent)`)
	if len(srcs) != 1 || !strings.HasPrefix(srcs[0], "/static/log.") {
		tb.t.Fatalf("scripts on the page: %q", srcs)
	}
}

// TestBrowserKeyboardOnly: with the keyboard alone a visitor skips to the
// content, drills down to a work request, reaches its log and its files,
// and signs in.
func TestBrowserKeyboardOnly(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	tb := newTab(t)
	tb.open(f.srv.URL+"/", 200)
	tb.press("\t")
	if got := eval[string](tb, "document.activeElement.textContent"); got != "Skip to content" {
		t.Fatalf("the first tab stop is %q, want the skip link", got)
	}
	tb.press("\r")
	if got := eval[string](tb, "document.activeElement.id"); got != "main" {
		t.Fatalf("the skip link moved the focus to %q", got)
	}
	tb.tabTo(`a[href="/scopes/` + itoa(f.ids["scope:debian"]) + `/"]`)
	tb.enter()
	tb.tabTo(`a[href="/workspaces/` + itoa(f.ids["pub"]) + `/"]`)
	tb.enter()
	tb.tabTo(`a[href="/work-requests/` + itoa(f.ids["wr:pub"]) + `/"]`)
	tb.enter()
	if got := tb.path(); got != "/work-requests/"+itoa(f.ids["wr:pub"])+"/" {
		t.Fatalf("the keyboard led to %s", got)
	}
	tb.tabTo(`a[href="/artifacts/` + itoa(f.ids["log:pub"]) + `/files/` + tasks.LogFileName + `"]`)
	tb.tabTo(`#log`)
	if !eval[bool](tb, `document.activeElement.matches(":focus-visible")`) {
		t.Fatal("the focused log shows no focus")
	}

	// sign in by keyboard: the link, the token field (focused on
	// arrival), Enter
	tb.tabTo(`.who a`)
	tb.enter()
	// autofocus applies at the page's first rendering, just after it loads
	tb.waitFor("the token field focused", `document.activeElement.id === "token"`)
	tb.do("type the token", chromedp.KeyEvent(f.tok["alice"]))
	tb.enter()
	if got := tb.text(".who strong"); got != "alice" {
		t.Fatalf("signed in as %q", got)
	}
}

// press sends keys to the focused element.
func (tb *tab) press(keys string) {
	tb.t.Helper()
	tb.do("press "+keys, chromedp.KeyEvent(keys))
}

// tabTo presses Tab until the focus is on what sel selects.
func (tb *tab) tabTo(sel string) {
	tb.t.Helper()
	seen := []string{}
	for range 80 {
		tb.press("\t")
		if eval[bool](tb, `document.activeElement.matches(`+jsString(sel)+`)`) {
			return
		}
		seen = append(seen, eval[string](tb, `document.activeElement.outerHTML.slice(0, 60)`))
	}
	tb.t.Fatalf("Tab never reached %s; it went through:\n%s", sel, strings.Join(seen, "\n"))
}

// enter presses Enter on the focused element and waits for the page it
// leads to.
func (tb *tab) enter() {
	tb.t.Helper()
	tb.navigate("Enter on "+eval[string](tb, "document.activeElement.outerHTML.slice(0, 80)"), 200, chromedp.KeyEvent("\r"))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestBrowserNoConsoleErrors visits every page, anonymously and signed in,
// and lets each load its script and its log: the tab fails the test on any
// console error, uncaught exception or violation of the
// Content-Security-Policy (which the console reports).
func TestBrowserNoConsoleErrors(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t))
	pages := []string{"/", "/scopes/" + itoa(f.ids["scope:debian"]) + "/",
		"/workspaces/" + itoa(f.ids["pub"]) + "/", "/workspaces/" + itoa(f.ids["pub"]) + "/?view=workflows",
		"/workspaces/" + itoa(f.ids["pub"]) + "/?status=completed&task=sbuild&arch=amd64&from=2020-01-01&to=2099-01-01",
		"/work-requests/" + itoa(f.ids["wr:pub"]) + "/", "/work-requests/" + itoa(f.ids["wf:pub"]) + "/",
		"/work-requests/" + itoa(f.ids["child:pub"]) + "/", "/sign-in/"}
	visit := func(tb *tab, extra ...string) {
		for _, p := range append(pages, extra...) {
			tb.open(f.srv.URL+p, 200)
			if strings.HasPrefix(p, "/work-requests/") {
				tb.waitFor("the log to settle", `!document.getElementById("log-state").textContent.endsWith("…")`)
			}
		}
	}
	visit(newTab(t))
	tb := newTab(t)
	tb.signIn(f, "admin", "/")
	visit(tb, "/workers/", "/workspaces/"+itoa(f.ids["priv"])+"/", "/work-requests/"+itoa(f.ids["wr:priv"])+"/")
	time.Sleep(0) // the tabs' cleanups check what the console said
}
