package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// position is an HTTP publish's 200 answer.
type position struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// apiPath is the HTTP publish endpoint of domain/topic.
func apiPath(domain, topic string) string { return "/api/pub/" + domain + "/" + topic }

// httpClient is a Go HTTP client with keep-alive that counts the
// connections it opens.
type httpClient struct {
	*http.Client
	dials atomic.Int64
}

func newHTTPClient() *httpClient {
	c := &httpClient{}
	d := net.Dialer{Timeout: 5 * time.Second}
	c.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 100,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
	return c
}

// post publishes body to path with key (none if ""), and returns the
// answer with its body read.
func (h *hub) post(t testing.TB, c *httpClient, path, key, contentType string, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+h.Addr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the body: %v", path, err)
	}
	return resp, string(b)
}

// publish posts one message and returns its position, failing the test
// unless it is published.
func (h *hub) publish(t testing.TB, c *httpClient, topic, contentType string, body []byte) position {
	t.Helper()
	resp, text := h.post(t, c, apiPath("test", topic), h.key, contentType, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %q, want 200", topic, resp.Status, text)
	}
	return parsePosition(t, resp, text)
}

func parsePosition(t testing.TB, resp *http.Response, text string) position {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var p position
	if err := json.Unmarshal([]byte(text), &p); err != nil || p.Epoch == "" || p.Offset == 0 {
		t.Fatalf("answer %q: %v, want {\"epoch\":...,\"offset\":N}", text, err)
	}
	return p
}

// metaMessage reads one message of a wspubsub.meta subscriber and splits
// its header off.
func metaMessage(t testing.TB, c *websocket.Conn) (typ int, epoch string, offset uint64, payload []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	hdr, payload, ok := bytes.Cut(data, []byte("\n\n"))
	id, found := strings.CutPrefix(string(hdr), "id: ")
	if !ok || !found {
		t.Fatalf("meta message %.60q has no id header", data)
	}
	e, o, _ := strings.Cut(id, ":")
	n, err := strconv.ParseUint(o, 10, 64)
	if err != nil {
		t.Fatalf("meta message id %q: %v", id, err)
	}
	return typ, e, n, payload
}

// TestHTTPPublishReachesSubscribers: an HTTP publish starts its topic, and
// every message reaches plain and wspubsub.meta subscribers with the frame
// type its Content-Type calls for, its bytes unchanged, and (for meta) the
// position the answer gave. History has them too.
func TestHTTPPublishReachesSubscribers(t *testing.T) {
	h := startHub(t)
	c := newHTTPClient()
	first := h.publish(t, c, "news", "text/plain", []byte("first"))
	if first.Offset != 1 {
		t.Fatalf("first message at offset %d, want 1", first.Offset)
	}
	plain := h.sub(t, "test", "news")
	meta := h.metaSub(t, "test", "news", "")
	rewound := h.sub(t, "test", "news?rewind=1")
	expect(t, rewound, websocket.TextMessage, []byte("first"))

	msgs := []struct {
		contentType string
		typ         int
		body        []byte
	}{
		{"text/plain; charset=utf-8", websocket.TextMessage, []byte("héllo")},
		{"application/json", websocket.TextMessage, []byte(`{"a":[1,2]}`)},
		{"Application/JSON; charset=\"UTF-8\"", websocket.TextMessage, []byte(`"x"`)},
		{"text/csv", websocket.TextMessage, []byte("a,b\n1,2\n")},
		{"", websocket.BinaryMessage, []byte{0, 1, 2, 0xff}},
		{"application/octet-stream", websocket.BinaryMessage, []byte{0xc3, 0x28}}, // invalid UTF-8 is fine in binary
		{"image/png", websocket.BinaryMessage, bytes.Repeat([]byte{0x89}, 70000)},
		{"text/plain", websocket.TextMessage, []byte{}},
		{"application/cbor", websocket.BinaryMessage, []byte{}},
	}
	var positions []position
	for _, m := range msgs {
		positions = append(positions, h.publish(t, c, "news", m.contentType, m.body))
	}
	for i, m := range msgs {
		p := positions[i]
		if p.Epoch != first.Epoch || p.Offset != uint64(i+2) {
			t.Fatalf("message %d at %s:%d, want %s:%d", i, p.Epoch, p.Offset, first.Epoch, i+2)
		}
		expect(t, plain, m.typ, m.body)
		expect(t, rewound, m.typ, m.body)
		typ, epoch, offset, payload := metaMessage(t, meta)
		if typ != m.typ || epoch != p.Epoch || offset != p.Offset || !bytes.Equal(payload, m.body) {
			t.Fatalf("meta subscriber got type %d id %s:%d %.40q, want type %d id %s:%d %.40q",
				typ, epoch, offset, payload, m.typ, p.Epoch, p.Offset, m.body)
		}
	}
	if n := c.dials.Load(); n != 1 {
		t.Errorf("the client opened %d connections for %d publishes, want 1 (keep-alive)", n, len(msgs)+1)
	}
}

