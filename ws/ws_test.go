package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// clientFrame builds a masked client frame the way a browser would.
func clientFrame(fin bool, op Opcode, payload []byte, key [4]byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	n := len(payload)
	var f []byte
	switch {
	case n < 126:
		f = append(f, b0, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, b0, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i&3])
	}
	return f
}

type event struct {
	op      Opcode
	payload string
}

type recorder struct{ events []event }

func (r *recorder) Message(op Opcode, p []byte) error {
	r.events = append(r.events, event{op, string(p)})
	return nil
}
func (r *recorder) Control(op Opcode, p []byte) error {
	r.events = append(r.events, event{op, string(p)})
	return nil
}

var mask = [4]byte{0x12, 0x34, 0x56, 0x78}

func TestReaderSplitsAnywhere(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 7000) // 64-bit length form
	mid := bytes.Repeat([]byte("x"), 300)           // 16-bit length form
	var stream []byte
	stream = append(stream, clientFrame(true, OpText, []byte("hello"), mask)...)
	stream = append(stream, clientFrame(true, OpBinary, nil, mask)...)
	stream = append(stream, clientFrame(true, OpPing, []byte("p"), mask)...)
	stream = append(stream, clientFrame(false, OpText, []byte("frag"), mask)...)
	stream = append(stream, clientFrame(true, OpPing, []byte("mid"), mask)...)
	stream = append(stream, clientFrame(false, OpContinuation, []byte("men"), mask)...)
	stream = append(stream, clientFrame(true, OpContinuation, []byte("ted"), mask)...)
	stream = append(stream, clientFrame(true, OpBinary, mid, mask)...)
	stream = append(stream, clientFrame(true, OpBinary, big, mask)...)
	want := []event{{OpText, "hello"}, {OpBinary, ""}, {OpPing, "p"}, {OpPing, "mid"},
		{OpText, "fragmented"}, {OpBinary, string(mid)}, {OpBinary, string(big)}}

	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		r := &Reader{MaxMessage: 1 << 20}
		rec := &recorder{}
		in := bytes.Clone(stream)
		for i := 0; i < len(in); i += chunk {
			if err := r.Feed(in[i:min(i+chunk, len(in))], rec); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if len(rec.events) != len(want) {
			t.Fatalf("chunk %d: got %d events, want %d", chunk, len(rec.events), len(want))
		}
		for i := range want {
			if rec.events[i] != want[i] {
				t.Fatalf("chunk %d: event %d = %v %.20q, want %v %.20q", chunk, i, rec.events[i].op, rec.events[i].payload, want[i].op, want[i].payload)
			}
		}
		if r.Buffered() != 0 {
			t.Fatalf("chunk %d: %d bytes left buffered", chunk, r.Buffered())
		}
	}
}

func TestReaderDiscard(t *testing.T) {
	var stream []byte
	stream = append(stream, clientFrame(true, OpBinary, bytes.Repeat([]byte("z"), 70000), mask)...)
	stream = append(stream, clientFrame(false, OpText, []byte("a"), mask)...)
	stream = append(stream, clientFrame(true, OpContinuation, []byte("b"), mask)...)
	stream = append(stream, clientFrame(true, OpPing, []byte("still here"), mask)...)
	for _, chunk := range []int{1, 5, 1000, len(stream)} {
		r := &Reader{MaxMessage: 1 << 20, Discard: true}
		rec := &recorder{}
		in := bytes.Clone(stream)
		for i := 0; i < len(in); i += chunk {
			if err := r.Feed(in[i:min(i+chunk, len(in))], rec); err != nil {
				t.Fatal(err)
			}
			if r.Buffered() > 14+MaxControlPayload {
				t.Fatalf("discard mode buffered %d bytes", r.Buffered())
			}
		}
		if len(rec.events) != 1 || rec.events[0] != (event{OpPing, "still here"}) {
			t.Fatalf("chunk %d: events %v", chunk, rec.events)
		}
	}
}

