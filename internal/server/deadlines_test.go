package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowTimeouts are small limits, so that the tests measure cuts in
// fractions of a second; the defaults are minutes.
var slowTimeouts = Timeouts{Request: 400 * time.Millisecond, TransferIdle: 400 * time.Millisecond, TransferMinBytes: 64 << 10}

// trickle sends head, then body one byte every 50 ms until the server
// stops taking it, and returns how long the server took to cut the
// connection (or answer) and what it answered.
func trickle(t *testing.T, addr, head string, body int) (time.Duration, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range body {
			time.Sleep(50 * time.Millisecond)
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn) // until the server answers and closes, or cuts
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a body sent a byte at a time held the connection for 10s: %q", b)
	}
	return time.Since(start), string(b)
}

// TestSlowBodiesAreCut: a request body sent a byte at a time is cut once
// the route's limit passes — a JSON body after the request timeout, an
// upload when it stops making progress — instead of holding its
// connection forever (issue 13, defect 6: 500 connections still open after
// 40 s).
func TestSlowBodiesAreCut(t *testing.T) {
	const token = "kiln_deadline_test_admin_token"
	r := start(t, Config{BootstrapToken: token, Timeouts: slowTimeouts})
	addr := strings.TrimPrefix(r.API, "http://")
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	sum := sha256.Sum256([]byte(strings.Repeat("x", 1000)))
	art := mustPost(t, r.API+"/api/1.0/artifacts/", token, fmt.Sprintf(`{"category": "test:x", "workspace": "debian/main",
		"files": [{"path": "f", "sha256": %q, "size": 1000}]}`, hex.EncodeToString(sum[:])))

	for _, c := range []struct{ name, head string }{
		{"a JSON body", "POST /api/1.0/scopes/ HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n" +
			"Authorization: Token " + token + "\r\nContent-Length: 1000\r\n\r\n"},
		{"an upload", fmt.Sprintf("PUT /api/1.0/artifacts/%d/files/f HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/octet-stream\r\n"+
			"Authorization: Token %s\r\nContent-Length: 1000\r\n\r\n", art, token)},
	} {
		t.Run(c.name, func(t *testing.T) {
			took, answer := trickle(t, addr, c.head, 1000)
			if took < slowTimeouts.Request {
				t.Errorf("cut after %s, before the limit of %s: %q", took, slowTimeouts.Request, answer)
			}
			if answer != "" && !strings.HasPrefix(answer, "HTTP/1.1 408") {
				t.Errorf("answered %q, want 408 or nothing", answer)
			}
			t.Logf("cut after %s", took.Round(time.Millisecond))
		})
	}
	// nothing was stored by the cut upload
	code, body := request(t, http.MethodGet, fmt.Sprintf("%s/api/1.0/artifacts/%d/files/f", r.API, art), asAdmin(token), "")
	if code != http.StatusConflict {
		t.Errorf("the cut upload left content behind: %d %s", code, body)
	}
}

// TestUnreadDownloadIsCut: a client that asks for a big file and never
// reads it does not hold the server's handler and descriptor forever: the
// download is cut once it stops making progress. A client that reads gets
// all of it, with the same small limits.
func TestUnreadDownloadIsCut(t *testing.T) {
	const token = "kiln_deadline_test_admin_token"
	// an idle cut a busy machine's reader still passes: the test's own
	// reading client must not be cut
	timeouts := slowTimeouts
	timeouts.TransferIdle = 2 * time.Second
	r := start(t, Config{BootstrapToken: token, Timeouts: timeouts, MetricsServer: "127.0.0.1:0"})
	mustPost(t, r.API+"/api/1.0/scopes/", token, `{"name": "debian"}`)
	mustPost(t, r.API+"/api/1.0/workspaces/", token, `{"name": "main", "scope": "debian", "public": true}`)
	const size = 48 << 20 // well past what loopback socket buffers hold
	content := make([]byte, size)
	for i := range content {
		content[i] = byte(i)
	}
	sum := sha256.Sum256(content)
	art := mustPost(t, r.API+"/api/1.0/artifacts/", token, fmt.Sprintf(`{"category": "test:x", "workspace": "debian/main",
		"files": [{"path": "big.bin", "sha256": %q, "size": %d}]}`, hex.EncodeToString(sum[:]), size))
	path := fmt.Sprintf("/api/1.0/artifacts/%d/files/big.bin", art)
	req, _ := http.NewRequest(http.MethodPut, r.API+path, strings.NewReader(string(content)))
	req.Header.Set("Authorization", "Token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()

	// a reader gets everything
	code, body := request(t, http.MethodGet, r.API+path, asAdmin(token), "")
	if code != 200 || len(body) != size {
		t.Fatalf("a reading client got %d bytes (%d)", len(body), code)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(r.API, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: kiln\r\nAuthorization: Token %s\r\n\r\n", path, token)
	br := bufio.NewReader(conn)
	status, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("download: %q", status)
	}
	// ... and then read nothing: the handler must give up by itself
	route := "code=200,method=get,route=GET /api/1.0/artifacts/{id}/files/{path...}"
	start := time.Now()
	waitFor(t, 15*time.Second, "the unread download's handler to end", func() bool {
		v, _ := scrape(t, r.Metrics)["kiln_http_requests_total"].get(route)
		return v == 2
	})
	t.Logf("handler ended %s after the client stopped reading", time.Since(start).Round(time.Millisecond))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := io.Copy(io.Discard, br)
	if n >= size {
		t.Fatalf("the unread download was not cut: the client still got all %d bytes", n)
	}
}
