package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

// sseEvent is one event as a browser's EventSource dispatches it, or one
// comment line.
type sseEvent struct {
	typ     string // the event type: "message" when the event names none
	id      string // the EventSource's last event ID when it was dispatched
	data    string
	comment string // a comment's text (": ping" gives "ping"); the fields above are empty then
}

// sseReader parses an event stream as the HTML standard's EventSource does
// (9.2.6, "Interpreting an event stream"): lines of fields, an event
// dispatched at each blank line if it has data, the last event ID kept
// from one event to the next.
type sseReader struct {
	r      *bufio.Reader
	lastID string
	retry  int // the last retry field, in milliseconds
}

// next returns the next event or comment.
func (s *sseReader) next() (sseEvent, error) {
	var typ, data string
	hasData := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if line != "" {
				err = fmt.Errorf("stream ended inside a line %q: %w", line, err)
			}
			return sseEvent{}, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case line == "":
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return sseEvent{typ: typ, id: s.lastID, data: strings.TrimSuffix(data, "\n")}, nil
		case line[0] == ':':
			return sseEvent{comment: strings.TrimPrefix(line[1:], " ")}, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			data += value + "\n"
			hasData = true
		case "id":
			if !strings.Contains(value, "\x00") {
				s.lastID = value
			}
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				s.retry = n
			}
		}
	}
}

// sseStream is an open event stream.
type sseStream struct {
	sseReader
	conn net.Conn
	resp *http.Response
}

// nextAny reads the next event or comment within five seconds.
func (s *sseStream) nextAny(t testing.TB) sseEvent {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	e, err := s.next()
	if err != nil {
		t.Fatalf("reading the event stream: %v", err)
	}
	return e
}

// event reads the next event, skipping comments.
func (s *sseStream) event(t testing.TB) sseEvent {
	t.Helper()
	for {
		if e := s.nextAny(t); e.comment == "" {
			return e
		}
	}
}

// expect reads the next event and checks its type, ID and data.
func (s *sseStream) expect(t testing.TB, typ, id, data string) {
	t.Helper()
	e := s.event(t)
	if e.typ != typ || e.id != id || e.data != data {
		t.Fatalf("got event %q id %q data %.60q, want %q id %q data %.60q", e.typ, e.id, e.data, typ, id, data)
	}
}

// expectClose reads the hub's last event, a "close" with code, and checks
// that the stream then ends.
func (s *sseStream) expectClose(t testing.TB, code int) {
	t.Helper()
	e := s.event(t)
	if e.typ != "close" || !strings.HasPrefix(e.data, strconv.Itoa(code)+" ") {
		t.Fatalf("got event %q data %.60q, want close %d", e.typ, e.data, code)
	}
	s.expectEnd(t)
}

// expectEnd checks that the stream ends within five seconds, with nothing
// more in it.
func (s *sseStream) expectEnd(t testing.TB) {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	e, err := s.next()
	if err == nil {
		t.Fatalf("got %+v, want the end of the stream", e)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading: %v, want the end of the stream", err)
	}
}

// sseClient is a net/http client whose connection sseStream can put
// deadlines on.
func sseClient(tlsConfig *tls.Config) (*http.Client, func() net.Conn) {
	var mu sync.Mutex
	var last net.Conn
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   tlsConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			mu.Lock()
			last = c
			mu.Unlock()
			return c, err
		},
	}
	return &http.Client{Transport: tr}, func() net.Conn { mu.Lock(); defer mu.Unlock(); return last }
}

// sseGet sends GET url with the given header lines ("Name: value"; Accept:
// text/event-stream unless one is given) from a net/http client and
// returns the response, and the stream when it is a 200.
func sseGet(t testing.TB, url string, tlsConfig *tls.Config, headers ...string) (*http.Response, *sseStream) {
	t.Helper()
	client, conn := sseClient(tlsConfig)
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(name, strings.TrimSpace(value))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		io.ReadAll(resp.Body)
		return resp, nil
	}
	s := &sseStream{sseReader: sseReader{r: bufio.NewReader(resp.Body)}, conn: conn(), resp: resp}
	checkSSEHead(t, s)
	return resp, s
}