// TestHTTPPublishStatuses: every refusal has its status, its headers and a
// plain-text reason; refusals answered before the body is read close the
// connection.
func TestHTTPPublishStatuses(t *testing.T) {
	const max = 1000
	h := startHub(t, func(c *server.Config) {
		c.MaxMessageSize = max
		c.AllowedOrigins = []string{"https://app.example"}
	})
	otherKey, err := h.keys.Add(context.Background(), "other", "o")
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	auth := "Authorization: Bearer " + h.key
	body := func(ct, b string) []string {
		return []string{"Host: hub.test", auth, "Content-Type: " + ct, "Content-Length: " + strconv.Itoa(len(b))}
	}
	for _, tc := range []struct {
		name    string
		req     string
		status  int
		header  string // a header the answer must have, "Name: value"
		reason  string // part of the reason
		keeps   bool   // the connection stays open
		sendAll bool   // the body goes with the head (else the head alone)
	}{
		{name: "bad path", req: request("POST", "/api/pub/test", body("text/plain", "x")...) + "x", status: 400, reason: "want /api/pub/{Domain}/{Topic}"},
		{name: "extra segment", req: request("POST", "/api/pub/test/a/b", body("text/plain", "x")...) + "x", status: 400, reason: "bad path"},
		{name: "bad escape", req: request("POST", "/api/pub/test/%zz", body("text/plain", "x")...) + "x", status: 400, reason: "percent-encoding"},
		{name: "no host", req: request("POST", "/api/pub/test/a", auth, "Content-Length: 1") + "x", status: 400, reason: "Host"},
		{name: "invalid UTF-8", req: request("POST", "/api/pub/test/a", body("text/plain", "\xc3\x28")...) + "\xc3\x28", status: 400, reason: "UTF-8", keeps: true},
		{name: "malformed head", req: "POST /api/pub/test/a HTTP/1.1\r\nHost hub.test\r\n\r\n", status: 400, reason: "malformed"},
		{name: "malformed length", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Content-Length: 1x"), status: 400, reason: "malformed"},
		{name: "no key", req: request("POST", "/api/pub/test/a", "Host: hub.test", "Content-Length: 1") + "x", status: 401, header: "Www-Authenticate: Bearer", reason: "missing API key"},
		{name: "basic auth", req: request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Basic "+h.key, "Content-Length: 1") + "x", status: 401, header: "Www-Authenticate: Bearer"},
		{name: "malformed key", req: request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer wsp_nope", "Content-Length: 1") + "x", status: 401, reason: "refused"},
		{name: "unknown key", req: request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer "+unknown, "Content-Length: 1") + "x", status: 401, header: "Www-Authenticate: Bearer", reason: "refused", keeps: true},
		{name: "other domain's key", req: request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer "+otherKey, "Content-Length: 1") + "x", status: 401, reason: "refused", keeps: true},
		{name: "origin", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Origin: https://evil.example", "Content-Length: 1") + "x", status: 403, reason: "origin"},
		{name: "GET", req: request("GET", "/api/pub/test/a", "Host: hub.test", auth), status: 405, header: "Allow: POST"},
		{name: "PUT", req: request("PUT", "/api/pub/test/a", body("text/plain", "x")...) + "x", status: 405, header: "Allow: POST"},
		{name: "websocket upgrade", req: request("GET", "/api/pub/test/a", upgradeHeaders(auth)...), status: 405, header: "Allow: POST"},
		{name: "no length", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Content-Type: text/plain"), status: 411, reason: "Content-Length"},
		{name: "chunked", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Transfer-Encoding: chunked") + "1\r\nx\r\n0\r\n\r\n", status: 411, reason: "chunked"},
		{name: "chunked and length", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Transfer-Encoding: chunked", "Content-Length: 1") + "1\r\nx\r\n0\r\n\r\n", status: 411, reason: "chunked"},
		{name: "too large", req: request("POST", "/api/pub/test/a", "Host: hub.test", auth, "Content-Length: "+strconv.Itoa(max+1)), status: 413, reason: "--max-message-size"},
		{name: "form", req: request("POST", "/api/pub/test/a", body("application/x-www-form-urlencoded", "a=b")...) + "a=b", status: 415, reason: "curl -d"},
		{name: "multipart", req: request("POST", "/api/pub/test/a", body("multipart/form-data; boundary=x", "--x--")...) + "--x--", status: 415, reason: "multipart"},
		{name: "latin-1 text", req: request("POST", "/api/pub/test/a", body("text/plain; charset=iso-8859-1", "x")...) + "x", status: 415, reason: "UTF-8"},
		{name: "not a media type", req: request("POST", "/api/pub/test/a", body("plain", "x")...) + "x", status: 415, reason: "not a media type"},
		{name: "published", req: request("POST", "/api/pub/test/a", body("text/plain", "x")...) + "x", status: 200, header: "Content-Type: application/json", keeps: true},
		{name: "published, then closed", req: request("POST", "/api/pub/test/a", append(body("text/plain", "x"), "Connection: close")...) + "x", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each closing answer lingers up to a second
			c := h.rawDial(t, 0)
			c.send(t, []byte(tc.req))
			resp, text := c.response(t)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %q, want %d", resp.Status, text, tc.status)
			}
			if tc.header != "" {
				name, value, _ := strings.Cut(tc.header, ": ")
				if got := resp.Header.Get(name); got != value {
					t.Errorf("%s: %q, want %q", name, got, value)
				}
			}
			if tc.status != 200 {
				if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" || !strings.HasSuffix(text, "\n") || !strings.Contains(text, tc.reason) {
					t.Errorf("reason %q (%s), want plain text with %q", text, ct, tc.reason)
				}
			}
			if !tc.keeps {
				if !resp.Close {
					t.Errorf("no Connection: close on an answer that ends the connection")
				}
				c.expectEnd(t)
				return
			}
			if resp.Close {
				t.Fatalf("Connection: close on an answer that keeps the connection")
			}
			// The connection still serves.
			c.send(t, []byte(request("POST", "/api/pub/test/a", body("application/json", "1")...)+"1"))
			if resp, text := c.response(t); resp.StatusCode != 200 {
				t.Fatalf("the next request on the connection: %s %q, want 200", resp.Status, text)
			}
		})
	}
}

// TestHTTPPublishTooLargeBeforeBody: a body over --max-message-size is
// refused with 413 as soon as the head is in, while the client is still
// sending it, and the client reads the answer.
func TestHTTPPublishTooLargeBeforeBody(t *testing.T) {
	const max = 64 << 10
	h := startHub(t, func(c *server.Config) { c.MaxMessageSize = max })
	c := h.rawDial(t, 0)
	c.send(t, []byte(request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer "+h.key, "Content-Length: "+strconv.Itoa(16<<20))))
	resp, text := c.response(t)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%s %q, want 413", resp.Status, text)
	}
	// A client that sends its body anyway is not reset before the hub
	// closes: it reads the answer above, then the end.
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.Write(make([]byte, 256<<10))
	c.expectEnd(t)
	// Expect: 100-continue: the hub answers 413 instead of 100, and 100
	// before a body it will read.
	c = h.rawDial(t, 0)
	c.send(t, []byte(request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer "+h.key, "Expect: 100-continue", "Content-Length: "+strconv.Itoa(max+1))))
	if resp, _ := c.response(t); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%s, want 413", resp.Status)
	}
	c = h.rawDial(t, 0)
	c.send(t, []byte(request("POST", "/api/pub/test/a", "Host: hub.test", "Authorization: Bearer "+h.key, "Expect: 100-continue", "Content-Length: 5")))
	if resp, _ := c.response(t); resp.StatusCode != http.StatusContinue {
		t.Fatalf("%s, want 100 Continue", resp.Status)
	}
	c.send(t, []byte("hello"))
	if resp, text := c.response(t); resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %q, want 200", resp.Status, text)
	}
}

// flakyKeys is a key store that can be made to fail or to block.
type flakyKeys struct {
	server.KeyChecker
	down  atomic.Bool
	block chan struct{} // while non-nil and open, checks wait on it
	mu    sync.Mutex
	in    atomic.Int64 // checks waiting
}

func (f *flakyKeys) Check(ctx context.Context, key, domain string) error {
	if f.down.Load() {
		return errors.New("store down")
	}
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		f.in.Add(1)
		defer f.in.Add(-1)
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.KeyChecker.Check(ctx, key, domain)
}

// TestHTTPPublishMirrorsWebSocketStatuses: where a WebSocket publisher's
// handshake is refused for the key store, the key checks in flight, the
// domain's topic count or the drain, an HTTP publish gets the same status.
func TestHTTPPublishMirrorsWebSocketStatuses(t *testing.T) {
	var flaky *flakyKeys
	h := startHub(t, func(c *server.Config) {
		flaky = &flakyKeys{KeyChecker: c.Keys}
		c.Keys = flaky
		c.MaxPendingKeyChecks = 1
		c.MaxTopicsPerDomain = 3
		c.DrainPeriod = 10 * time.Second // the drain waits on a subscriber
	})
	c := newHTTPClient()
	both := func(what string, topic string, want int) {
		t.Helper()
		if got := h.refused(t, "/ws/pub/"+h.key+"/test/"+topic, nil); got != want {
			t.Errorf("%s: WebSocket publisher got %d, want %d", what, got, want)
		}
		resp, text := h.post(t, c, apiPath("test", topic), h.key, "text/plain", []byte("m"))
		if resp.StatusCode != want {
			t.Errorf("%s: HTTP publish got %s %q, want %d", what, resp.Status, text, want)
		}
	}

	flaky.down.Store(true)
	both("key store down", "a", http.StatusServiceUnavailable)
	flaky.down.Store(false)

	// One key check in flight (an HTTP publish waiting on the store) takes
	// the only slot.
	flaky.mu.Lock()
	flaky.block = make(chan struct{})
	flaky.mu.Unlock()
	waiting := make(chan int)
	go func() {
		resp, _ := h.post(t, newHTTPClient(), apiPath("test", "a"), h.key, "text/plain", []byte("waits"))
		waiting <- resp.StatusCode
	}()
	waitFor(t, "a key check to wait on the store", func() bool { return flaky.in.Load() == 1 })
	both("key checks busy", "a", http.StatusServiceUnavailable)
	flaky.mu.Lock()
	close(flaky.block)
	flaky.block = nil
	flaky.mu.Unlock()
	if got := <-waiting; got != http.StatusOK {
		t.Errorf("the publish that waited on the store got %d, want 200", got)
	}

	// Three topics live ("a" from the publish that waited, one WebSocket,
	// one HTTP): a fourth is one too many.
	h.pub(t, "test", "one")
	h.publish(t, c, "two", "text/plain", []byte("m"))
	both("too many topics", "three", http.StatusTooManyRequests)
	// A topic that is live takes HTTP publishes, with or without its
	// WebSocket publisher.
	h.publish(t, c, "one", "text/plain", []byte("m"))
	h.publish(t, c, "two", "text/plain", []byte("m"))

	// Draining: a subscriber holds the drain open.
	h.sub(t, "test", "two")
	go h.Shutdown(context.Background())
	waitFor(t, "the drain", func() bool {
		resp, err := http.Get("http://" + h.Addr() + "/nothing")
		if err == nil {
			resp.Body.Close()
		}
		return h.refused(t, "/ws/sub/test/two", nil) == http.StatusServiceUnavailable
	})
	both("draining", "two", http.StatusServiceUnavailable)
}

// TestHTTPPublishOrderedWithWebSocketPublisher: a WebSocket publisher and
// two HTTP publishing connections send to one topic at once; a meta
// subscriber sees every message once, at offsets 1, 2, 3, ... in order,
// and each HTTP publish's answer names the offset its message arrived at.
func TestHTTPPublishOrderedWithWebSocketPublisher(t *testing.T) {
	const n = 300
	h := startHub(t)
	p := h.pub(t, "test", "mixed")
	meta := h.metaSub(t, "test", "mixed", "")
	plain := h.sub(t, "test", "mixed")

	var wg sync.WaitGroup
	answers := make(map[string]uint64) // HTTP message -> offset
	var mu sync.Mutex
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := p.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("ws %d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for c := range 2 {
		go func() {
			defer wg.Done()
			client := newHTTPClient()
			for i := range n {
				msg := fmt.Sprintf("http%d %d", c, i)
				req, _ := http.NewRequest("POST", "http://"+h.Addr()+apiPath("test", "mixed"), strings.NewReader(msg))
				req.Header.Set("Authorization", "Bearer "+h.key)
				req.Header.Set("Content-Type", "text/plain")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var pos position
				err = json.NewDecoder(resp.Body).Decode(&pos)
				resp.Body.Close()
				if resp.StatusCode != 200 || err != nil {
					t.Errorf("%s: %s %v", msg, resp.Status, err)
					return
				}
				mu.Lock()
				answers[msg] = pos.Offset
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[string]bool{}
	next := map[string]int{"ws": 0, "http0": 0, "http1": 0}
	var epoch string
	for want := uint64(1); want <= 3*n; want++ {
		_, e, offset, payload := metaMessage(t, meta)
		if epoch == "" {
			epoch = e
		}
		if e != epoch || offset != want {
			t.Fatalf("message %q at %s:%d, want %s:%d", payload, e, offset, epoch, want)
		}
		msg := string(payload)
		if seen[msg] {
			t.Fatalf("%q came twice", msg)
		}
		seen[msg] = true
		src, num, _ := strings.Cut(msg, " ")
		if i, _ := strconv.Atoi(num); i != next[src] {
			t.Fatalf("%q came after %s %d: out of its sender's order", msg, src, next[src]-1)
		}
		next[src]++
		if src != "ws" && answers[msg] != offset {
			t.Fatalf("%q arrived at offset %d, its answer said %d", msg, offset, answers[msg])
		}
		expect(t, plain, websocket.TextMessage, payload)
	}
}

// TestHTTPPublishThousandOnOneConnection: 1,000 publishes on one
// keep-alive connection, each answered in turn, all delivered in order.
func TestHTTPPublishThousandOnOneConnection(t *testing.T) {
	const n = 1000
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	s := h.sub(t, "test", "many")
	c := newHTTPClient()
	var reused atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused.Add(1)
		}
	}}
	for i := range n {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			"POST", "http://"+h.Addr()+apiPath("test", "many"), strings.NewReader(strconv.Itoa(i)))
		req.Header.Set("Authorization", "Bearer "+h.key)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if p := parsePosition(t, resp, string(text)); p.Offset != uint64(i+1) {
			t.Fatalf("publish %d at offset %d, want %d", i, p.Offset, i+1)
		}
	}
	if d, r := c.dials.Load(), reused.Load(); d != 1 || r != n-1 {
		t.Errorf("%d connections, %d reused, for %d publishes: want 1 and %d", d, r, n, n-1)
	}
	for i := range n {
		expect(t, s, websocket.BinaryMessage, []byte(strconv.Itoa(i)))
	}
}

// TestHTTPPublishPipelined: requests sent back to back in one write are
// answered in order, refusals among them included, the connection ending
// after the one that asks for it.
func TestHTTPPublishPipelined(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	s := h.sub(t, "test", "pipe")
	req := func(body string, extra ...string) string {
		return request("POST", "/api/pub/test/pipe", append([]string{"Host: hub.test", "Authorization: Bearer " + h.key,
			"Content-Type: text/plain", "Content-Length: " + strconv.Itoa(len(body))}, extra...)...) + body
	}
	var all strings.Builder
	var want []int
	for i := range 200 {
		switch {
		case i == 50:
			all.WriteString(req("\xff")) // refused, the connection goes on
			want = append(want, 400)
		case i == 199:
			all.WriteString(req(strconv.Itoa(i), "Connection: close"))
			want = append(want, 200)
		default:
			all.WriteString(req(strconv.Itoa(i)))
			want = append(want, 200)
		}
	}
	all.WriteString(req("never")) // after Connection: close: not read
	c := h.rawDial(t, 0)
	// Sent in small pieces, so heads and bodies are split across reads.
	b := []byte(all.String())
	go func() {
		for len(b) > 0 {
			n := min(len(b), 777)
			c.Write(b[:n])
			b = b[n:]
		}
	}()
	offset := uint64(0)
	for i, status := range want {
		resp, text := c.response(t)
		if resp.StatusCode != status {
			t.Fatalf("answer %d: %s %q, want %d", i, resp.Status, text, status)
		}
		if status == 200 {
			p := parsePosition(t, resp, text)
			if p.Offset != offset+1 {
				t.Fatalf("answer %d: offset %d, want %d", i, p.Offset, offset+1)
			}
			offset = p.Offset
		}
	}
	c.expectEnd(t)
	for i := range 200 {
		if i != 50 {
			expect(t, s, websocket.TextMessage, []byte(strconv.Itoa(i)))
		}
	}
	s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, data, err := s.ReadMessage(); err == nil {
		t.Fatalf("subscriber got %q after the last message", data)
	}
}

// TestHTTPPublishPipelineBound: a client that pipelines more than one
// more request's worth while one is being published has its connection
// closed after that answer; what it sent in excess is not published.
func TestHTTPPublishPipelineBound(t *testing.T) {
	var flaky *flakyKeys
	h := startHub(t, func(c *server.Config) {
		flaky = &flakyKeys{KeyChecker: c.Keys, block: make(chan struct{})}
		c.Keys = flaky
		c.MaxMessageSize = 1000
		c.SubscribeWaits = true
	})
	s := h.sub(t, "test", "bound")
	one := request("POST", "/api/pub/test/bound", "Host: hub.test", "Authorization: Bearer "+h.key, "Content-Length: 3") + "one"
	c := h.rawDial(t, 0)
	c.send(t, []byte(one))
	waitFor(t, "the key check", func() bool { return flaky.in.Load() == 1 })
	// 8 KiB of head and 1000 bytes of body may wait: send three times that.
	c.send(t, bytes.Repeat([]byte(one), 3*(8<<10+1000)/len(one)))
	time.Sleep(50 * time.Millisecond)
	flaky.mu.Lock()
	close(flaky.block)
	flaky.block = nil
	flaky.mu.Unlock()
	resp, text := c.response(t)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("%s %v %q, want 200 with Connection: close", resp.Status, resp.Header, text)
	}
	c.expectEnd(t)
	expect(t, s, websocket.BinaryMessage, []byte("one"))
	s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, data, err := s.ReadMessage(); err == nil {
		t.Fatalf("subscriber got %q: the excess was published", data)
	}
}

// TestHTTPPublishTopicLivesGraceAfterLastPublish: a topic started by HTTP
// publishes lives --grace-period after the last one, then its
// subscribers get 4001 and new ones 404.
func TestHTTPPublishTopicLivesGraceAfterLastPublish(t *testing.T) {
	const grace = 400 * time.Millisecond
	h := startHub(t, func(c *server.Config) { c.GracePeriod = grace })
	c := newHTTPClient()
	if got := h.refused(t, "/ws/sub/test/brief", nil); got != http.StatusNotFound {
		t.Fatalf("subscriber before any publish: %d, want 404", got)
	}
	h.publish(t, c, "brief", "text/plain", []byte("start"))
	s := h.sub(t, "test", "brief")
	// Publishing every grace/2 keeps it alive well past one grace period.
	start := time.Now()
	for i := range 5 {
		time.Sleep(grace / 2)
		h.publish(t, c, "brief", "text/plain", []byte(strconv.Itoa(i)))
	}
	last := time.Now()
	for i := range 5 {
		expect(t, s, websocket.TextMessage, []byte(strconv.Itoa(i)))
	}
	if time.Since(start) < 2*grace {
		t.Fatal("the publishes took less than two grace periods: the test proves nothing")
	}
	expectClosed(t, s, 4001)
	if ended := time.Since(last); ended < grace-50*time.Millisecond {
		t.Errorf("topic ended %v after the last publish, want --grace-period (%v)", ended, grace)
	}
	if got := h.refused(t, "/ws/sub/test/brief", nil); got != http.StatusNotFound {
		t.Errorf("subscriber after the end: %d, want 404", got)
	}
	waitFor(t, "no topics", func() bool { return h.Topics() == 0 })
	// A WebSocket publisher takes the HTTP-started topic over within its
	// grace, and the topic does not end while it stays.
	h.publish(t, c, "taken", "text/plain", []byte("x"))
	p := h.pub(t, "test", "taken")
	s = h.sub(t, "test", "taken")
	time.Sleep(2 * grace)
	h.publish(t, c, "taken", "text/plain", []byte("http"))
	p.WriteMessage(websocket.TextMessage, []byte("ws"))
	expect(t, s, websocket.TextMessage, []byte("http"))
	expect(t, s, websocket.TextMessage, []byte("ws"))
}

// TestHTTPPublishRatePerKey: --max-publish-rate bounds HTTP publishes per
// key across all its connections; another key has its own allowance, and
// a refused publish reaches nobody.
func TestHTTPPublishRatePerKey(t *testing.T) {
	const rate = 20
	h := startHub(t, func(c *server.Config) {
		c.MaxPublishRate = rate
		c.SubscribeWaits = true
	})
	other, err := h.keys.Add(context.Background(), "test", "other")
	if err != nil {
		t.Fatal(err)
	}
	s := h.sub(t, "test", "rated")
	clients := []*httpClient{newHTTPClient(), newHTTPClient()}
	var ok, limited int
	start := time.Now()
	for i := range 4 * rate {
		resp, text := h.post(t, clients[i%2], apiPath("test", "rated"), h.key, "text/plain", []byte("m"))
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(text, "this API key") {
				t.Errorf("429 %v %q: want Retry-After and the reason", resp.Header, text)
			}
		default:
			t.Fatalf("%s %q", resp.Status, text)
		}
	}
	took := time.Since(start).Seconds()
	if max := rate + int(took*rate) + 1; ok < rate || ok > max {
		t.Errorf("%d of %d published in %.2fs over two connections, want %d to %d", ok, 4*rate, took, rate, max)
	}
	if limited == 0 {
		t.Error("nothing was refused at four times the rate")
	}
	// Another key of the domain is not held back by the first.
	resp, text := h.post(t, clients[0], apiPath("test", "rated"), other, "text/plain", []byte("other"))
	if resp.StatusCode != 200 {
		t.Errorf("another key: %s %q, want 200", resp.Status, text)
	}
	// A second later the key has its allowance again.
	time.Sleep(time.Second)
	if resp, text := h.post(t, clients[1], apiPath("test", "rated"), h.key, "text/plain", []byte("again")); resp.StatusCode != 200 {
		t.Errorf("after a second: %s %q, want 200", resp.Status, text)
	}
	for range ok {
		expect(t, s, websocket.TextMessage, []byte("m"))
	}
	expect(t, s, websocket.TextMessage, []byte("other"))
	expect(t, s, websocket.TextMessage, []byte("again"))
}

// TestHTTPPublishHostileInput: bytes no HTTP client sends are refused and
// end the connection; a client that leaves halfway costs nothing.
func TestHTTPPublishHostileInput(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	auth := "Authorization: Bearer " + h.key
	good := request("POST", "/api/pub/test/x", "Host: hub.test", auth, "Content-Length: 2") + "ok"
	for _, tc := range []struct {
		name   string
		input  string
		status int // of the last answer; 0: none, the connection just ends
	}{
		{"garbage after a request", good + "\x00\x01\x02 garbage\r\n\r\n", 400},
		{"a body shorter than its length, then silence", request("POST", "/api/pub/test/x", "Host: hub.test", auth, "Content-Length: 10") + "short", 0},
		{"a head that never ends", "POST /api/pub/test/x HTTP/1.1\r\nHost: hub.test\r\n", 0},
		{"a head too large", "POST /api/pub/test/x HTTP/1.1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n", 431},
		{"HTTP/1.0", "POST /api/pub/test/x HTTP/1.0\r\nHost: hub.test\r\n" + auth + "\r\nContent-Length: 1\r\n\r\nx", 400},
		{"two lengths", request("POST", "/api/pub/test/x", "Host: hub.test", auth, "Content-Length: 1", "Content-Length: 2") + "xx", 400},
		{"a negative length", request("POST", "/api/pub/test/x", "Host: hub.test", auth, "Content-Length: -1"), 400},
		{"a huge length", request("POST", "/api/pub/test/x", "Host: hub.test", auth, "Content-Length: 99999999999999999999"), 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.rawDial(t, 0)
			c.send(t, []byte(tc.input))
			if strings.HasPrefix(tc.input, good) {
				if resp, _ := c.response(t); resp.StatusCode != 200 {
					t.Fatalf("the good request first: %s", resp.Status)
				}
			}
			if tc.status != 0 {
				if resp, text := c.response(t); resp.StatusCode != tc.status {
					t.Fatalf("%s %q, want %d", resp.Status, text, tc.status)
				}
			}
			c.expectEnd(t)
		})
	}
}

// TestHTTPPublishShutdown: at shutdown an idle keep-alive connection is
// closed without an answer nobody asked for, a request being published is
// answered (and closes), and the hub does not wait for either.
func TestHTTPPublishShutdown(t *testing.T) {
	var flaky *flakyKeys
	h := startHub(t, func(c *server.Config) {
		flaky = &flakyKeys{KeyChecker: c.Keys}
		c.Keys = flaky
	})
	idle := h.rawDial(t, 0)
	idle.send(t, []byte(request("POST", "/api/pub/test/x", "Host: hub.test", "Authorization: Bearer "+h.key, "Content-Length: 1")+"x"))
	if resp, _ := idle.response(t); resp.StatusCode != 200 {
		t.Fatalf("%s, want 200", resp.Status)
	}
	flaky.mu.Lock()
	flaky.block = make(chan struct{})
	flaky.mu.Unlock()
	busy := h.rawDial(t, 0)
	busy.send(t, []byte(request("POST", "/api/pub/test/x", "Host: hub.test", "Authorization: Bearer "+h.key, "Content-Length: 1")+"y"))
	waitFor(t, "the key check", func() bool { return flaky.in.Load() == 1 })
	done := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.Shutdown(ctx)
	}()
	idle.expectEnd(t)
	time.Sleep(50 * time.Millisecond)
	flaky.mu.Lock()
	close(flaky.block)
	flaky.block = nil
	flaky.mu.Unlock()
	resp, text := busy.response(t)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the request in flight: %s %v %q, want 200 with Connection: close", resp.Status, resp.Header, text)
	}
	busy.expectEnd(t)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// noCluster is a cluster node that knows no other node: enough to make a
// hub a cluster node for what HTTP publish does there.
type noCluster struct{}

func (noCluster) Bind(server.ClusterHub, time.Duration) {}
func (noCluster) Claim(context.Context, topics.Key) (server.ClusterTopic, error) {
	return nil, errors.New("no cluster")
}
func (noCluster) Started(topics.Key) bool                          { return false }
func (noCluster) Lookup(context.Context, topics.Key) (bool, error) { return false, nil }
func (noCluster) Keep(topics.Key) bool                             { return false }
func (noCluster) Join(topics.Key) bool                             { return true }
func (noCluster) Confirm(context.Context, topics.Key) error        { return nil }
func (noCluster) Leave(topics.Key)                                 {}
func (noCluster) Ready() error                                     { return nil }
func (noCluster) History(context.Context, topics.Key, string, uint64, uint64) (server.HistoryPage, error) {
	return server.HistoryPage{}, nil
}
func (noCluster) Forward(context.Context, topics.Key, []byte, int) (string, uint64, bool, error) {
	return "", 0, false, nil
}

// TestHTTPPublishOnClusterNode: on a cluster node an HTTP publish goes
// through the cluster (publishHTTPCluster): one that cannot claim the topic
// gets 503, and nothing is started locally. (cluster's tests publish across
// real nodes.)
func TestHTTPPublishOnClusterNode(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.Cluster = noCluster{} })
	resp, text := h.post(t, newHTTPClient(), apiPath("test", "a"), h.key, "text/plain", []byte("m"))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(text, "cluster") {
		t.Fatalf("%s %q, want 503 saying why", resp.Status, text)
	}
	if n := h.Topics(); n != 0 {
		t.Fatalf("%d topics after a refused HTTP publish on a cluster node, want 0", n)
	}
}

