package cluster_test

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// sseEvent is one event of an event stream.
type sseEvent struct{ typ, id, data string }

// sseStream reads an event stream as a browser's EventSource does, enough
// for these tests: comments and the retry hint are skipped.
type sseStream struct {
	conn net.Conn
	r    *bufio.Reader
}

// sse opens an event stream on n by hand (GET path with the header lines
// given) and returns it, or the status of the refusal.
func (n *node) sse(t testing.TB, path string, headers ...string) (*sseStream, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: hub.test\r\nAccept: text/event-stream\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	return &sseStream{conn: c, r: bufio.NewReader(resp.Body)}, http.StatusOK
}

// event reads the next event within ten seconds.
func (s *sseStream) event(t testing.TB) sseEvent {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var e sseEvent
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if data == nil {
				e = sseEvent{}
				continue
			}
			if e.typ == "" {
				e.typ = "message"
			}
			e.data = strings.Join(data, "\n")
			return e
		}
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "event":
			e.typ = value
		case "id":
			e.id = value
		case "data":
			data = append(data, value)
		}
	}
}

// TestSSEAcrossNodes: an EventSource subscriber on a node without the
// topic's publisher gets its messages with the positions the owner gave
// them, and resumes with Last-Event-ID on another node without a gap or a
// duplicate.
func TestSSEAcrossNodes(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	if _, status := b.sse(t, "/sse/sub/test/news"); status != http.StatusNotFound {
		t.Fatalf("EventSource subscriber to a topic started nowhere: %d, want 404", status)
	}
	p := a.pub(t, "news")
	// b keeps a subscriber throughout: a node keeps the history of the
	// topics it has subscribers of (it gets no messages otherwise).
	b.sub(t, "news")
	onB, _ := b.sse(t, "/sse/sub/test/news")
	if onB == nil {
		t.Fatal("no stream on b")
	}
	for i := 1; i <= 5; i++ {
		publish(t, p, websocket.TextMessage, []byte("m"+strconv.Itoa(i)))
	}
	var last sseEvent
	for i := 1; i <= 5; i++ {
		last = onB.event(t)
		epoch, off, _ := strings.Cut(last.id, ":")
		if epoch == "" || off != strconv.Itoa(i) || last.data != "m"+strconv.Itoa(i) {
			t.Fatalf("on b, message %d: %+v", i, last)
		}
	}
	onB.conn.Close()
	for i := 6; i <= 8; i++ {
		publish(t, p, websocket.TextMessage, []byte("m"+strconv.Itoa(i)))
	}
	onA, status := a.sse(t, "/sse/sub/test/news", "Last-Event-ID: "+last.id)
	if onA == nil {
		t.Fatalf("resuming on a: %d", status)
	}
	epoch, _, _ := strings.Cut(last.id, ":")
	for i := 6; i <= 9; i++ {
		if i == 9 {
			publish(t, p, websocket.TextMessage, []byte("m9"))
		}
		if last = onA.event(t); last.id != epoch+":"+strconv.Itoa(i) || last.data != "m"+strconv.Itoa(i) {
			t.Fatalf("resumed on a, message %d: %+v", i, last)
		}
	}
	// And back to b, which kept what the owner sent it.
	onA.conn.Close()
	publish(t, p, websocket.TextMessage, []byte("m10"))
	waitFor(t, "b to keep message 10", func() bool {
		s, _ := b.sse(t, "/sse/sub/test/news?rewind=1") // 9 until 10 is there
		return s != nil && s.event(t).id == epoch+":10"
	})
	again, _ := b.sse(t, "/sse/sub/test/news", "Last-Event-ID: "+last.id)
	if again == nil {
		t.Fatal("no stream resuming on b")
	}
	if e := again.event(t); e.id != epoch+":10" || e.data != "m10" {
		t.Fatalf("resumed on b: %+v, want message 10", e)
	}
}