// checkSSEHead checks the head of a stream's response and its first
// bytes: the retry hint, and nothing else yet.
func checkSSEHead(t testing.TB, s *sseStream) {
	t.Helper()
	h := s.resp.Header
	for name, want := range map[string]string{
		"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
		"Connection": "", "Content-Length": "", "Transfer-Encoding": "",
	} {
		if got := h.Get(name); got != want {
			t.Fatalf("%s: %q, want %q", name, got, want)
		}
	}
	if s.resp.ContentLength != -1 || len(s.resp.TransferEncoding) != 0 {
		t.Fatalf("Content-Length %d, Transfer-Encoding %q: want a body that runs to the close", s.resp.ContentLength, s.resp.TransferEncoding)
	}
	s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := s.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the retry hint: %v", err)
	}
	ms, ok := strings.CutPrefix(line, "retry: ")
	n, err := strconv.Atoi(strings.TrimSuffix(ms, "\n"))
	if !ok || err != nil || n < 1000 || n >= 3000 {
		t.Fatalf("first line %q, want a retry hint of 1 to 3 seconds", line)
	}
	if blank, err := s.r.ReadString('\n'); err != nil || blank != "\n" {
		t.Fatalf("after the retry hint: %q %v, want a blank line", blank, err)
	}
	s.retry = n
}

// sse opens an event stream on path and fails the test unless it is a 200.
func (h *hub) sse(t testing.TB, path string, headers ...string) *sseStream {
	t.Helper()
	resp, s := sseGet(t, "http://"+h.Addr()+path, nil, headers...)
	if s == nil {
		t.Fatalf("GET %s: %s, want 200", path, resp.Status)
	}
	return s
}

// sseStatus sends GET path and returns the status of the answer.
func (h *hub) sseStatus(t testing.TB, path string, headers ...string) int {
	t.Helper()
	resp, _ := sseGet(t, "http://"+h.Addr()+path, nil, headers...)
	return resp.StatusCode
}

// rawSSE opens an event stream by hand on a connection with SO_RCVBUF
// rcvbuf (0: the default), for a client that reads when the test says so.
func (h *hub) rawSSE(t testing.TB, rcvbuf int, path string, headers ...string) *sseStream {
	t.Helper()
	c := h.rawDial(t, rcvbuf)
	c.send(t, []byte(request("GET", path, append([]string{"Host: hub.test", "Accept: text/event-stream"}, headers...)...)))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, want 200", path, resp.Status)
	}
	s := &sseStream{sseReader: sseReader{r: bufio.NewReader(resp.Body)}, conn: c, resp: resp}
	checkSSEHead(t, s)
	return s
}

// position splits an event ID, EPOCH:OFFSET.
func ssePosition(t testing.TB, id string) (string, int) {
	t.Helper()
	epoch, off, ok := strings.Cut(id, ":")
	n, err := strconv.Atoi(off)
	if !ok || epoch == "" || err != nil {
		t.Fatalf("event ID %q is no position", id)
	}
	return epoch, n
}

func pos(epoch string, offset int) string { return epoch + ":" + strconv.Itoa(offset) }