func TestReaderRefuses(t *testing.T) {
	unmasked := clientFrame(true, OpText, []byte("hi"), mask)
	unmasked[1] &^= 0x80
	rsv := clientFrame(true, OpText, []byte("hi"), mask)
	rsv[0] |= 0x40
	closeCode := func(code uint16, reason string) []byte {
		p := binary.BigEndian.AppendUint16(nil, code)
		return clientFrame(true, OpClose, append(p, reason...), mask)
	}
	cases := []struct {
		name  string
		in    []byte
		code  uint16
		limit int
	}{
		{"unmasked", unmasked, CloseProtocolError, 0},
		{"rsv bits", rsv, CloseProtocolError, 0},
		{"reserved data opcode", clientFrame(true, 3, nil, mask), CloseProtocolError, 0},
		{"reserved control opcode", clientFrame(true, 0xB, nil, mask), CloseProtocolError, 0},
		{"fragmented ping", clientFrame(false, OpPing, nil, mask), CloseProtocolError, 0},
		{"long ping", clientFrame(true, OpPing, make([]byte, 126), mask), CloseProtocolError, 0},
		{"lone continuation", clientFrame(true, OpContinuation, []byte("x"), mask), CloseProtocolError, 0},
		{"message inside fragment", append(clientFrame(false, OpText, []byte("a"), mask), clientFrame(true, OpText, []byte("b"), mask)...), CloseProtocolError, 0},
		{"invalid utf8", clientFrame(true, OpText, []byte{0xff, 0xfe}, mask), CloseInvalidPayload, 0},
		{"invalid utf8 fragmented", append(clientFrame(false, OpText, []byte{0xe2, 0x82}, mask), clientFrame(true, OpContinuation, []byte{0x28}, mask)...), CloseInvalidPayload, 0},
		{"too big", clientFrame(true, OpBinary, make([]byte, 11), mask), CloseMessageTooBig, 10},
		{"too big fragmented", append(clientFrame(false, OpBinary, make([]byte, 6), mask), clientFrame(true, OpContinuation, make([]byte, 6), mask)...), CloseMessageTooBig, 10},
		{"close 1 byte", clientFrame(true, OpClose, []byte{3}, mask), CloseProtocolError, 0},
		{"close code 1005", closeCode(1005, ""), CloseProtocolError, 0},
		{"close code 999", closeCode(999, ""), CloseProtocolError, 0},
		{"close code 5000", closeCode(5000, ""), CloseProtocolError, 0},
		{"close bad reason", closeCode(1000, "\xff"), CloseInvalidPayload, 0},
		{"64-bit top bit", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, CloseProtocolError, 0},
	}
	for _, c := range cases {
		limit := c.limit
		if limit == 0 {
			limit = 1 << 20
		}
		r := &Reader{MaxMessage: limit}
		err := r.Feed(c.in, &recorder{})
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != c.code {
			t.Errorf("%s: err = %v, want close code %d", c.name, err, c.code)
		}
	}
}

// After a message too big, a reader switched to discard mode skips the rest
// of that frame and finds the peer's close frame behind it.
func TestReaderFindsCloseAfterTooBig(t *testing.T) {
	big := clientFrame(true, OpBinary, make([]byte, 5000), mask)
	closing := clientFrame(true, OpClose, []byte{3, 232}, mask)
	for _, split := range []int{3, 8, 100, 4000, len(big)} {
		r := &Reader{MaxMessage: 1000}
		var ce *CloseError
		if err := r.Feed(bytes.Clone(big[:split]), &recorder{}); !errors.As(err, &ce) || ce.Code != CloseMessageTooBig {
			if split >= 4 || err != nil { // a 3-byte split has not seen the length yet
				t.Fatalf("split %d: %v", split, err)
			}
			if err := r.Feed(bytes.Clone(big[split:split+5]), &recorder{}); !errors.As(err, &ce) {
				t.Fatalf("split %d: %v", split, err)
			}
			split += 5
		}
		r.Discard = true
		rec := &recorder{}
		if err := r.Feed(append(bytes.Clone(big[split:]), closing...), rec); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		if !r.Closed() || len(rec.events) != 1 || rec.events[0].op != OpClose {
			t.Fatalf("split %d: events %v", split, rec.events)
		}
	}
}

