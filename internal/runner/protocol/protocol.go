// Package protocol defines the messages a runner and the server exchange
// over the runner's WebSocket (GET /api/1.0/workers/connect/). Both sides
// import it, so that a message cannot be spelt differently on each end.
//
// Every WebSocket text frame holds one Envelope: {"type": "...", "body":
// {...}}. The conversation:
//
//	runner                               server
//	hello{metadata, running}      →
//	                              ←      welcome{worker, heartbeat, keep}
//	ready                         →      (the server claims work for it)
//	                              ←      task{work_request}
//	log{work_request, data}…      →
//	heartbeat{running}            →      (TouchWorker)
//	                              ←      heartbeat
//	result{work_request, …}       →      (CompleteWorkRequest)
//	                              ←      ack{work_request, error?}
//	ready                         →      …
//
// With a server whose welcome lists FeatureReadyWithResult, a runner that
// wants another task says so in its result instead, and the server
// records the result and claims the next request in one transaction:
//
//	result{work_request, …, ready} →     (CompleteAndClaim)
//	                              ←      ack{work_request}
//	                              ←      task{work_request}   (when one matches)
//
// A runner that runs several tasks at once (its metadata's
// system:concurrent) does so with a server whose welcome lists
// FeatureConcurrent. Each request it holds is a conversation of its own:
// its own log, result, ack, cancel or release. Its ready says how many
// more tasks it wants (ready{slots}), its heartbeat lists every task still
// running (heartbeat{tasks}), and a result's ready asks for one more. The
// server claims at most as many tasks as it was asked for, never more than
// the runner's capacity in all; tasks and acks of different requests may
// cross. With another server the runner runs one task at a time.
//
// The runner asks for work (ready) rather than the server pushing it, so a
// runner that is shutting down, or that runs --once, simply stops asking;
// the server claims a request only for a runner that has asked for one
// (a ready without a body says the runner holds nothing and wants one).
// A task it receives when it no longer wants one goes back with release.
// The server sends cancel when the request a runner holds was aborted or
// given to someone else; a runner whose hello lists a request the server
// did not keep (welcome.keep) must stop it: it may already run elsewhere.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/kiln-build/kiln/internal/model"
	"github.com/kiln-build/kiln/internal/strictjson"
)

// Path is where the server accepts runner connections.
const Path = "/api/1.0/workers/connect/"

// RegisterPath is where a runner without a token registers itself.
const RegisterPath = "/api/1.0/workers/register/"

// Subprotocol is negotiated on the WebSocket, so that a future incompatible
// protocol can be told apart and refused cleanly.
const Subprotocol = "kiln.runner.v1"

// Message types.
const (
	TypeHello     = "hello"
	TypeWelcome   = "welcome"
	TypeReady     = "ready"
	TypeTask      = "task"
	TypeLog       = "log"
	TypeHeartbeat = "heartbeat"
	TypeResult    = "result"
	TypeAck       = "ack"
	TypeRelease   = "release"
	TypeCancel    = "cancel"
)