// TestSSEMessages: every message reaches an EventSource subscriber as one
// event whose ID is its position: text as data lines (CR and CRLF arrive as
// LF, as EventSource reads them), binary as an event "binary" with the
// bytes in base64, and no payload can forge an event. A WebSocket
// subscriber beside it gets the same messages as published.
func TestSSEMessages(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	es := h.sse(t, "/sse/sub/test/news")
	ws := h.sub(t, "test", "news")
	if got := h.Stats().Subscribers.Load(); got != 2 {
		t.Fatalf("Stats.Subscribers = %d, want 2 (the EventSource one counts)", got)
	}
	big := make([]byte, 70000)
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	msgs := []struct {
		typ        int
		data, want string
	}{
		{websocket.TextMessage, "hello", "hello"},
		{websocket.TextMessage, "", ""},
		{websocket.TextMessage, "a\nb\r\nc\rd\n", "a\nb\nc\nd\n"},
		{websocket.TextMessage, "\n\n", "\n\n"},
		{websocket.TextMessage, " leading space", " leading space"},
		{websocket.TextMessage, "x\n\nevent: forged\nid: E:999\ndata: y\n\n", "x\n\nevent: forged\nid: E:999\ndata: y\n\n"},
		{websocket.TextMessage, "héllo wörld ✓", "héllo wörld ✓"},
		{websocket.BinaryMessage, "\x00\x01\xfe\xff\n\r", ""},
		{websocket.BinaryMessage, "", ""},
		{websocket.BinaryMessage, string(big), ""},
	}
	for _, m := range msgs {
		publish(t, p, m.typ, m.data)
	}
	var epoch string
	for i, m := range msgs {
		e := es.event(t)
		if i == 0 {
			epoch, _ = ssePosition(t, e.id)
		}
		if want := pos(epoch, i+1); e.id != want {
			t.Fatalf("message %d: id %q, want %q", i, e.id, want)
		}
		switch m.typ {
		case websocket.TextMessage:
			if e.typ != "message" || e.data != m.want {
				t.Fatalf("message %d: event %q data %.60q, want a message %.60q", i, e.typ, e.data, m.want)
			}
		case websocket.BinaryMessage:
			got, err := base64.StdEncoding.DecodeString(e.data)
			if e.typ != "binary" || err != nil || !bytes.Equal(got, []byte(m.data)) {
				t.Fatalf("message %d: event %q data %.60q (%v), want binary of %d bytes", i, e.typ, e.data, err, len(m.data))
			}
		}
		expect(t, ws, m.typ, []byte(m.data))
	}
}

// TestSSEResume: ?rewind, ?since and Last-Event-ID replay the kept messages
// as WebSocket subscribers get them, then the live ones; Last-Event-ID,
// which the browser sends when it reconnects to the URL it first opened,
// wins over the query.
func TestSSEResume(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	for i := 1; i <= 5; i++ {
		publish(t, p, websocket.TextMessage, "m"+strconv.Itoa(i))
	}
	first := h.sse(t, "/sse/sub/test/news?rewind=1")
	epoch, n := ssePosition(t, first.event(t).id)
	if n != 5 {
		t.Fatalf("?rewind=1 began at offset %d, want 5", n)
	}
	cases := []struct {
		path    string
		headers []string
		from    int // the first offset replayed; 6: none
	}{
		{"/sse/sub/test/news?rewind=2", nil, 4},
		{"/sse/sub/test/news?rewind=0", nil, 6},
		{"/sse/sub/test/news?rewind=99", nil, 1},
		{"/sse/sub/test/news", nil, 6},
		{"/sse/sub/test/news?since=" + pos(epoch, 2), nil, 3},
		{"/sse/sub/test/news?since=" + pos(epoch, 5), nil, 6},
		{"/sse/sub/test/news?since=" + pos(epoch, 50), nil, 6},
		{"/sse/sub/test/news", []string{"Last-Event-ID: " + pos(epoch, 3)}, 4},
		{"/sse/sub/test/news?since=" + pos(epoch, 1), []string{"Last-Event-ID: " + pos(epoch, 4)}, 5},
		{"/sse/sub/test/news?rewind=5", []string{"Last-Event-ID: " + pos(epoch, 4)}, 5},
		{"/sse/sub/test/news?rewind=5", []string{"Last-Event-ID: " + pos(epoch, 5)}, 6},
	}
	streams := make([]*sseStream, len(cases))
	for i, c := range cases {
		streams[i] = h.sse(t, c.path, c.headers...)
	}
	publish(t, p, websocket.TextMessage, "m6")
	for i, c := range cases {
		for off := c.from; off <= 6; off++ {
			e := streams[i].event(t)
			if e.typ != "message" || e.id != pos(epoch, off) || e.data != "m"+strconv.Itoa(off) {
				t.Fatalf("%s %v: got %+v, want m%d", c.path, c.headers, e, off)
			}
		}
	}
}

