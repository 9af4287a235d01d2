package strictjson_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/internal/strictjson"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		doc, path, reason string // reason "" means: accepted
	}{
		{`{}`, "", ""},
		{`{"a": 1, "b": [1, "x", {"c": null}], "d": {"e": true}}`, "", ""},
		{`"text"`, "", ""},
		{`[{"a": 1}, {"a": 2}]`, "", ""},                     // the same key in two objects
		{`{"a": {"b": 1}, "b": {"a": 1}}`, "", ""},           // the same key at two depths
		{`{"s": "é \u00e9 \ud83d\ude00 😀 \\ud800"}`, "", ""}, // a pair, and an escaped backslash
		{`{"s": "\uFFFD"}`, "", ""},                          // U+FFFD itself is a character
		{`{"a": 1, "a": 2}`, "a", strictjson.ReasonDuplicate},
		{`{"x": {"k": 1, "y": 0, "k": 2}}`, "x.k", strictjson.ReasonDuplicate},
		{`{"x": [0, {"k": 1, "k": 2}]}`, "x[1].k", strictjson.ReasonDuplicate},
		{`{"a b": 1, "a b": 2}`, `["a b"]`, strictjson.ReasonDuplicate},
		{"{\"s\": \"a\xffb\"}", "s", strictjson.ReasonUTF8},
		{"{\"k\xc3\": 1}", "[\"k\uFFFD\"]", strictjson.ReasonUTF8},   // the path shows what json made of the key
		{"[\"ok\", \"\xed\xa0\x80\"]", "[1]", strictjson.ReasonUTF8}, // a surrogate in raw UTF-8
		{`{"s": "\ud800"}`, "s", strictjson.ReasonSurrogate},
		{`{"s": "\udc00\ud800"}`, "s", strictjson.ReasonSurrogate},
		{`{"s": "\ud800\u0041"}`, "s", strictjson.ReasonSurrogate},
		{`{"s": "x\ud800"}`, "s", strictjson.ReasonSurrogate},
		{`{"s": "a\u0000b"}`, "s", strictjson.ReasonNUL},
		{`{"d": {"a\u0000": 1}}`, `d["a\x00"]`, strictjson.ReasonNUL},
		{`[[["\u0000"]]]`, "[0][0][0]", strictjson.ReasonNUL},
		{strings.Repeat("[", strictjson.MaxDepth+1) + strings.Repeat("]", strictjson.MaxDepth+1), strings.Repeat("[0]", strictjson.MaxDepth), strictjson.ReasonDepth},
		{`{"n": [1, 2e400]}`, "n[1]", strictjson.ReasonRange},
		{`{"n": -1e309}`, "n", strictjson.ReasonRange},
		{`{"a": `, "", strictjson.ReasonSyntax},
		{`{"a": 1} {"b": 2}`, "", strictjson.ReasonSyntax},
		{``, "", strictjson.ReasonSyntax},
	} {
		t.Run(c.doc, func(t *testing.T) {
			err := strictjson.Check([]byte(c.doc))
			if c.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			e, ok := strictjson.As(err)
			if !ok {
				t.Fatalf("want an *Error with %q at %q, got %v", c.reason, c.path, err)
			}
			if e.Path != c.path || !strings.HasPrefix(e.Reason, c.reason) {
				t.Fatalf("want %q at %q, got %q at %q", c.reason, c.path, e.Reason, e.Path)
			}
		})
	}
}

// TestCheckAllowingNUL refuses everything Check refuses but NUL.
func TestCheckAllowingNUL(t *testing.T) {
	if err := strictjson.CheckAllowingNUL([]byte(`{"data": "a\u0000b"}`)); err != nil {
		t.Fatal(err)
	}
	if err := strictjson.CheckAllowingNUL([]byte(`{"data": 1, "data": 2}`)); err == nil {
		t.Fatal("a duplicate key was accepted")
	}
}

// TestCheckAgreesWithEncodingJSON: whatever Check accepts, encoding/json
// reads too, and reads back to the same text (nothing was replaced).
func TestCheckAgreesWithEncodingJSON(t *testing.T) {
	for _, doc := range []string{`{"a": "é😀\ud83d\ude00", "b": [1, 2.5e3, null, true]}`, `"x"`, `[]`} {
		if err := strictjson.Check([]byte(doc)); err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
	}
}

func ExampleCheck() {
	err := strictjson.Check([]byte(`{"name": "old", "name": "new"}`))
	fmt.Println(err)
	err = strictjson.Check([]byte(`{"data": {"k": "a\u0000b"}}`))
	if e, ok := strictjson.As(err); ok {
		fmt.Println(e.Path)
	}
	// Output:
	// "name" appears twice in its object; give each key once
	// data.k
}

// BenchmarkCheck checks a document of the size and shape of a runner's
// messages (a work request with its data), which every runner and the
// server check for each one they receive.
func BenchmarkCheck(b *testing.B) {
	doc := []byte(`{"type": "work", "id": 7, "data": {"work_request": {"id": 123456, "task_type": "Worker",
		"task_name": "command", "workspace_id": 3, "status": "running", "priority_base": 0, "priority_adjustment": 0,
		"created_at": "2026-12-01T21:00:00.123456Z", "started_at": "2026-12-01T21:00:01.5Z",
		"data": {"host_architecture": "amd64", "backend": "auto", "script": "make -j4 && make check",
		"env": {"CC": "gcc", "CFLAGS": "-O2 -g"}, "outputs": [{"path": "out/result.txt", "category": "e2e:result"}],
		"timeout": 3600}, "dependencies": [123450, 123451], "worker_id": 9}}}`)
	if err := strictjson.Check(doc); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if err := strictjson.Check(doc); err != nil {
			b.Fatal(err)
		}
	}
}
