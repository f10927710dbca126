package ws

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestAcceptDeflate(t *testing.T) {
	for _, c := range []struct {
		offer string
		want  bool
	}{
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true}, // what browsers send
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{"permessage-deflate;server_max_window_bits=15", true},
		{`permessage-deflate; server_max_window_bits="15"`, true},
		{"permessage-deflate; client_max_window_bits=9", true},
		{"x-webkit-deflate-frame, permessage-deflate", true},
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", true}, // the fallback offer
		{" , permessage-deflate ,", true},
		{"", false},
		{"x-webkit-deflate-frame", false},
		{"permessage-deflate; server_max_window_bits=10", false}, // we cannot compress with a smaller window
		{"permessage-deflate; server_max_window_bits", false},    // a value is required
		{"permessage-deflate; server_max_window_bits=16", false},
		{"permessage-deflate; client_max_window_bits=7", false},
		{"permessage-deflate; client_max_window_bits=015", false},
		{"permessage-deflate; server_no_context_takeover=1", false},
		{"permessage-deflate; server_no_context_takeover; server_no_context_takeover", false}, // duplicate
		{"permessage-deflate; client_max_window_bits; client_max_window_bits=10", false},
		{"permessage-deflate; mystery", false},
		{"permessage-deflate; ", false}, // malformed list
		{"permessage-deflate;;", false}, // malformed list
		{`permessage-deflate; server_max_window_bits="15`, false},
		{`permessage-deflate; client_max_window_bits=""`, false},
		{"permessage-deflate x", false},
		{"Permessage-Deflate", false}, // extension names are compared exactly
		{`foo; bar="a,permessage-deflate"`, false},
	} {
		if got := AcceptDeflate(c.offer); got != c.want {
			t.Errorf("AcceptDeflate(%q) = %v, want %v", c.offer, got, c.want)
		}
	}
}

func TestParseRequestJoinsExtensions(t *testing.T) {
	head := "GET /ws/sub/a/b HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Extensions: foo\r\nsec-websocket-extensions: permessage-deflate\r\n\r\n"
	req, _, err := ParseRequest([]byte(head), 8192)
	if err != nil || req.Extensions != "foo, permessage-deflate" {
		t.Fatalf("parsed %q, %v", req.Extensions, err)
	}
	resp := string(AppendUpgradeResponse(nil, "dGhlIHNhbXBsZSBub25jZQ==", "", DeflateResponse))
	if !strings.Contains(resp, "\r\nSec-WebSocket-Extensions: "+DeflateResponse+"\r\n") {
		t.Fatalf("101 without the extension: %q", resp)
	}
}

// inflateStd inflates a frame's payload the way RFC 7692 7.2.2 says,
// with the standard library: an independent check of AppendCompressed.
func inflateStd(t *testing.T, payload []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(payload), strings.NewReader(deflateTail)))
	out, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

func TestAppendCompressed(t *testing.T) {
	for _, n := range []int{0, 1, 125, 300, 70000, 1 << 20} {
		payload := bytes.Repeat([]byte(`{"symbol":"ABC","bid":101.25,"ask":101.5}`), n/40+1)[:n]
		prefix := []byte("before")
		f := AppendCompressed(append([]byte(nil), prefix...), OpText, payload)
		if !bytes.Equal(f[:len(prefix)], prefix) {
			t.Fatalf("n=%d: what came before was overwritten", n)
		}
		f = f[len(prefix):]
		size, h, err := FrameLen(f)
		if err != nil || size != len(f) {
			t.Fatalf("n=%d: frame length %d, %v; have %d bytes", n, size, err, len(f))
		}
		if f[0] != 0x80|0x40|byte(OpText) {
			t.Fatalf("n=%d: first byte %#x, want FIN, RSV1 and text", n, f[0])
		}
		if got := inflateStd(t, f[h:]); !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: inflated %d bytes, not the payload", n, len(got))
		}
		if n >= 300 && len(f) > n/2 {
			t.Fatalf("n=%d: compressed to %d bytes", n, len(f))
		}
	}
}

func TestAppendCompressedAllocatesNothing(t *testing.T) {
	payload := bytes.Repeat([]byte(`{"symbol":"ABC","bid":101.25}`), 50)
	dst := make([]byte, 0, 8192)
	AppendCompressed(dst, OpText, payload) // warm the compressors
	if n := testing.AllocsPerRun(100, func() { AppendCompressed(dst[:0], OpText, payload) }); n != 0 {
		t.Fatalf("%v allocations per compressed frame", n)
	}
}

// compressedFrame builds a masked client frame whose payload is p
// compressed (fin, first frame: RSV1 set).
func compressedFrame(t *testing.T, op Opcode, p []byte) []byte {
	t.Helper()
	z := AppendCompressed(nil, op, p)
	_, h, err := FrameLen(z)
	if err != nil {
		t.Fatal(err)
	}
	f := clientFrame(true, op, z[h:], mask)
	f[0] |= 0x40
	return f
}

