package protocol_test

import (
	"testing"

	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/strictjson"
)

// FuzzParse feeds the runner protocol's decoder, which both ends use on
// every frame, with arbitrary frames: it never panics, and what it
// accepts is strict JSON (NUL allowed, for logs) whose body decodes into
// its message type or is refused with an error. Seeds:
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"type": "hello", "body": {"metadata": {"system:architectures": ["amd64"]}, "running": [3]}}`,
		`{"type": "ready"}`, `{"type": "log", "body": {"work_request": 1, "offset": 0, "data": "a\u0000b"}}`,
		`{"type": "result", "body": {"work_request": 1, "result": "success", "runtime_statistics": {"duration": 1.5}, "output": {"k": 1}}}`,
		`{"type": "heartbeat", "body": {"running": 2}}`, `{"type": "hello", "type": "ready"}`,
		`{"type": "ready", "body": {"slots": 3}}`, `{"type": "heartbeat", "body": {"tasks": [2, 5, 7]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := protocol.Parse(data)
		if err != nil {
			return
		}
		if err := strictjson.CheckAllowingNUL(data); err != nil {
			t.Fatalf("parsed %q, which is not strict JSON: %v", data, err)
		}
		for _, v := range []any{&protocol.Hello{}, &protocol.Welcome{}, &protocol.Ready{}, &protocol.Task{}, &protocol.Log{}, &protocol.Heartbeat{},
			&protocol.Result{}, &protocol.Ack{}, &protocol.Release{}, &protocol.Cancel{}, &protocol.Register{}} {
			_ = env.Decode(v)
		}
	})
}