// Envelope is one frame on the wire.
type Envelope struct {
	Type string          `json:"type"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Encode wraps a body in an envelope of the given type.
func Encode(typ string, body any) ([]byte, error) {
	env := Envelope{Type: typ}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", typ, err)
		}
		env.Body = b
	}
	return json.Marshal(env)
}

// Parse reads one frame into its envelope, strictly
// (docs/architecture.md#security): a key given twice, invalid UTF-8
// (strictjson; NUL characters are allowed, a log chunk may carry them) and
// unknown fields are errors that name the field, never a silently different
// message. Both ends parse every frame with it; a change of the messages'
// fields is a new Subprotocol.
func Parse(data []byte) (*Envelope, error) {
	if err := strictjson.CheckAllowingNUL(data); err != nil {
		return nil, fmt.Errorf("malformed message: %w", err)
	}
	var env Envelope
	if err := decodeStrict(data, &env); err != nil {
		return nil, fmt.Errorf("malformed message: %w", err)
	}
	return &env, nil
}

// Decode reads the body of an envelope into v, refusing fields v does not
// have.
func (e *Envelope) Decode(v any) error {
	if len(e.Body) == 0 {
		return fmt.Errorf("%s message without a body", e.Type)
	}
	if err := decodeStrict(e.Body, v); err != nil {
		return fmt.Errorf("%s message: %w", e.Type, err)
	}
	return nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the message")
	}
	return nil
}

// Hello is the runner's first message.
type Hello struct {
	Metadata model.WorkerMetadata `json:"metadata"`
	// Running lists the requests this runner still works on (or holds an
	// unreported result of) from before a reconnection.
	Running []int64 `json:"running,omitempty"`
}

// FeatureReadyWithResult, in welcome.features, says that the server reads
// result.ready.
const FeatureReadyWithResult = "ready-with-result"

// FeatureConcurrent, in welcome.features, says that the server gives a
// runner up to its system:concurrent tasks at once: it reads ready.slots
// and heartbeat.tasks.
const FeatureConcurrent = "concurrent"

// Welcome answers hello.
type Welcome struct {
	WorkerID int64  `json:"worker_id"`
	Name     string `json:"name"`
	Enabled  bool   `json:"enabled"`
	// HeartbeatMillis is how often the runner must send heartbeats.
	HeartbeatMillis int64 `json:"heartbeat_ms"`
	// Keep lists which of hello.Running the server still assigns to this
	// runner; the others were requeued and must be stopped.
	Keep []int64 `json:"keep"`
	// Features lists what the server understands beyond the first
	// version of this protocol (Feature… constants); a runner uses only
	// what is listed, so runners and servers of different versions still
	// talk.
	Features []string `json:"features,omitempty"`
}

// Ready asks the server for tasks. Without a body (the first version of
// the protocol, and runners that run one task at a time) it says the runner
// holds nothing and wants one task.
type Ready struct {
	// Slots is how many more tasks the runner wants now, on top of those
	// it holds and those it asked for and has not received yet. The
	// server hands out no more than its capacity allows in all.
	Slots int `json:"slots"`
}

// Task hands a claimed request to the runner.
type Task struct {
	WorkRequest model.WorkRequest `json:"work_request"`
}

// Log carries a chunk of a running request's log. Offset is the position
// of Data in the whole log, so the server can ignore chunks it already has
// after a reconnection.
type Log struct {
	WorkRequest int64  `json:"work_request"`
	Offset      int64  `json:"offset"`
	Data        string `json:"data"`
}

// Heartbeat is sent by the runner every heartbeat interval and echoed by
// the server, so both sides notice a dead connection. It lists the
// requests whose tasks still run, so that the server can tell the runner
// to stop those it no longer holds (aborted, or requeued while the runner
// was out of touch).
type Heartbeat struct {
	// Running is the one running task of a runner that runs one at a time
	// (what the first version of the protocol knew).
	Running int64 `json:"running,omitempty"`
	// Tasks lists every running task, sent to servers that list
	// FeatureConcurrent.
	Tasks []int64 `json:"tasks,omitempty"`
}

// IDs is every request the heartbeat names, in the order given.
func (h Heartbeat) IDs() []int64 {
	ids := h.Tasks
	if h.Running != 0 && !slices.Contains(ids, h.Running) {
		ids = append(slices.Clip(ids), h.Running)
	}
	return ids
}

// Result reports the end of a request.
type Result struct {
	WorkRequest int64                    `json:"work_request"`
	Result      model.Result             `json:"result"`
	Statistics  *model.RuntimeStatistics `json:"runtime_statistics,omitempty"`
	Output      json.RawMessage          `json:"output,omitempty"`
	// Ready, sent only to a server that lists FeatureReadyWithResult,
	// says that the runner takes another task once this result is
	// recorded: the server claims one in the same transaction and sends
	// it after the ack, and otherwise goes on claiming as after a ready
	// message. When the ack carries an error that is not gone, the server
	// claimed nothing and the runner sends the result again.
	Ready bool `json:"ready,omitempty"`
}

// Ack answers a result or a release. Error, when set, says why the server
// did not record it; Gone means the request is no longer this runner's
// (aborted, or requeued after a lost heartbeat), so retrying is pointless.
type Ack struct {
	WorkRequest int64  `json:"work_request"`
	Error       string `json:"error,omitempty"`
	Gone        bool   `json:"gone,omitempty"`
}

// Release hands a request back to the queue unfinished.
type Release struct {
	WorkRequest int64  `json:"work_request"`
	Reason      string `json:"reason"`
}

// Cancel tells the runner to stop a request.
type Cancel struct {
	WorkRequest int64  `json:"work_request"`
	Reason      string `json:"reason"`
}

// Register is the body of POST /api/1.0/workers/register/: a runner
// without a token proposes a name and the SHA-256 (hex) of a secret it
// generated. The secret itself never crosses the wire until it is used.
type Register struct {
	Name       string `json:"name"`
	SecretHash string `json:"secret_hash"`
}
