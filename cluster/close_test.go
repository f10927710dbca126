package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
)

// TestCloseTimesOut: a node that cannot write its topics' ownership records
// before Close's context ends (NATS is gone while its publisher's grace
// period starts) says so instead of reporting a clean close.
func TestCloseTimesOut(t *testing.T) {
	tc := newCluster(t)
	a := tc.node(t, "")
	p := a.pub(t, "news")
	s := a.sub(t, "news")
	publish(t, p, websocket.TextMessage, []byte("hello"))
	expect(t, s, websocket.TextMessage, []byte("hello"))
	tc.nats.Stop()
	leave(t, p) // the grace period starts: a record to write, and no NATS
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := a.cl.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ownership records") {
		t.Fatalf("Close without NATS = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if err := a.cl.Close(context.Background()); err != nil {
		t.Fatalf("second Close = %v, want nil: the node has stopped by now", err)
	}
}

// TestLeaveAfterCloseIsLogged: a subscriber that leaves after its node
// closed cannot unsubscribe the node from NATS; the node says so (at debug:
// the subscription went with the connection) and the hub carries on.
func TestLeaveAfterCloseIsLogged(t *testing.T) {
	tc := newCluster(t)
	var logs logBuffer
	a := tc.node(t, "", func(_ *server.Config, c *cluster.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	p := a.pub(t, "news")
	s := a.sub(t, "news")
	publish(t, p, websocket.TextMessage, []byte("hello"))
	expect(t, s, websocket.TextMessage, []byte("hello"))
	if err := a.cl.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	leave(t, s)
	waitFor(t, "the failed unsubscribe to be logged", func() bool {
		return strings.Contains(logs.String(), "cannot unsubscribe from a topic on NATS")
	})
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "cannot unsubscribe") {
			line = l
		}
	}
	if !strings.Contains(line, "level=DEBUG") || !strings.Contains(line, "topic=news") || !strings.Contains(line, "connection closed") {
		t.Fatalf("logged %q, want a debug line naming the topic and the closed connection", line)
	}
	if got := a.refused(t, "/ws/sub/test/other"); got != 503 {
		t.Fatalf("the hub after its node closed: %d, want 503 (cluster unavailable)", got)
	}
}
