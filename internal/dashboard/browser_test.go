package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium (installed by .ci/run when
// missing) over the DevTools protocol with chromedp. One browser serves
// the whole package, started by the first test that needs it; each test
// works in tabs of its own, which record every console error, uncaught
// exception and dialog so that a test fails on any of them.

var chrome struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chrome.cancel != nil {
		chrome.cancel()
	}
	os.Exit(code)
}

// browserTimeout bounds each browser step; a page of the dashboard loads
// in milliseconds, so only a broken one takes this long.
const browserTimeout = 20 * time.Second

func startChrome() {
	path, err := exec.LookPath("chromium")
	if err != nil {
		chrome.err = fmt.Errorf("the browser tests need Debian's chromium (apt-get install -y chromium; .ci/run installs it): %w", err)
		return
	}
	dir, err := os.MkdirTemp("", "kiln-chromium-")
	if err != nil {
		chrome.err = err
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.UserDataDir(dir), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	chrome.cancel = func() {
		cancel()
		cancelAlloc()
		os.RemoveAll(dir)
	}
	if err := chromedp.Do(ctx); err != nil {
		chrome.err = fmt.Errorf("start chromium: %w", err)
		return
	}
	chrome.ctx = ctx
}

// tab is a browser tab for one test, closed when the test ends.
type tab struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	// problems are console errors, exceptions and dialogs seen so far.
	problems []string
	// expect404 lists paths whose load is expected to fail (the page of a
	// hidden object), whose 404 the console reports.
	expect404 []string
}

func newTab(t *testing.T) *tab {
	t.Helper()
	chrome.once.Do(startChrome)
	if chrome.err != nil {
		t.Fatal(chrome.err)
	}
	// a browser context of its own: its cookies are the test's alone
	// (cookies ignore ports, and every test's server is on 127.0.0.1)
	ctx, cancel := chromedp.NewContext(chrome.ctx, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	tb := &tab{t: t, ctx: ctx}
	console := chromedp.Console(ctx)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == "error" || m.Type == "assert" {
				tb.problem(fmt.Sprintf("console %s at %s:%d: %s", m.Type, m.URL, m.Line+1, m))
			}
		}
	})
	wg.Go(func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			tb.problem(fmt.Sprintf("a %s dialog opened: %q", ev.Type, ev.Message))
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, p := range tb.problems {
			t.Errorf("in the browser: %s", p)
		}
	})
	return tb
}

func (tb *tab) problem(p string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, path := range tb.expect404 {
		if strings.Contains(p, "404") && strings.Contains(p, path) {
			return
		}
	}
	tb.problems = append(tb.problems, p)
}

// step runs actions with a timeout.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// run runs one action that returns a value, with a timeout.
func run[T any](tb *tab, what string, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// open loads url and checks the answer's status.
func (tb *tab) open(url string, status int64) {
	tb.t.Helper()
	if status != 200 {
		tb.mu.Lock()
		tb.expect404 = append(tb.expect404, url)
		tb.mu.Unlock()
	}
	tb.navigate("open "+url, status, chromedp.Navigate(url))
}

// follow clicks what sel selects and waits for the page it leads to.
func (tb *tab) follow(sel string) {
	tb.t.Helper()
	tb.navigate("follow "+sel, 200, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// navigate runs an action that leads to a page, and waits until that page
// has loaded (its script included), checking the answer's status.
func (tb *tab) navigate(what string, status int64, a chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	loaded := chromedp.Events(ctx, page.LoadEventFired)
	res, err := chromedp.RunResponse(ctx, a)
	if err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
	if res == nil || res.Status != status {
		tb.t.Fatalf("%s: answer %+v, want status %d", what, res, status)
	}
	for _, err := range loaded {
		if err != nil {
			tb.t.Fatalf("%s: waiting for the page to load: %v", what, err)
		}
		break
	}
}

// text is the text content of what sel selects.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	return run(tb, "read "+sel, chromedp.TextContent(chromedp.CSS(sel)))
}

// eval evaluates a JavaScript expression.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	return run(tb, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// waitFor polls a JavaScript condition until it holds.
func (tb *tab) waitFor(what, cond string) {
	tb.t.Helper()
	deadline := time.Now().Add(browserTimeout)
	for {
		ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		cancel()
		if err != nil {
			tb.t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("%s: %s never held; the page says:\n%s", what, cond, eval[string](tb, "document.body.innerText"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// path is the path of the tab's page.
func (tb *tab) path() string {
	return eval[string](tb, "location.pathname + location.search")
}