// TestHTTPPublishMetrics: every HTTP publish is counted by its result, its
// message among the received ones and its key among the key checks.
func TestHTTPPublishMetrics(t *testing.T) {
	h := startMetricsHub(t)
	s0 := h.scrape(t)
	checkFamilies(t, s0)
	c := newHTTPClient()
	sizes := []int{0, 5, 70000}
	for _, n := range sizes {
		h.publish(t, c, "m", "application/octet-stream", make([]byte, n))
	}
	unknown, _ := keys.Generate()
	for _, r := range []struct {
		key, contentType string
		want             int
	}{
		{unknown, "text/plain", 401},
		{h.key, "application/x-www-form-urlencoded", 415},
	} {
		if resp, text := h.post(t, c, apiPath("test", "m"), r.key, r.contentType, []byte("x")); resp.StatusCode != r.want {
			t.Fatalf("%s %q, want %d", resp.Status, text, r.want)
		}
	}
	left := h.rawDial(t, 0)
	left.send(t, []byte(request("POST", "/api/pub/test/m", "Host: hub.test", "Authorization: Bearer "+h.key, "Content-Length: 10")+"half"))
	left.Close()
	s1 := h.scrapeUntil(t, "the abandoned request", func(s scrape) bool {
		v, _ := s.find("wspubsub_http_publishes_total", "result", "abandoned")
		return v >= 1
	})
	d := delta{s0, s1}
	d.expect(t, "HTTP publishes", []check{
		{name: "wspubsub_http_publishes_total", labels: []string{"result", "published"}, want: 3},
		{name: "wspubsub_http_publishes_total", labels: []string{"result", "unauthorized"}, want: 1},
		{name: "wspubsub_http_publishes_total", labels: []string{"result", "unsupported_media_type"}, want: 1},
		{name: "wspubsub_http_publishes_total", labels: []string{"result", "abandoned"}, want: 1},
		{name: "wspubsub_http_publishes_total", labels: []string{"result", "bad_request"}, want: 0},
		{name: "wspubsub_received_messages_total", want: 3},
		{name: "wspubsub_received_bytes_total", want: 70005},
		{name: "wspubsub_key_checks_total", labels: []string{"result", "accepted"}, want: 3},
		{name: "wspubsub_key_checks_total", labels: []string{"result", "refused"}, want: 1},
		{name: "wspubsub_dropped_messages_total", labels: []string{"reason", "no_subscribers"}, want: 3},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "abandoned"}, want: 0},
		{name: "wspubsub_handshakes_in_progress", want: 0, gauge: true},
		{name: "wspubsub_topics", want: 1, gauge: true},
	})
	checkFamilies(t, s1)
}

// TestHTTPPublishOverTLS: https:// publishes on the TLS listener, kept
// alive, reach a wss:// subscriber.
func TestHTTPPublishOverTLS(t *testing.T) {
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) { c.SubscribeWaits = true })
	s := h.sub(t, "secure")
	var dials atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: h.dialer.TLSClientConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	for i := range 20 {
		req, _ := http.NewRequest("POST", "https://"+h.Addr()+apiPath("test", "secure"), strings.NewReader(strconv.Itoa(i)))
		req.Header.Set("Authorization", "Bearer "+h.key)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST over TLS: %v", err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if p := parsePosition(t, resp, string(text)); p.Offset != uint64(i+1) {
			t.Fatalf("offset %d, want %d", p.Offset, i+1)
		}
		expect(t, s, websocket.TextMessage, []byte(strconv.Itoa(i)))
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d TLS connections for 20 publishes, want 1", n)
	}
}
