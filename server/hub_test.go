package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// hub is a real hub on 127.0.0.1 with a real key file, for one test.
type hub struct {
	*server.Server
	keys *filestore.Store
	key  string // a key for domain "test"
	url  string // ws://addr
}

// startHub starts a hub with default settings changed by opts.
func startHub(t testing.TB, opts ...func(*server.Config)) *hub {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "test", "tester")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Listen: "127.0.0.1:0",
		Keys:   store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &hub{Server: srv, keys: store, key: key, url: "ws://" + srv.Addr()}
}

var dialer = websocket.Dialer{HandshakeTimeout: 5 * time.Second}

// dial opens a WebSocket to path and fails the test on any error.
func (h *hub) dial(t testing.TB, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := dialer.Dial(h.url+path, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refused dials path and returns the HTTP status of the refusal.
func (h *hub) refused(t testing.TB, path string, hdr http.Header) int {
	t.Helper()
	c, resp, err := dialer.Dial(h.url+path, hdr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: upgraded, want a refusal", path)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, no response", path, err)
	}
	return resp.StatusCode
}

func (h *hub) pub(t testing.TB, domain, topic string) *websocket.Conn {
	return h.dial(t, fmt.Sprintf("/ws/pub/%s/%s/%s", h.key, domain, topic), nil)
}

func (h *hub) sub(t testing.TB, domain, topic string) *websocket.Conn {
	return h.dial(t, fmt.Sprintf("/ws/sub/%s/%s", domain, topic), nil)
}

// expect reads one message and checks its type and bytes.
func expect(t testing.TB, c *websocket.Conn, typ int, data []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	gt, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v (want %d bytes)", err, len(data))
	}
	if gt != typ || !bytes.Equal(got, data) {
		t.Fatalf("got type %d %.40q, want type %d %.40q", gt, got, typ, data)
	}
}

// expectClosed reads from c and checks that the next thing the hub sends is
// a close frame with code.
func expectClosed(t testing.TB, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, data, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got type %d %.40q, want close %d", typ, data, code)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("read: %v, want close %d", err, code)
	}
}

// waitFor polls cond until it holds, failing the test after 10 seconds. It
// is for state the hub exposes only by counters; anything a client can read
// is read instead.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The handshake key of RFC 6455's example and the accept value it calls for.
const (
	wsKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	wsAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// upgradeHeaders are the header lines of a valid upgrade request, with extra
// appended.
func upgradeHeaders(extra ...string) []string {
	return append([]string{
		"Host: hub.test",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: " + wsKey,
		"Sec-WebSocket-Version: 13",
	}, extra...)
}

// request is an HTTP/1.1 request head.
func request(method, target string, headers ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawClient is a TCP client driven by hand, for bytes no WebSocket library
// sends. Its frames are read as the hub documents them: final and unmasked.
type rawClient struct {
	net.Conn
	r *bufio.Reader
}

// rawDial connects to the hub; rcvbuf > 0 sets SO_RCVBUF before connecting.
func (h *hub) rawDial(t testing.TB, rcvbuf int) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{Conn: nc, r: bufio.NewReader(nc)}
}

// send writes each of bs, failing the test on error.
func (c *rawClient) send(t testing.TB, bs ...[]byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, b := range bs {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// response reads an HTTP response; its body, if any, is read in full.
func (c *rawClient) response(t testing.TB) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response body: %v", err)
	}
	return resp, string(body)
}

// roundTrip sends req on a new connection and returns the hub's answer. A
// refusal must end the connection.
func (h *hub) roundTrip(t testing.TB, req string) *http.Response {
	t.Helper()
	c := h.rawDial(t, 0)
	c.send(t, []byte(req))
	resp, _ := c.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.expectEnd(t)
	}
	c.Close()
	return resp
}

// rawUpgrade completes a handshake for target by hand.
func (h *hub) rawUpgrade(t testing.TB, target string, headers ...string) *rawClient {
	t.Helper()
	c := h.rawDial(t, 0)
	c.send(t, []byte(request("GET", target, upgradeHeaders(headers...)...)))
	c.upgraded(t)
	return c
}

