package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/ws"
)

// FuzzAPIRequest reads arbitrary bytes as pipelined HTTP publish requests
// the way the hub does: each head with ws.ParseRequest, its target with
// parseTarget, the rest with parseAPIRequest, then its body by
// Content-Length. A request is accepted only if it is one the hub may
// publish; a refusal has a status of the endpoint's and a reason that
// encodes into an answer an HTTP client reads back as sent.
func FuzzAPIRequest(f *testing.F) {
	key, err := keys.Generate()
	if err != nil {
		f.Fatal(err)
	}
	req := func(method, target string, headers ...string) string {
		s := method + " " + target + " HTTP/1.1\r\n"
		for _, h := range headers {
			s += h + "\r\n"
		}
		return s + "\r\n"
	}
	auth := "Authorization: Bearer " + key
	for _, s := range []string{
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: text/plain", "Content-Length: 5") + "hello",
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Length: 2") + "hi" + req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Length: 0", "Connection: close"),
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: application/json; charset=UTF-8", "Content-Length: 2") + "{}",
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: application/x-www-form-urlencoded", "Content-Length: 3") + "a=b",
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: multipart/form-data; boundary=x", "Content-Length: 0"),
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: text/plain; charset=latin1", "Content-Length: 0"),
		req("POST", "/api/pub/a/b", "Host: h", auth, "Content-Type: ;", "Content-Length: 0"),
		req("POST", "/api/pub/a/b", "Host: h", auth, "Transfer-Encoding: chunked") + "0\r\n\r\n",
		req("POST", "/api/pub/a/b", "Host: h", auth, "Expect: 100-continue", "Content-Length: 1") + "x",
		req("POST", "/api/pub/a/b", "Host: h", "Authorization: Basic x", "Content-Length: 0"),
		req("POST", "/api/pub/a/b", "Host: h", "Authorization: Bearer wsp_x", "Content-Length: 0"),
		req("POST", "/api/pub/a/b", "Host: h", auth, "Origin: http://\xff", "Content-Length: 0"),
		req("POST", "/api/pub/%ff/b", "Host: h", auth, "Content-Length: 0"),
		req("POST", "/api/pub/a", "Host: h", auth, "Content-Length: 0"),
		req("GET", "/api/pub/a/b", "Host: h", auth),
		req("POST", "/api/pub/a/b", auth, "Content-Length: 99999999"),
		"POST /api/pub/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r",
	} {
		f.Add([]byte(s))
	}
	const maxBody = 1000
	origins := []string{"https://app.example"}
	f.Fuzz(func(t *testing.T, data []byte) {
		for len(data) > 0 {
			req, n, err := ws.ParseRequest(data, 8<<10)
			if err != nil {
				return
			}
			head := data[:n]
			data = data[n:]
			r, routeErr := parseTarget(req.Target)
			if !r.http {
				return
			}
			a, res, reason := parseAPIRequest(req, head, r, routeErr, maxBody, origins)
			if res != apiPublished {
				checkRefusal(t, res, reason)
				return
			}
			checkAccepted(t, req, a, maxBody)
			if len(data) < a.length {
				return
			}
			body := data[:a.length]
			data = data[a.length:]
			if a.op == ws.OpText && !utf8.Valid(body) {
				checkRefusal(t, apiBadRequest, "the body is not valid UTF-8")
			}
			if a.close {
				return
			}
		}
	})
}

// checkAccepted fails t unless a is a request the hub may publish.
func checkAccepted(t *testing.T, req ws.Request, a apiRequest, maxBody int) {
	t.Helper()
	switch {
	case req.Method != "POST", req.Chunked, req.Host == "":
		t.Fatalf("accepted %+v", req)
	case a.length < 0 || a.length > maxBody || int64(a.length) != req.ContentLength:
		t.Fatalf("accepted a body of %d bytes (Content-Length %d)", a.length, req.ContentLength)
	case !keys.WellFormed(a.key):
		t.Fatalf("accepted the malformed key %q", a.key)
	case a.topic.Domain == "" || a.topic.Topic == "" || !utf8.ValidString(a.topic.Domain+a.topic.Topic):
		t.Fatalf("accepted the topic %+v", a.topic)
	}
	mt, params, _ := strings.Cut(strings.ToLower(req.ContentType), ";")
	mt = strings.Trim(mt, " \t")
	text := strings.HasPrefix(mt, "text/") || mt == "application/json"
	switch {
	case mt == "application/x-www-form-urlencoded" || strings.HasPrefix(mt, "multipart/"):
		t.Fatalf("accepted a body of Content-Type %q", req.ContentType)
	case text && a.op != ws.OpText, !text && a.op != ws.OpBinary:
		t.Fatalf("Content-Type %q published as opcode %d", req.ContentType, a.op)
	case text && strings.Contains(params, "charset") && !strings.Contains(params, "utf") && !strings.Contains(params, "ascii"):
		t.Fatalf("accepted the text Content-Type %q", req.ContentType)
	}
	if text {
		// Every parameter of an accepted text type is NAME=VALUE, and a
		// charset is UTF-8.
		for _, p := range strings.Split(params, ";") {
			if strings.Trim(p, " \t") == "" {
				continue
			}
			name, value, ok := strings.Cut(p, "=")
			value = strings.Trim(strings.Trim(value, " \t"), `"`)
			if !ok || strings.Trim(name, " \t") == "charset" && value != "utf-8" && value != "utf8" && value != "us-ascii" {
				t.Fatalf("accepted the text Content-Type %q", req.ContentType)
			}
		}
	}
}