// TestSSEGapAndReset: a resume from a position whose successors are no
// longer kept gets an event "gap" naming them before the first message; a
// position of another epoch gets an event "reset" with the topic's epoch
// first. Neither has an ID: the stream's position stays the last message's.
func TestSSEGapAndReset(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistorySize = 3 })
	p := h.pub(t, "test", "news")
	for i := 1; i <= 10; i++ {
		publish(t, p, websocket.TextMessage, "m"+strconv.Itoa(i))
	}
	epoch, _ := ssePosition(t, h.sse(t, "/sse/sub/test/news?rewind=1").event(t).id)

	// (A browser would still hold the ID it resumed from; these readers
	// start with none.)
	gap := h.sse(t, "/sse/sub/test/news", "Last-Event-ID: "+pos(epoch, 2))
	gap.expect(t, "gap", "", pos(epoch, 3)+"-7")
	viaQuery := h.sse(t, "/sse/sub/test/news?since="+pos(epoch, 2))
	viaQuery.expect(t, "gap", "", pos(epoch, 3)+"-7")
	reset := h.sse(t, "/sse/sub/test/news", "Last-Event-ID: Other0epoch:5")
	reset.expect(t, "reset", "", epoch)
	reset.expect(t, "gap", "", pos(epoch, 1)+"-7")
	none := h.sse(t, "/sse/sub/test/news", "Last-Event-ID: "+pos(epoch, 7))
	publish(t, p, websocket.TextMessage, "m11")
	for _, s := range []*sseStream{gap, viaQuery, reset, none} {
		for off := 8; off <= 11; off++ {
			s.expect(t, "message", pos(epoch, off), "m"+strconv.Itoa(off))
		}
	}
}

// TestSSEReplayCutAndResumed: a replay larger than --max-backlog is sent
// as far as it fits, then the stream closes with 4000; a client that
// reconnects with Last-Event-ID, as a browser does, always makes progress
// and ends up with every message once, in order.
func TestSSEReplayCutAndResumed(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.MaxBacklog = 8 << 10 })
	p := h.pub(t, "test", "news")
	const n = 100
	body := strings.Repeat("x", 1000)
	for i := 1; i <= n; i++ {
		publish(t, p, websocket.TextMessage, strconv.Itoa(i)+body)
	}
	path, lastID, got, connections := "/sse/sub/test/news?rewind=100", "", 0, 0
	for got < n {
		connections++
		if connections > n {
			t.Fatalf("%d connections and only %d messages", connections, got)
		}
		var s *sseStream
		if lastID == "" {
			s = h.sse(t, path)
		} else {
			s = h.sse(t, path, "Last-Event-ID: "+lastID)
		}
		for got < n {
			e := s.event(t)
			if e.typ == "close" {
				if !strings.HasPrefix(e.data, "4000 ") {
					t.Fatalf("close %q, want 4000", e.data)
				}
				s.expectEnd(t)
				break
			}
			got++
			if _, off := ssePosition(t, e.id); off != got || e.data != strconv.Itoa(got)+body {
				t.Fatalf("after %d messages: got %s %.10q", got-1, e.id, e.data)
			}
			lastID = e.id
		}
	}
	if connections < 3 {
		t.Fatalf("%d connections for a replay of 100 KB over a backlog of 8 KiB", connections)
	}
	t.Logf("%d messages over %d connections", n, connections)
}

