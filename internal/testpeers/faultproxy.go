package testpeers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what a FaultProxy does to the traffic it relays. The zero value
// relays faithfully.
type Fault struct {
	// Down closes every open connection and every new one at once, as a
	// peer that crashed or whose network went away.
	Down bool
	// Status, when not 0, answers every new request with this HTTP status
	// and an S3 error document (SlowDown for 503, InternalError
	// otherwise) instead of relaying it. Plain HTTP only.
	Status int
	// BytesPerSecond, when not 0, limits each direction of each
	// connection to this rate: a slow peer.
	BytesPerSecond int
	// CutAfter, when not 0, closes a connection once it has relayed this
	// many bytes from the client: a connection cut in the middle of an
	// upload.
	CutAfter int64
}

// FaultProxy is a TCP relay on loopback in front of a peer (the test S3
// server), whose faults a test switches on and off while clients use it.
type FaultProxy struct {
	URL    string // scheme://127.0.0.1:PORT, the scheme of the target
	target string // host:port
	ln     net.Listener
	fault  atomic.Pointer[Fault]

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	// Connections counts the connections accepted so far.
	Connections atomic.Int64
	// Relayed counts the bytes relayed from clients to the target.
	Relayed atomic.Int64
}

// NewFaultProxy relays to targetURL (http://host:port or https://…) until
// the test ends.
func NewFaultProxy(t testing.TB, targetURL string) *FaultProxy {
	t.Helper()
	scheme, host, ok := cutScheme(targetURL)
	if !ok {
		t.Fatalf("fault proxy: %q is not a URL", targetURL)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{URL: scheme + "://" + ln.Addr().String(), target: host, ln: ln, conns: map[net.Conn]struct{}{}}
	p.fault.Store(&Fault{})
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func cutScheme(u string) (scheme, host string, ok bool) {
	for _, s := range []string{"http", "https"} {
		if h, found := strings.CutPrefix(u, s+"://"); found {
			return s, h, h != ""
		}
	}
	return "", "", false
}

// Set switches to fault f. Down and Status also cut the open
// connections, so that kept-alive ones meet the fault too.
func (p *FaultProxy) Set(f Fault) {
	p.fault.Store(&f)
	if f.Down || f.Status != 0 {
		p.closeAll()
	}
}

func (p *FaultProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *FaultProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *FaultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.Connections.Add(1)
		f := *p.fault.Load()
		if f.Down {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c, f)
		}()
	}
}

func (p *FaultProxy) relay(client net.Conn, f Fault) {
	p.track(client, true)
	defer p.track(client, false)
	defer client.Close()
	if f.Status != 0 {
		answerError(client, f.Status)
		return
	}
	upstream, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	p.track(upstream, true)
	defer p.track(upstream, false)
	defer upstream.Close()
	done := make(chan struct{}, 2)
	go func() { p.pipe(upstream, client, true); upstream.Close(); done <- struct{}{} }()
	go func() { p.pipe(client, upstream, false); client.Close(); done <- struct{}{} }()
	<-done
	<-done
}

// pipe relays src to dst in small chunks, applying the fault in force at
// each chunk, so that a test can slow down or cut a transfer under way.
func (p *FaultProxy) pipe(dst io.Writer, src io.Reader, fromClient bool) {
	buf := make([]byte, 16<<10)
	var sent int64
	for {
		f := *p.fault.Load()
		chunk := buf
		if f.BytesPerSecond > 0 && f.BytesPerSecond/10 < len(chunk) {
			chunk = buf[:max(1, f.BytesPerSecond/10)]
		}
		if fromClient && f.CutAfter > 0 {
			if sent >= f.CutAfter {
				return
			}
			if left := f.CutAfter - sent; left < int64(len(chunk)) {
				chunk = chunk[:left]
			}
		}
		n, err := src.Read(chunk)
		if n > 0 {
			if f.BytesPerSecond > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(f.BytesPerSecond))
			}
			if p.fault.Load().Down {
				return
			}
			if _, werr := dst.Write(chunk[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if fromClient {
				p.Relayed.Add(int64(n))
			}
		}
		if err != nil {
			return
		}
	}
}

// answerError reads one request's head and answers it with an S3 error.
func answerError(c net.Conn, status int) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil && !errors.Is(err, io.EOF) {
		return
	}
	if req != nil {
		req.Body.Close()
	}
	code := "InternalError"
	if status == http.StatusServiceUnavailable {
		code = "SlowDown"
	}
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test's fault proxy</Message><RequestId>fault</RequestId></Error>`, code)
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}