func TestReaderInflates(t *testing.T) {
	msg := []byte(strings.Repeat("compress me, ", 100))
	r := &Reader{MaxMessage: 4096, Deflate: true}
	rec := &recorder{}
	in := compressedFrame(t, OpText, msg)
	// Fragmented: RSV1 on the first frame only.
	z := AppendCompressed(nil, OpBinary, msg)
	_, h, _ := FrameLen(z)
	first := clientFrame(false, OpBinary, z[h:h+10], mask)
	first[0] |= 0x40
	in = append(in, first...)
	in = append(in, clientFrame(true, OpContinuation, z[h+10:], mask)...)
	in = append(in, clientFrame(true, OpText, []byte("plain"), mask)...)
	for i := 0; i < len(in); i += 7 {
		if err := r.Feed(in[i:min(i+7, len(in))], rec); err != nil {
			t.Fatal(err)
		}
	}
	want := []event{{OpText, string(msg)}, {OpBinary, string(msg)}, {OpText, "plain"}}
	if len(rec.events) != len(want) {
		t.Fatalf("got %d messages, want %d", len(rec.events), len(want))
	}
	for i := range want {
		if rec.events[i] != want[i] {
			t.Fatalf("message %d: %v %q", i, rec.events[i].op, rec.events[i].payload[:min(20, len(rec.events[i].payload))])
		}
	}
}

func TestReaderRefusesCompressed(t *testing.T) {
	ping := clientFrame(true, OpPing, []byte("x"), mask)
	ping[0] |= 0x40
	cont := append(clientFrame(false, OpText, []byte("a"), mask), clientFrame(true, OpContinuation, []byte("b"), mask)...)
	cont[len(cont)-len(clientFrame(true, OpContinuation, []byte("b"), mask))] |= 0x40
	junk := clientFrame(true, OpBinary, []byte{0xff, 0xff, 0xff, 0xff, 0xff}, mask)
	junk[0] |= 0x40
	badUTF8 := compressedFrame(t, OpText, []byte{0xff, 0xfe})
	for _, c := range []struct {
		name    string
		deflate bool
		in      []byte
		code    uint16
	}{
		{"RSV1 without the extension", false, compressedFrame(t, OpText, []byte("hi")), CloseProtocolError},
		{"RSV1 on a ping", true, ping, CloseProtocolError},
		{"RSV1 on a continuation", true, cont, CloseProtocolError},
		{"RSV2", true, append([]byte{0xa1}, clientFrame(true, OpText, nil, mask)[1:]...), CloseProtocolError},
		{"not deflate data", true, junk, CloseInvalidPayload},
		{"inflates to invalid UTF-8", true, badUTF8, CloseInvalidPayload},
	} {
		r := &Reader{MaxMessage: 4096, Deflate: c.deflate}
		err := r.Feed(c.in, &recorder{})
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != c.code {
			t.Errorf("%s: %v, want close %d", c.name, err, c.code)
		}
	}
}

// TestReaderZipBomb: a message that inflates to 256 MiB is cut at the
// 1 MiB limit, having cost about that much memory, not the whole.
func TestReaderZipBomb(t *testing.T) {
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 256 {
		w.Write(zeros)
	}
	w.Flush()
	payload := bytes.TrimSuffix(z.Bytes(), []byte(deflateTail))
	bomb := clientFrame(true, OpBinary, payload, mask)
	bomb[0] |= 0x40
	after := clientFrame(true, OpText, []byte("next"), mask)

	r := &Reader{MaxMessage: 1 << 20, Deflate: true}
	rec := &recorder{}
	runtime.GC()
	var before, end runtime.MemStats
	runtime.ReadMemStats(&before)
	err := r.Feed(append(bomb, after...), rec)
	runtime.ReadMemStats(&end)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseMessageTooBig {
		t.Fatalf("zip bomb: %v, want close 1009", err)
	}
	if len(rec.events) != 0 {
		t.Fatalf("zip bomb delivered %d messages", len(rec.events))
	}
	if grew := end.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("inflating the bomb allocated %d bytes, want about the 1 MiB limit", grew)
	}
	// The reader still stands at a frame boundary: the next message parses.
	if err := r.Feed(nil, rec); err != nil || len(rec.events) != 1 || rec.events[0].payload != "next" {
		t.Fatalf("after the bomb: %v, %v", err, rec.events)
	}
}

func FuzzAcceptDeflate(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits",
		`permessage-deflate; server_max_window_bits="15", x`,
		"permessage-deflate; server_max_window_bits=10, permessage-deflate",
		"a;b=c;d, e",
		`foo; bar="a,b"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if AcceptDeflate(s) && !strings.Contains(s, "permessage-deflate") {
			t.Fatalf("accepted %q, which offers no permessage-deflate", s)
		}
	})
}

// FuzzInflate feeds compressed frames: payloads round-trip through
// AppendCompressed, and arbitrary "compressed" bytes never deliver past
// the limit, nor panic.
func FuzzInflate(f *testing.F) {
	f.Add([]byte("hello, hello, hello"), false)
	f.Add([]byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, true)
	f.Add(bytes.Repeat([]byte{0}, 300), false)
	f.Fuzz(func(t *testing.T, in []byte, raw bool) {
		const limit = 1024
		var z []byte
		if raw {
			z = in
		} else {
			c := AppendCompressed(nil, OpBinary, in)
			_, h, err := FrameLen(c)
			if err != nil {
				t.Fatal(err)
			}
			z = c[h:]
		}
		frame := clientFrame(true, OpBinary, z, mask)
		frame[0] |= 0x40
		r := &Reader{MaxMessage: limit, Deflate: true}
		rec := &recorder{}
		err := r.Feed(frame, rec)
		for _, e := range rec.events {
			if len(e.payload) > limit {
				t.Fatalf("%d bytes delivered past the %d limit", len(e.payload), limit)
			}
		}
		if !raw && len(in) <= limit && len(z) <= limit {
			if err != nil || len(rec.events) != 1 || rec.events[0].payload != string(in) {
				t.Fatalf("round trip of %d bytes: %v", len(in), err)
			}
		}
	})
}
