package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/server"
)

// hub is a real hub on 127.0.0.1 with a real key file, for one test.
type hub struct {
	*server.Server
	keys *keys.FileStore
	key  string // a key for domain "test"
	url  string // ws://addr
}

// startHub starts a hub with default settings changed by opts.
func startHub(t testing.TB, opts ...func(*server.Config)) *hub {
	t.Helper()
	store, err := keys.OpenFile(filepath.Join(t.TempDir(), "keys.json"))
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