// TestSSEJoinWhilePublishing: EventSource subscribers that join with a
// rewind while messages flow get consecutive positions from their first
// to the last: nothing lost and nothing twice between replay and live.
func TestSSEJoinWhilePublishing(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	const total, subs = 2000, 12
	publish(t, p, websocket.TextMessage, "1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= total; i++ {
			if err := p.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
				t.Error(err)
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var wg sync.WaitGroup
	for k := range subs {
		s := h.sse(t, "/sse/sub/test/news?rewind="+strconv.Itoa(k*3))
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := 0
			for prev < total {
				s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				e, err := s.next()
				if err != nil {
					t.Errorf("subscriber %d after offset %d: %v", k, prev, err)
					return
				}
				if e.comment != "" {
					continue
				}
				_, off, _ := strings.Cut(e.id, ":")
				if n, _ := strconv.Atoi(off); e.typ != "message" || e.data != off || prev != 0 && n != prev+1 {
					t.Errorf("subscriber %d after offset %d: got %+v", k, prev, e)
					return
				} else {
					prev = n
				}
			}
		}()
		time.Sleep(3 * time.Millisecond)
	}
	<-done
	wg.Wait()
}

// TestSSEStatuses: what an EventSource request is refused with, before any
// 200, and what is served.
func TestSSEStatuses(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	if got := h.sseStatus(t, "/sse/sub/test/news"); got != http.StatusNotFound {
		t.Fatalf("topic not started: %d, want 404", got)
	}
	nothingCreated(t, h)
	p := h.pub(t, "test", "news")
	publish(t, p, websocket.TextMessage, "one")
	epoch, _ := ssePosition(t, h.sse(t, "/sse/sub/test/news?rewind=1").event(t).id)
	get := func(target string, headers ...string) string {
		return request("GET", target, append([]string{"Host: hub.test"}, headers...)...)
	}
	const es = "Accept: text/event-stream"
	cases := []struct {
		name, req string
		status    int
	}{
		{"Accept: text/html", get("/sse/sub/test/news", "Accept: text/html"), 406},
		{"Accept: application/json, text/plain", get("/sse/sub/test/news", "Accept: application/json, text/plain"), 406},
		{"event-stream weighed 0", get("/sse/sub/test/news", "Accept: text/event-stream;q=0, */*"), 406},
		{"text/* weighed 0", get("/sse/sub/test/news", "Accept: text/*;q=0.000, */*;q=1"), 406},
		{"Accept: image/*", get("/sse/sub/test/news", "Accept: image/*"), 406},
		{"malformed Last-Event-ID", get("/sse/sub/test/news", es, "Last-Event-ID: garbage"), 400},
		{"Last-Event-ID without offset", get("/sse/sub/test/news", es, "Last-Event-ID: "+epoch+":"), 400},
		{"Last-Event-ID with a leading zero", get("/sse/sub/test/news", es, "Last-Event-ID: "+epoch+":01"), 400},
		{"Last-Event-ID negative", get("/sse/sub/test/news", es, "Last-Event-ID: "+epoch+":-1"), 400},
		{"Last-Event-ID epoch too long", get("/sse/sub/test/news", es, "Last-Event-ID: "+strings.Repeat("e", 65)+":1"), 400},
		{"Last-Event-ID twice", get("/sse/sub/test/news", es, "Last-Event-ID: "+epoch+":1", "Last-Event-ID: "+epoch+":1"), 400},
		{"malformed since", get("/sse/sub/test/news?since=nope", es), 400},
		{"malformed since beside a good Last-Event-ID", get("/sse/sub/test/news?since=nope", es, "Last-Event-ID: "+epoch+":1"), 400},
		{"negative rewind", get("/sse/sub/test/news?rewind=-1", es), 400},
		{"rewind and since", get("/sse/sub/test/news?rewind=1&since="+epoch+":1", es), 400},
		{"a body", get("/sse/sub/test/news", es, "Content-Length: 2") + "{}", 400},
		{"no Host", request("GET", "/sse/sub/test/news", es), 400},
		{"bad path", get("/sse/sub/test/news/more", es), 400},
		{"bad percent-encoding", get("/sse/sub/test/%zz", es), 400},
		{"POST", request("POST", "/sse/sub/test/news", "Host: h", es), 405},
		{"HEAD", request("HEAD", "/sse/sub/test/news", "Host: h", es), 405},
		{"no publisher endpoint", get("/sse/pub/"+h.key+"/test/news", es), 404},
		{"topic not started", get("/sse/sub/test/other", es), 404},
		{"resume of a topic not started", get("/sse/sub/test/other", es, "Last-Event-ID: "+epoch+":1"), 404},
		{"origin not allowed", get("/sse/sub/test/news", es, "Origin: https://evil.example"), 403},
	}
	refused := h.Stats().Refused.Load()
	for _, c := range cases {
		if resp := h.roundTrip(t, c.req); resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.status)
		}
	}
	if got := h.Stats().Refused.Load() - refused; got != int64(len(cases)) {
		t.Errorf("Stats.Refused counted %d refusals, want %d", got, len(cases))
	}

	// Served: no Accept, */*, text/*, several Accept headers, parameters.
	for _, accept := range [][]string{
		{"Accept:"}, {"Accept: */*"}, {"Accept: text/*"}, {"Accept: text/html, */*;q=0.1"},
		{"Accept: TEXT/Event-Stream; charset=utf-8"}, {"Accept: text/event-stream;q=0.5, text/*;q=0"},
		{"Accept: text/html", "Accept: text/event-stream"},
	} {
		s := h.rawSSE(t, 0, "/sse/sub/test/news?rewind=1", accept...)
		s.expect(t, "message", pos(epoch, 1), "one")
	}
	// A browser's cross-origin EventSource needs its origin allowed.
	s := h.sse(t, "/sse/sub/test/news", "Origin: https://app.example")
	if got, vary := s.resp.Header.Get("Access-Control-Allow-Origin"), s.resp.Header.Get("Vary"); got != "https://app.example" || vary != "Origin" {
		t.Fatalf("Access-Control-Allow-Origin %q, Vary %q: want the origin allowed", got, vary)
	}
	if got := h.sse(t, "/sse/sub/test/news").resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("Access-Control-Allow-Origin %q without an Origin", got)
	}
}

