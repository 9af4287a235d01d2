package strictjson_test

import (
	"encoding/json"
	"testing"

	"github.com/kiln-build/kiln/internal/strictjson"
)

// FuzzCheck: Check never panics, accepts only JSON, and refuses every
// document that is not (so that a caller may check first and decode
// after). Seeds: testdata/fuzz/FuzzCheck.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a": 1}`, `{"a": 1, "a": 2}`, `[{"k": "\ud800"}]`, "\"\xff\"", `{"s": "\u0000"}`, `[[[[]]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := strictjson.Check(data)
		if _, ok := strictjson.As(err); err != nil && !ok {
			t.Fatalf("%q: %v is no *Error", data, err)
		}
		if err != nil {
			return // a problem before the end, or a syntax error
		}
		if !json.Valid(data) {
			t.Fatalf("Check accepted invalid JSON %q", data)
		}
		// what Check accepts reads back to itself: nothing was replaced
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("accepted %q, which json cannot read: %v", data, err)
		}
		again, _ := json.Marshal(v)
		if err := strictjson.Check(again); err != nil {
			t.Fatalf("accepted %q, whose re-encoding %q is refused: %v", data, again, err)
		}
	})
}
