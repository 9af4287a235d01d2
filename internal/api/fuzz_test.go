package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/strictjson"
)

// FuzzDecode feeds the API's strict decoder (every JSON body of every
// route goes through it) with arbitrary bodies for inputs of every kind
// of field: it never panics, answers only 4xx problems, and accepts only
// bodies free of duplicate keys, invalid UTF-8 and NUL. Seeds:
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"name": "x", "scope": "debian", "public": true, "expiration_delay": "72h"}`,
		`{"user": null, "scope": 3, "comment": "c", "expires_at": "2030-01-02T15:04:05Z"}`,
		`{"category": "a:b", "data": {"k": [1, "x"]}, "files": [{"path": "a", "sha256": "00", "size": 1}]}`,
		`{"name": "a", "name": "b"}`, `{"name": "\u0000"}`, "{\"name\": \"\xff\"}", `{"expiration_delay": 1.5}`, `[1]`, `null`} {
		f.Add([]byte(s))
	}
	a := &API{opts: Options{MaxBodyBytes: 1 << 16}}
	specs := []struct {
		spec *inputSpec
		new  func() any
	}{
		{specOf[workspaceInput, model.Workspace](), func() any { return &workspaceInput{} }},
		{specOf[tokenInput, model.Token]("secret", "hash"), func() any { return &tokenInput{} }},
		{specOf[artifactInput, model.Artifact](), func() any { return &artifactInput{} }},
		{registerSpec, func() any { return &registerInput{} }},
		{kilnHookSpec, func() any { return &kilnHookInput{} }},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, s := range specs {
			r := httptest.NewRequest(http.MethodPost, "/api/1.0/x/", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			c := &call{a: a, w: httptest.NewRecorder(), r: r}
			err := c.decode(s.spec, s.new())
			if err == nil {
				if cerr := strictjson.Check(body); cerr != nil {
					t.Fatalf("decoded %q, which Check refuses: %v", body, cerr)
				}
				continue
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
				t.Fatalf("%q: %v is no 4xx answer", body, err)
			}
		}
	})
}
