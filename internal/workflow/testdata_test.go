package workflow

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fixtures in testdata/, after blackbox_exporter's config tests:
//
//   - good/NAME.yaml|json must parse; a "# params: k=v k=v" line (or a
//     NAME.json.params sidecar) gives parameters that must expand.
//   - bad/NAME.yaml|json must be refused; each "# error: TEXT" line (or
//     each line of a NAME.json.error sidecar) is a substring the error must
//     contain. The file name says what is wrong.

// fixtureLines returns the values of "# key: value" comment lines at the
// top of a YAML fixture, or the lines of its sidecar file name+"."+key.
func fixtureLines(t *testing.T, path, key string) []string {
	t.Helper()
	if b, err := os.ReadFile(path + "." + key); err == nil {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		if v, ok := strings.CutPrefix(line, "# "+key+": "); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

func fixtures(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, pat := range []string{"*.yaml", "*.json"} {
		m, err := filepath.Glob(filepath.Join("testdata", dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	if len(out) == 0 {
		t.Fatalf("no fixtures in testdata/%s", dir)
	}
	return out
}

func parseParams(t *testing.T, lines []string) map[string]string {
	t.Helper()
	params := map[string]string{}
	for _, l := range lines {
		for _, kv := range strings.Fields(l) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("bad params line %q", l)
			}
			params[k] = v
		}
	}
	return params
}

func TestGoodFixtures(t *testing.T) {
	for _, path := range fixtures(t, "good") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := Parse(path, data)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			// what the store keeps reads back to the same template
			tmpl.WorkspaceID, tmpl.ID = 7, 9
			m, err := tmpl.Model()
			if err != nil {
				t.Fatal(err)
			}
			if m.TaskName != string(tmpl.Kind) {
				t.Fatalf("task_name %q, want the kind %q", m.TaskName, tmpl.Kind)
			}
			back, err := FromModel(m)
			if err != nil {
				t.Fatalf("stored form refused: %v\nstatic_parameters: %s\nmetrics: %s", err, m.StaticData, m.Metrics)
			}
			want := *tmpl
			want.Workspace = "" // a reference, resolved to WorkspaceID
			if !reflect.DeepEqual(normalize(t, back), normalize(t, &want)) {
				t.Fatalf("round trip changed the template:\n got %+v\nwant %+v", back, &want)
			}
			// the API's JSON of the stored template parses as a document too
			var shown map[string]any
			b, _ := json.Marshal(m)
			_ = json.Unmarshal(b, &shown)
			delete(shown, "id")
			delete(shown, "created_at")
			apiJSON, _ := json.Marshal(shown)
			if _, err := ParseJSON(apiJSON); err != nil {
				t.Fatalf("stored form as JSON refused: %v\n%s", err, apiJSON)
			}
			wf, err := tmpl.Expand(parseParams(t, fixtureLines(t, path, "params")))
			if err != nil {
				t.Fatalf("expand: %v", err)
			}
			if len(wf.Steps) == 0 {
				t.Fatal("no steps")
			}
		})
	}
}

// normalize compares templates through their JSON, where a nil and an
// empty map or list are the same document.
func normalize(t *testing.T, tmpl *Template) any {
	t.Helper()
	b, err := json.Marshal(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBadFixtures(t *testing.T) {
	for _, path := range fixtures(t, "bad") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			want := fixtureLines(t, path, "error")
			if len(want) == 0 {
				t.Fatalf("%s states no expected error (# error: … line or .error sidecar)", path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(path, data)
			if err == nil {
				t.Fatal("accepted")
			}
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("error is %T, want *workflow.Error: %v", err, err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

// Every bad fixture's name says what is wrong; none may be refused for
// another reason as well, or the fixture would hide a second problem.
func TestBadFixturesHaveOneProblem(t *testing.T) {
	for _, path := range fixtures(t, "bad") {
		data, _ := os.ReadFile(path)
		_, err := Parse(path, data)
		var we *Error
		if errors.As(err, &we) && len(we.Problems) != 1 {
			var b bytes.Buffer
			for _, p := range we.Problems {
				b.WriteString("\n  " + p.String())
			}
			t.Errorf("%s: %d problems, want 1:%s", path, len(we.Problems), b.String())
		}
	}
}