// TestSSESlowConsumer: an EventSource subscriber that does not read is cut
// once its backlog passes --max-backlog, with a last event "close" 4000
// behind whole events, and the connection ends as soon as the client has
// read them; the WebSocket and EventSource subscribers beside it get
// everything. (--close-timeout is long here so that the close event waits
// for the test to read it.)
func TestSSESlowConsumer(t *testing.T) {
	const (
		size  = 1024
		total = 8 << 20 / size
		batch = 16
	)
	h := startHub(t, func(c *server.Config) {
		c.MaxBacklog = 64 << 10
		c.CloseTimeout = time.Minute
	})
	p := h.pub(t, "test", "news")
	healthyWS := h.sub(t, "test", "news")
	healthySSE := h.sse(t, "/sse/sub/test/news")
	slow := h.rawSSE(t, 4096, "/sse/sub/test/news")

	message := func(i int) string { return fmt.Sprintf("%08d", i) + strings.Repeat("y", size-8) }
	for i := 0; i < total; i += batch {
		for j := i; j < i+batch; j++ {
			publish(t, p, websocket.TextMessage, message(j))
		}
		for j := i; j < i+batch; j++ {
			expect(t, healthyWS, websocket.TextMessage, []byte(message(j)))
			if e := healthySSE.event(t); e.data != message(j) {
				t.Fatalf("healthy EventSource subscriber, message %d: %.20q", j, e.data)
			}
		}
	}
	waitFor(t, "SlowConsumers to count the slow subscriber", func() bool { return h.Stats().SlowConsumers.Load() == 1 })
	got := 0
	for {
		e := slow.event(t)
		if e.typ == "close" {
			if !strings.HasPrefix(e.data, "4000 slow consumer") {
				t.Fatalf("after %d messages: close %q, want 4000", got, e.data)
			}
			slow.expectEnd(t)
			break
		}
		if e.data != message(got) {
			t.Fatalf("slow subscriber, message %d: %.20q", got, e.data)
		}
		got++
	}
	if got >= total {
		t.Fatalf("the slow subscriber got all %d messages", got)
	}
	t.Logf("the slow subscriber got %d of %d messages", got, total)
	waitFor(t, "the slow subscriber to leave", func() bool { return h.Stats().Subscribers.Load() == 2 })
}

