package dashboard

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/api"
	"github.com/kiln-build/kiln/internal/model"
)

// logs and download are the API's own routes — the log of a work request
// (live while it runs, its log artifact afterwards) and an artifact's
// file — run as the signed-in visitor: the dashboard's paths are the API's
// without its prefix, and what the API refuses, the dashboard refuses in
// the same words. A browser that asks for a page (Accept: text/html) gets
// a refusal as a page; scripts get the API's problem details.
//
// One answer differs, for the script that follows a log (static/log.js):
// a request the visitor sees but whose log the API cannot give yet — it
// has not started, or its task writes none — is an empty log with
// X-Kiln-Log-Source "none" and the API's reason in X-Kiln-Log-Detail, not
// a 404. (A running request's log is live through every replica,
// whichever its runner streams to: package livelog.) Nothing is missing,
// so the browser must not report a failed load; whether the request
// exists is still decided by the store with the visitor's viewer, and a
// hidden one is the API's 404 as ever.
func (d *Dashboard) logs(w http.ResponseWriter, r *http.Request) {
	d.serve(w, r, func(v *visit) error {
		script := !acceptsPage(r)
		ans := d.viaAPI(v, func(code int) bool { return code >= 400 && (!script || code == http.StatusNotFound) })
		if ans.status == 0 {
			return nil
		}
		detail := ans.detail()
		if script && ans.status == http.StatusNotFound {
			if _, ok := v.visibleRequest(); ok {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("Cache-Control", "no-store")
				w.Header().Set(logSourceHeader, "none")
				w.Header().Set(logDetailHeader, detail)
				w.WriteHeader(http.StatusOK)
				return nil
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(ans.status)
			w.Write(ans.body.Bytes())
			return nil
		}
		return &pageError{status: ans.status, msg: detail}
	})
}

// Headers of the log route beside the API's (api.LogSourceHeader,
// api.LogOffsetHeader).
const (
	logSourceHeader = api.LogSourceHeader
	logDetailHeader = "X-Kiln-Log-Detail"
)

func (d *Dashboard) download(w http.ResponseWriter, r *http.Request) {
	d.serve(w, r, func(v *visit) error {
		page := acceptsPage(r)
		ans := d.viaAPI(v, func(code int) bool { return page && code >= 400 })
		if ans.status == 0 {
			return nil
		}
		return &pageError{status: ans.status, msg: ans.detail()}
	})
}

// acceptsPage reports whether the request is a browser's navigation.
func acceptsPage(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), "text/html") }

// visibleRequest is the work request of the path, if the visitor sees it.
func (v *visit) visibleRequest() (*model.WorkRequest, bool) {
	id, err := strconv.ParseInt(v.r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, false
	}
	wr, err := v.d.st.WorkRequests().Get(v.ctx(), id, v.viewer)
	return wr, err == nil
}

// viaAPI runs the request through the API's route of the same path as the
// visitor. Answers whose status keep selects are kept rather than sent.
func (d *Dashboard) viaAPI(v *visit, keep func(int) bool) *apiAnswer {
	inner := v.r.Clone(v.ctx())
	inner.URL.Path = strings.TrimSuffix(api.Prefix, "/") + v.r.URL.Path
	if v.r.URL.RawPath != "" {
		inner.URL.RawPath = strings.TrimSuffix(api.Prefix, "/") + v.r.URL.RawPath
	}
	inner.RequestURI = ""
	// the API sets the caching of what it answers
	v.w.Header().Del("Cache-Control")
	ans := &apiAnswer{ResponseWriter: v.w, keep: keep}
	d.api.ServeAs(ans, inner, v.p)
	if ans.status != 0 {
		v.w.Header().Del("Content-Length")
	}
	return ans
}

// apiAnswer passes the API's answer through, except one whose status keep
// selects, which it keeps for the caller to answer otherwise.
type apiAnswer struct {
	http.ResponseWriter
	keep   func(int) bool
	status int // the answer kept, 0 when passed through
	body   bytes.Buffer
}

func (a *apiAnswer) WriteHeader(code int) {
	if a.keep(code) {
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

// detail is the problem detail of a kept answer.
func (a *apiAnswer) detail() string {
	var prob struct {
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(a.body.Bytes(), &prob)
	if prob.Detail == "" {
		return http.StatusText(a.status)
	}
	return prob.Detail
}
