package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-build/kiln/internal/runner/protocol"
	"github.com/kiln-build/kiln/internal/testdb"
)

// TestRunnerMessagesDecodedStrictly (docs/architecture.md#security): a runner's message with
// an unknown field, a key given twice or invalid UTF-8 is a protocol error
// that names the field (the connection is closed with it), never a
// silently different message.
func TestRunnerMessagesDecodedStrictly(t *testing.T) {
	f := newFarm(t, testdb.SQLite(t), 3*time.Second)
	for i, c := range []struct{ name, msg, want string }{
		{"an unknown field", `{"type": "hello", "body": {"metadata": {"system:architectures": ["amd64"]}, "runing": [3]}}`, "runing"},
		{"a type given twice", `{"type": "hello", "type": "ready", "body": {"metadata": {"system:architectures": ["amd64"]}}}`, "type"},
		{"a duplicate key in the body", `{"type": "hello", "body": {"metadata": {"system:architectures": ["amd64"], "system:architectures": ["x"]}}}`, "system:architectures"},
		{"invalid UTF-8", "{\"type\": \"hello\", \"body\": {\"metadata\": {\"system:architectures\": [\"amd\xff64\"]}}}", "UTF-8"},
		{"an unknown field in the envelope", `{"type": "hello", "bdoy": {}}`, "bdoy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			token := f.worker(fmt.Sprintf("strict-%d", i))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, strings.Replace(f.srv.URL, "http", "ws", 1)+protocol.Path, &websocket.DialOptions{
				Subprotocols: []string{protocol.Subprotocol}, HTTPHeader: http.Header{"Authorization": {"Token " + token}}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if err := conn.Write(ctx, websocket.MessageText, []byte(c.msg)); err != nil {
				t.Fatal(err)
			}
			_, msg, err := conn.Read(ctx)
			if err == nil {
				t.Fatalf("the server answered %s", msg)
			}
			var ce websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, c.want) {
				t.Fatalf("closed with %v, want a policy violation naming %q", err, c.want)
			}
		})
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