func TestReaderStopsAtClose(t *testing.T) {
	in := append(clientFrame(true, OpClose, append(binary.BigEndian.AppendUint16(nil, 1000), "bye"...), mask),
		clientFrame(true, OpText, []byte("after"), mask)...)
	r := &Reader{MaxMessage: 100}
	rec := &recorder{}
	if err := r.Feed(in, rec); err != nil {
		t.Fatal(err)
	}
	if !r.Closed() || len(rec.events) != 1 || rec.events[0].op != OpClose {
		t.Fatalf("events %v closed %v", rec.events, r.Closed())
	}
}

func TestAppendFrameLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
		f := AppendFrame(nil, OpBinary, make([]byte, n))
		hdr := len(f) - n
		want := 2
		if n > 65535 {
			want = 10
		} else if n > 125 {
			want = 4
		}
		if hdr != want || f[0] != 0x82 {
			t.Errorf("len %d: header %d bytes (%x), want %d", n, hdr, f[:2], want)
		}
	}
	c := AppendClose(nil, CloseSlowConsumer, strings.Repeat("é", 100))
	if len(c)-2 > MaxControlPayload || c[0] != 0x88 {
		t.Fatalf("close frame %d bytes", len(c))
	}
}

func TestParseRequest(t *testing.T) {
	good := "GET /ws/sub/a/b?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer k\r\n\r\nrest"
	req, n, err := ParseRequest([]byte(good), 8192)
	if err != nil || n != len(good)-4 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if req.Method != "GET" || req.Target != "/ws/sub/a/b?x=1" || !req.Upgrade || req.Version != "13" ||
		req.Authorization != "Bearer k" || !ValidKey(req.Key) {
		t.Fatalf("parsed %+v", req)
	}
	if got := string(AppendAccept(nil, req.Key)); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %s", got) // the example of RFC 6455 section 1.3
	}
	if _, _, err := ParseRequest([]byte(good[:40]), 8192); err != ErrIncomplete {
		t.Fatalf("partial: %v", err)
	}
	if _, _, err := ParseRequest([]byte(good), 50); err != ErrHeadTooLarge {
		t.Fatalf("too large: %v", err)
	}
	for _, bad := range []string{
		"GET /x HTTP/1.0\r\n\r\n", "GET x HTTP/1.1\r\n\r\n", "GET  /x HTTP/1.1\r\n\r\n", "/x HTTP/1.1\r\n\r\n",
		"GET /x HTTP/1.1\r\nNoColon\r\n\r\n", "GET /x HTTP/1.1\r\nBad Name: v\r\n\r\n", "GET /x HTTP/1.1\r\nA: \x01\r\n\r\n",
		"G(T /x HTTP/1.1\r\n\r\n", "GET /\xff HTTP/1.1\r\n\r\n",
	} {
		if _, _, err := ParseRequest([]byte(bad), 8192); err != ErrMalformed {
			t.Errorf("%q: err %v, want ErrMalformed", bad, err)
		}
	}
	if ValidKey("short") || ValidKey("dGhlIHNhbXBsZSBub25jZQ=!") {
		t.Fatal("bad keys accepted")
	}
	// Several Accept headers are one list (RFC 9110 5.3); Last-Event-ID
	// may come once.
	es := "GET /sse/sub/a/b HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\nAccept: text/event-stream;q=0.5\r\nLast-Event-ID: E:1\r\n\r\n"
	if req, _, err := ParseRequest([]byte(es), 8192); err != nil || req.Accept != "text/html, text/event-stream;q=0.5" || req.LastEventID != "E:1" {
		t.Fatalf("parsed %+v, %v", req, err)
	}
	twice := strings.Replace(es, "\r\n\r\n", "\r\nLast-Event-ID: E:2\r\n\r\n", 1)
	if _, _, err := ParseRequest([]byte(twice), 8192); err != ErrMalformed {
		t.Fatalf("two Last-Event-IDs: %v, want ErrMalformed", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(clientFrame(true, OpText, []byte("hello"), mask), 7, false)
	f.Add(append(clientFrame(false, OpText, []byte("a"), mask), clientFrame(true, OpContinuation, []byte("b"), mask)...), 1, false)
	f.Add(clientFrame(true, OpClose, []byte{3, 232, 'o', 'k'}, mask), 3, true)
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 2, true)
	f.Fuzz(func(t *testing.T, in []byte, chunk int, discard bool) {
		if chunk <= 0 {
			chunk = 1
		}
		// An odd chunk size also has permessage-deflate agreed, so RSV1
		// frames reach the inflater.
		r := &Reader{MaxMessage: 4096, Discard: discard, Deflate: chunk%2 == 1}
		rec := &recorder{}
		for i := 0; i < len(in); i += chunk {
			if r.Feed(in[i:min(i+chunk, len(in))], rec) != nil {
				return
			}
			if r.Buffered() > 2*4096+14 {
				t.Fatalf("buffered %d bytes past the bound", r.Buffered())
			}
		}
		for _, e := range rec.events {
			if e.op == OpText && !utf8.ValidString(e.payload) {
				t.Fatalf("invalid UTF-8 text delivered: %q", e.payload)
			}
			if len(e.payload) > 4096 {
				t.Fatalf("%d-byte message delivered past the 4096 limit", len(e.payload))
			}
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("GET /ws/sub/a/b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n:\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("POST /api/pub/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("GET /sse/sub/a/b HTTP/1.1\r\nAccept: text/event-stream\r\nLast-Event-ID: E:1\r\nSec-WebSocket-Protocol: a, wspubsub.meta\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, n, err := ParseRequest(in, 1024)
		if err == nil && (n > len(in) || n > 1024 || !strings.HasPrefix(req.Target, "/") || req.ContentLength < -1 ||
			req.Body != (req.Chunked || req.ContentLength > 0)) {
			t.Fatalf("n=%d target %q length %d body %v chunked %v", n, req.Target, req.ContentLength, req.Body, req.Chunked)
		}
	})
}

func TestRequestHeadersForHTTPEndpoints(t *testing.T) {
	req, _, err := ParseRequest([]byte("POST /api/pub/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n"+
		"Connection: keep-alive, close\r\nLast-Event-ID: E:7\r\nAccept: text/event-stream\r\n"+
		"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: v2 , wspubsub.meta\r\n\r\n"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if req.ContentLength != 12 || !req.Body || req.Chunked || req.ContentType != "text/plain" || !req.Close ||
		req.LastEventID != "E:7" || req.Accept != "text/event-stream" || req.Protocols != "chat, v2 , wspubsub.meta" {
		t.Fatalf("%+v", req)
	}
	if !HasProtocol(req.Protocols, "wspubsub.meta") || !HasProtocol(req.Protocols, "v2") || HasProtocol(req.Protocols, "wspubsub") {
		t.Fatal("HasProtocol")
	}
	for _, bad := range []string{"Content-Length: x", "Content-Length: -1", "Content-Length: 1\r\nContent-Length: 1", "Last-Event-ID: a\r\nLast-Event-ID: b"} {
		if _, _, err := ParseRequest([]byte("POST / HTTP/1.1\r\n"+bad+"\r\n\r\n"), 4096); err != ErrMalformed {
			t.Errorf("%q: %v, want ErrMalformed", bad, err)
		}
	}
	req, _, _ = ParseRequest([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 4096)
	if req.ContentLength != -1 || req.Body {
		t.Fatalf("no Content-Length: %+v", req)
	}
}

func BenchmarkReaderFeed(b *testing.B) {
	payload := bytes.Repeat([]byte("a"), 128)
	var stream []byte
	for range 200 {
		stream = append(stream, clientFrame(true, OpBinary, payload, mask)...)
	}
	r := &Reader{MaxMessage: 1 << 20}
	h := &nopHandler{}
	buf := make([]byte, len(stream))
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, stream)
		if err := r.Feed(buf, h); err != nil {
			b.Fatal(err)
		}
	}
}

type nopHandler struct{ n int }

func (h *nopHandler) Message(op Opcode, p []byte) error { h.n += len(p); return nil }
func (h *nopHandler) Control(Opcode, []byte) error      { return nil }

// TestRequestForwardedFor: several X-Forwarded-For headers make one list,
// in order, as a proxy that appends a header of its own sends them.
func TestRequestForwardedFor(t *testing.T) {
	req, _, err := ParseRequest([]byte("GET /ws/sub/a/b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1, 10.0.0.2\r\n"+
		"x-forwarded-for: 127.0.0.7\r\n\r\n"), 4096)
	if err != nil || req.ForwardedFor != "192.0.2.1, 10.0.0.2, 127.0.0.7" {
		t.Fatalf("%q, %v", req.ForwardedFor, err)
	}
}