// checkRefusal fails t unless a refusal has a status of the endpoint's and
// its answer reads back as sent.
func checkRefusal(t *testing.T, res apiResult, reason string) {
	t.Helper()
	status := apiResults[res].status
	switch status {
	case 400, 401, 403, 405, 411, 413, 415:
	default:
		t.Fatalf("refused with %d before the body: %q", status, reason)
	}
	if reason == "" || !utf8.ValidString(reason) || strings.ContainsAny(reason, "\r\n") {
		t.Fatalf("refused with the reason %q", reason)
	}
	b := appendAPIResponse(nil, status, "text/plain; charset=utf-8", []byte(reason+"\n"), apiResults[res].extra, true)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || string(got) != reason+"\n" || !resp.Close {
		t.Fatalf("answer %q read back as %d %q close=%v", b, resp.StatusCode, got, resp.Close)
	}
	if status == 401 && resp.Header.Get("WWW-Authenticate") != "Bearer" || status == 405 && resp.Header.Get("Allow") != "POST" {
		t.Fatalf("answer %q lacks its header", b)
	}
}

// TestKeyRatesBoundedAndSwept: the per-key table holds at most
// maxRateKeys keys (past it, new keys are not limited) and the sweep drops
// every key unused for a second.
func TestKeyRatesBoundedAndSwept(t *testing.T) {
	var k keyRates
	const rate = 1
	key := func(i int) [32]byte {
		var h [32]byte
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		return h
	}
	for i := range 2 * maxRateKeys {
		if !k.take(key(i), rate, 0) {
			t.Fatalf("key %d: refused its first message", i)
		}
	}
	n := 0
	for i := range k.shards {
		n += len(k.shards[i].m)
	}
	if n != maxRateKeys {
		t.Fatalf("%d keys tracked, want the bound %d", n, maxRateKeys)
	}
	if k.take(key(0), rate, 1) {
		t.Fatal("a tracked key got a second message within its second")
	}
	k.sweep(int64(time.Second) / 2)
	if k.take(key(0), rate, int64(time.Second)/2) {
		t.Fatal("the sweep dropped a key used within the second")
	}
	k.sweep(2 * int64(time.Second))
	for i := range k.shards {
		if len(k.shards[i].m) != 0 {
			t.Fatal("the sweep left idle keys")
		}
	}
}

// TestCheckCtx: the key check's context is a context: its deadline ends
// it with DeadlineExceeded, stop with Canceled, and a context nobody asked
// Done of ends without a timer.
func TestCheckCtx(t *testing.T) {
	c := &checkCtx{deadline: time.Now().Add(20 * time.Millisecond)}
	if c.Err() != nil {
		t.Fatal("ended before its deadline")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done did not close at the deadline")
	}
	if c.Err() != context.DeadlineExceeded {
		t.Fatalf("Err %v after the deadline", c.Err())
	}
	c.stop()
	if c.Err() != context.DeadlineExceeded {
		t.Fatalf("Err %v: stop after the deadline changed it", c.Err())
	}

	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	done := c.Done()
	c.stop()
	select {
	case <-done:
	default:
		t.Fatal("stop did not close Done")
	}
	if c.Err() != context.Canceled {
		t.Fatalf("Err %v after stop", c.Err())
	}

	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	c.stop()
	if c.timer != nil {
		t.Fatal("stop started a timer")
	}
	if _, ok := <-c.Done(); ok || c.Err() != context.Canceled {
		t.Fatalf("a stopped context: Done open or Err %v", c.Err())
	}
	// A context derived from it ends with it.
	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	child, cancel := context.WithTimeout(c, time.Hour)
	defer cancel()
	c.stop()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a derived context did not end with its parent")
	}
}