// TestSSEKeepalive: a quiet stream gets a comment line every
// --ping-interval; a busy one gets none.
func TestSSEKeepalive(t *testing.T) {
	const interval = 300 * time.Millisecond
	h := startHub(t, func(c *server.Config) { c.PingInterval = interval })
	p := h.pub(t, "test", "news")
	s := h.sse(t, "/sse/sub/test/news")
	start := time.Now()
	if e := s.nextAny(t); e.comment != "ping" {
		t.Fatalf("got %+v, want the comment ping", e)
	}
	if d := time.Since(start); d < interval/2 {
		t.Fatalf("ping after %v, want about %v", d, interval)
	}
	if e := s.nextAny(t); e.comment != "ping" {
		t.Fatalf("got %+v, want another ping", e)
	}

	// Busy for four intervals: no ping.
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			p.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i)))
		}
	}()
	for end := time.Now().Add(4 * interval); time.Now().Before(end); {
		if e := s.nextAny(t); e.comment != "" {
			close(stop)
			t.Fatalf("comment %q while messages flow", e.comment)
		}
	}
	close(stop)
	for {
		if e := s.nextAny(t); e.comment == "ping" {
			break
		}
	}
}

// TestSSEStalledReader: a client that stopped reading, on a topic gone
// quiet, cannot take its keepalive: it is closed with 4003 once
// --pong-timeout has passed, as a WebSocket that does not answer a ping.
func TestSSEStalledReader(t *testing.T) {
	h := startHub(t, func(c *server.Config) {
		c.MaxBacklog = 16 << 20
		c.PingInterval = 200 * time.Millisecond
		c.PongTimeout = 300 * time.Millisecond
	})
	p := h.pub(t, "test", "news")
	s := h.rawSSE(t, 4096, "/sse/sub/test/news")
	msg := strings.Repeat("z", 64<<10)
	const n = 64 // 4 MiB: more than the kernel's buffers hold
	for range n {
		publish(t, p, websocket.TextMessage, msg)
	}
	// Stall until the hub gives up, then read what it sent.
	waitFor(t, "the stalled subscriber to be closed", func() bool { return h.Stats().Subscribers.Load() == 0 })
	for i := range n {
		if e := s.event(t); e.data != msg {
			t.Fatalf("message %d: %.20q", i, e.data)
		}
	}
	s.expectClose(t, 4003)
}

// TestSSETopicEnds: when a topic's grace period runs out its EventSource
// subscribers get a last event "close" 4001 and the end of the stream; a
// browser coming back then gets 404, which stops its EventSource.
func TestSSETopicEnds(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.GracePeriod = 100 * time.Millisecond })
	p := h.pub(t, "test", "news")
	s := h.sse(t, "/sse/sub/test/news")
	publish(t, p, websocket.TextMessage, "last")
	leave(t, p)
	e := s.event(t)
	if e.data != "last" {
		t.Fatalf("got %+v, want the last message", e)
	}
	s.expectClose(t, 4001)
	if got := h.sseStatus(t, "/sse/sub/test/news", "Last-Event-ID: "+e.id); got != http.StatusNotFound {
		t.Fatalf("after the topic ended: %d, want 404", got)
	}
	if got := h.Stats().Subscribers.Load(); got != 0 {
		t.Fatalf("Stats.Subscribers = %d, want 0", got)
	}
}

