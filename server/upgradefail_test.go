package server_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/server"
)

// TestUpgradeWriteFails: a subscriber that resets its connection right
// after its request makes the hub's 101 write fail. The hub logs it, undoes
// the join and closes the connection at once, and its publisher and other
// subscribers carry on. Whether the reset lands before the 101 is a race
// the client wins most of the time on loopback; the test tries until it has.
func TestUpgradeWriteFails(t *testing.T) {
	var logs syncBuffer
	h := startHub(t, func(c *server.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	req := []byte(request("GET", "/ws/sub/test/news", upgradeHeaders()...))
	const failed = "cannot send the handshake's response"
	for i := 0; i < 200 && !strings.Contains(logs.String(), failed); i++ {
		nc, err := net.Dial("tcp", h.Addr())
		if err != nil {
			t.Fatal(err)
		}
		tc := nc.(*net.TCPConn)
		if err := tc.SetLinger(0); err != nil { // close sends a reset
			t.Fatal(err)
		}
		if _, err := tc.Write(req); err != nil {
			t.Fatal(err)
		}
		tc.Close()
	}
	if !strings.Contains(logs.String(), failed) {
		t.Fatal("no 101 write failed in 200 reset handshakes: nothing logged")
	}
	// Every reset subscriber is gone, counted as abandoned or as a
	// subscriber that left; only s is left.
	waitFor(t, "the reset subscribers to be gone", func() bool { return h.Stats().Subscribers.Load() == 1 })
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatalf("the failed write was not logged at debug:\n%s", logs.String())
	}
	if err := p.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.TextMessage, []byte("still here"))
}