// upgraded reads the hub's answer to a handshake and checks it is a 101.
func (c *rawClient) upgraded(t testing.TB) {
	t.Helper()
	resp, body := c.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s %q, want 101", resp.Status, body)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, wsAccept)
	}
}

func (h *hub) rawPub(t testing.TB, domain, topic string) *rawClient {
	return h.rawUpgrade(t, fmt.Sprintf("/ws/pub/%s/%s/%s", h.key, domain, topic))
}

func (h *hub) rawSub(t testing.TB, domain, topic string) *rawClient {
	return h.rawUpgrade(t, fmt.Sprintf("/ws/sub/%s/%s", domain, topic))
}

// Bits of a frame's first byte.
const (
	finBit  = 0x80
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// masked is a client frame: first byte b0 (FIN, RSV and opcode bits), the
// payload masked.
func masked(b0 byte, payload []byte) []byte {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b := appendLen([]byte{b0}, 0x80, len(payload))
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i&3])
	}
	return b
}

// unmasked is a frame as a server would send it.
func unmasked(b0 byte, payload []byte) []byte {
	return append(appendLen([]byte{b0}, 0, len(payload)), payload...)
}

func appendLen(b []byte, maskBit byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, maskBit|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, maskBit|126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, maskBit|127), uint64(n))
}

// closePayload is a close frame's payload: code and reason.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// readFrame reads one server frame, which must be final and unmasked.
func (c *rawClient) readFrame() (b0 byte, payload []byte, err error) {
	var hd [2]byte
	if _, err := io.ReadFull(c.r, hd[:]); err != nil {
		return 0, nil, err
	}
	if hd[0]&0x70 != 0 || hd[0]&finBit == 0 || hd[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("server frame header % x: want FIN, no RSV bits, no mask", hd)
	}
	n := uint64(hd[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(c.r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 64<<20 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return hd[0], payload, nil
}

// next reads one frame within five seconds.
func (c *rawClient) next(t testing.TB) (b0 byte, payload []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b0, payload, err := c.readFrame()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return b0, payload
}

// expectFrame reads one frame and checks its first byte and payload.
func (c *rawClient) expectFrame(t testing.TB, b0 byte, payload []byte) {
	t.Helper()
	g0, got := c.next(t)
	if g0 != b0 || !bytes.Equal(got, payload) {
		t.Fatalf("got frame %#x %.40q, want %#x %.40q", g0, got, b0, payload)
	}
}

// expectClose reads one frame and checks it is a close frame with code.
func (c *rawClient) expectClose(t testing.TB, code uint16) {
	t.Helper()
	b0, p := c.next(t)
	if b0 != finBit|opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != code {
		t.Fatalf("got frame %#x %.40q, want close %d", b0, p, code)
	}
}

// expectEnd checks that the hub ends the connection, within five seconds,
// without sending anything more.
func (c *rawClient) expectEnd(t testing.TB) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := io.ReadFull(c.r, b[:])
	switch {
	case n > 0:
		t.Fatalf("got more bytes (%#x), want the connection to end", b[0])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("read: %v, want the connection to end", err)
	}
}

// closeHandshake answers the hub's close frame and checks the hub then ends
// the connection.
func (c *rawClient) closeHandshake(t testing.TB, code uint16) {
	t.Helper()
	c.send(t, masked(finBit|opClose, closePayload(code, "")))
	c.expectEnd(t)
}

func TestPublishReachesSubscribers(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	s1 := h.sub(t, "test", "news")
	s2 := h.sub(t, "test", "news")
	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, []byte{0, 1, 2, 0xff}},
		{websocket.BinaryMessage, []byte{}},
		{websocket.TextMessage, []byte("")},
		{websocket.BinaryMessage, bytes.Repeat([]byte{7}, 70000)},
		{websocket.TextMessage, []byte("héllo wörld")},
	}
	for _, m := range msgs {
		if err := p.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*websocket.Conn{s1, s2} {
		for _, m := range msgs {
			expect(t, s, m.typ, m.data)
		}
	}
}
