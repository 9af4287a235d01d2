package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

//go:embed templates/*.html
var templateFiles embed.FS

// pages are the parsed templates, one set per page: the layout and the
// page's own file.
type pages map[string]*template.Template

func parsePages(funcs template.FuncMap) (pages, error) {
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := pages{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" || strings.HasPrefix(name, "_") {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/_*.html", n)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// frame is what the layout shows around every page.
type frame struct {
	Title string
	// User is the signed-in user's name; CSRF the secret of the
	// sign-out form.
	User string
	CSRF string
	// Path is the current page, where signing in comes back to.
	Path string
	Page any
}

// titled is implemented by page data that names its page.
type titled interface{ title() string }

// render writes the page with status. The page is rendered whole before
// anything is sent, so a template failure is a clean 500.
func (v *visit) render(status int, name string, page any) {
	f := frame{Title: "kiln", Path: v.r.URL.RequestURI(), Page: page}
	if t, ok := page.(titled); ok {
		f.Title = t.title() + " · kiln"
	}
	if v.p != nil && v.p.User != nil {
		f.User, f.CSRF = v.p.User.Username, v.sess.CSRF
	}
	var buf bytes.Buffer
	t := v.d.pages[name]
	if t == nil {
		v.d.log.Error("dashboard: no template", "name", name)
		http.Error(v.w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout", f); err != nil {
		v.d.log.ErrorContext(v.ctx(), "dashboard: rendering", "page", name, "err", err)
		http.Error(v.w, "internal error", http.StatusInternalServerError)
		return
	}
	v.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	v.w.WriteHeader(status)
	v.w.Write(buf.Bytes())
}

// since is a moment shown as an age, for the "since" template.
type since struct{ Now, T time.Time }

type errorPage struct {
	Status  int
	Title   string
	Message string
}

func (e errorPage) title() string { return e.Title }

// funcs are the templates' helpers.
func (d *Dashboard) funcs() template.FuncMap {
	return template.FuncMap{
		"asset":    d.assets.path,
		"when":     when,
		"ago":      ago,
		"duration": duration,
		"seconds":  func(s float64) string { return duration(time.Duration(s * float64(time.Second))) },
		"bytes":    func(n int64) string { return humanize.IBytes(uint64(max(n, 0))) },
		"percent":  percent,
		"json":     prettyJSON,
		"link":     with,
		"at":       func(now, t time.Time) since { return since{now, t} },
		"deref":    func(p *int64) int64 { return *p },
		"columns":  func() []struct{ Key, Label string } { return statisticsColumns },
	}
}

// when is a timestamp as shown: UTC, to the second.
func when(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// ago is how long before now t was, rounded for reading.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + duration(-d)
	case d < time.Second:
		return "just now"
	}
	return duration(d) + " ago"
}

// duration rounds d to two units at most: "1 h 05 min", "3.2 s"; nothing
// at all is "0 s", not a precision the figure never had.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + duration(-d)
	case d == 0:
		return "0 s"
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + " µs"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	case d < 10*time.Second:
		return strconv.FormatFloat(math.Floor(d.Seconds()*10)/10, 'f', -1, 64) + " s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + " s"
	case d < time.Hour:
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d d %02d h", int(d.Hours())/24, int(d.Hours())%24)
}

// percent shows a ratio; a ratio that does not exist (no runs) is "—".
func percent(r *float64) string {
	if r == nil {
		return "—"
	}
	return strconv.FormatFloat(*r*100, 'f', 1, 64) + " %"
}

// prettyJSON indents JSON for a <pre>; the template escapes it.
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

// with returns the URL u with query parameter key set to value (removed
// when value is empty), for links that change one thing of a list.
func with(u *url.URL, kv ...string) string {
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	out := url.URL{Path: u.Path, RawQuery: q.Encode()}
	return out.String()
}

// onlyParams refuses query parameters other than known ones, so that a
// mistyped filter is an error rather than an unfiltered list.
func (v *visit) onlyParams(known ...string) error {
	for k := range v.r.URL.Query() {
		ok := false
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok {
			return badRequest("unknown query parameter %q; this page takes %s", k, strings.Join(known, ", "))
		}
	}
	return nil
}