// TestSSEDrain: at shutdown an EventSource subscriber gets a last event
// "close" 1001, and its connection ends at once, without waiting for an
// answer it cannot give. While the hub drains, a new EventSource request
// gets a stream that says so and ends (a 503 would stop a browser's
// EventSource for good); a WebSocket request gets 503.
func TestSSEDrain(t *testing.T) {
	const closeTimeout = 3 * time.Second
	h := startHub(t, func(c *server.Config) { c.CloseTimeout = closeTimeout })
	h.pub(t, "test", "news")
	s := h.sse(t, "/sse/sub/test/news")
	silent := h.rawSub(t, "test", "news") // holds the drain up: it never answers the close frame

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- h.Shutdown(context.Background()) }()
	s.expectClose(t, 1001)
	if d := time.Since(start); d > closeTimeout/2 {
		t.Fatalf("the stream ended %v after Shutdown, want it at once", d)
	}
	silent.expectClose(t, 1001)

	late := h.rawSSE(t, 0, "/sse/sub/test/news")
	late.expectClose(t, 1001)
	if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusServiceUnavailable {
		t.Fatalf("WebSocket handshake while draining: %d, want 503", got)
	}
	if got := h.roundTrip(t, request("GET", "/sse/sub/test/news", "Host: h", "Accept: text/html")).StatusCode; got != http.StatusServiceUnavailable {
		t.Fatalf("a request for no event stream while draining: %d, want 503", got)
	}
	silent.closeHandshake(t, 1000)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestSSEInput: what an EventSource client sends after its request is
// dropped, within --subscriber-input-limit; past it the stream closes with
// 1008.
func TestSSEInput(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscriberInputLimit = 1024 })
	p := h.pub(t, "test", "news")
	s := h.rawSSE(t, 0, "/sse/sub/test/news")
	raw := s.conn.(*rawClient)
	raw.send(t, []byte("GET /again HTTP/1.1\r\n\r\nnoise"))
	publish(t, p, websocket.TextMessage, "still here")
	if e := s.event(t); e.data != "still here" {
		t.Fatalf("got %+v, want the message", e)
	}
	raw.send(t, bytes.Repeat([]byte("x"), 2000))
	s.expectClose(t, 1008)
	if got := h.Stats().SubscriberFloods.Load(); got != 1 {
		t.Fatalf("Stats.SubscriberFloods = %d, want 1", got)
	}
}

// TestSSEMetrics: EventSource subscribers count as subscribers; a refused
// Accept has its reason; their disconnects are counted by the code of
// their close event.
func TestSSEMetrics(t *testing.T) {
	h := startMetricsHub(t, func(c *server.Config) { c.GracePeriod = 50 * time.Millisecond })
	before := h.scrape(t)
	p := h.pub(t, "test", "news")
	s := h.sse(t, "/sse/sub/test/news")
	h.sseStatus(t, "/sse/sub/test/news", "Accept: text/html")
	during := h.scrape(t)
	delta{before, during}.expect(t, "subscribed", []check{
		{"wspubsub_connections", []string{"role", "subscriber"}, 1, true},
		{"wspubsub_connections_accepted_total", []string{"role", "subscriber"}, 1, false},
		{"wspubsub_handshakes_refused_total", []string{"reason", "not_acceptable"}, 1, false},
	})
	leave(t, p)
	s.expectClose(t, 4001)
	after := h.scrapeUntil(t, "the subscriber's disconnect", func(s scrape) bool {
		v, _ := s.find("wspubsub_disconnects_total", "reason", "topic_closed")
		return v == 1
	})
	delta{during, after}.expect(t, "topic ended", []check{
		{"wspubsub_connections", []string{"role", "subscriber"}, 0, true},
	})
}

// TestSSEOverTLS: the stream is served on wss:// hubs' https:// too.
func TestSSEOverTLS(t *testing.T) {
	cert := newTestCert(t, 1)
	h := startTLSHub(t, cert)
	p := h.pub(t, "news")
	publish(t, p, websocket.BinaryMessage, "\x00tls")
	resp, s := sseGet(t, "https://"+h.Addr()+"/sse/sub/test/news?rewind=1", &tls.Config{RootCAs: h.roots, ServerName: "127.0.0.1"})
	if s == nil {
		t.Fatalf("GET over TLS: %s", resp.Status)
	}
	e := s.event(t)
	if got, _ := base64.StdEncoding.DecodeString(e.data); e.typ != "binary" || string(got) != "\x00tls" {
		t.Fatalf("got %+v", e)
	}
}
