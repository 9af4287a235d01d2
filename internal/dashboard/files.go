package dashboard

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/kiln-build/kiln/internal/api"
)

// logs and download are the API's own routes — the log of a work request
// (live while it runs, its log artifact afterwards) and an artifact's
// file — run as the signed-in visitor: the dashboard's paths are the API's
// without its prefix, and what the API refuses, the dashboard refuses in
// the same words. A browser that asks for a page (Accept: text/html) gets
// a refusal as a page; scripts (static/log.js) get the API's problem
// details.
func (d *Dashboard) logs(w http.ResponseWriter, r *http.Request)     { d.viaAPI(w, r) }
func (d *Dashboard) download(w http.ResponseWriter, r *http.Request) { d.viaAPI(w, r) }

func (d *Dashboard) viaAPI(w http.ResponseWriter, r *http.Request) {
	d.serve(w, r, func(v *visit) error {
		inner := r.Clone(r.Context())
		inner.URL.Path = strings.TrimSuffix(api.Prefix, "/") + r.URL.Path
		if r.URL.RawPath != "" {
			inner.URL.RawPath = strings.TrimSuffix(api.Prefix, "/") + r.URL.RawPath
		}
		inner.RequestURI = ""
		// the API sets what it answers: no page cache header of ours
		w.Header().Del("Cache-Control")
		ans := &apiAnswer{ResponseWriter: w, page: strings.Contains(r.Header.Get("Accept"), "text/html")}
		d.api.ServeAs(ans, inner, v.p)
		if ans.status == 0 {
			return nil
		}
		var prob struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(ans.body.Bytes(), &prob)
		if prob.Detail == "" {
			prob.Detail = http.StatusText(ans.status)
		}
		w.Header().Del("Content-Length")
		return &pageError{status: ans.status, msg: prob.Detail}
	})
}

// apiAnswer passes the API's answer through, except a refusal to a
// browser asking for a page, which it keeps for the page to show.
type apiAnswer struct {
	http.ResponseWriter
	page   bool
	status int // the refusal kept, 0 when passed through
	body   bytes.Buffer
}

func (a *apiAnswer) WriteHeader(code int) {
	if a.page && code >= 400 {
		a.status = code
		return
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *apiAnswer) Write(b []byte) (int, error) {
	if a.status != 0 {
		return a.body.Write(b)
	}
	return a.ResponseWriter.Write(b)
}
