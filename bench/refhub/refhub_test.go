package refhub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Keys = map[string]string{"k1": "d"}
	s, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func dial(t *testing.T, s *Server, path string) (*websocket.Conn, int) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+s.Addr+path, nil)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { c.Close() })
	return c, http.StatusSwitchingProtocols
}

func TestStatusCodes(t *testing.T) {
	s := start(t, Config{})
	if _, code := dial(t, s, "/ws/pub/bad/d/t"); code != http.StatusUnauthorized {
		t.Errorf("bad key: %d", code)
	}
	if _, code := dial(t, s, "/ws/pub/k1/other/t"); code != http.StatusUnauthorized {
		t.Errorf("key of another domain: %d", code)
	}
	if _, code := dial(t, s, "/ws/sub/d/t"); code != http.StatusNotFound {
		t.Errorf("subscribe before publisher: %d", code)
	}
	if _, code := dial(t, s, "/ws/pub/k1/d/t"); code != http.StatusSwitchingProtocols {
		t.Errorf("publisher: %d", code)
	}
	if _, code := dial(t, s, "/ws/pub/k1/d/t"); code != http.StatusConflict {
		t.Errorf("second publisher: %d", code)
	}
}

func TestFanoutInOrder(t *testing.T) {
	s := start(t, Config{})
	pub, _ := dial(t, s, "/ws/pub/k1/d/t")
	var subs []*websocket.Conn
	for range 3 {
		c, code := dial(t, s, "/ws/sub/d/t")
		if c == nil {
			t.Fatalf("subscribe: %d", code)
		}
		subs = append(subs, c)
	}
	// A subscriber's own message is dropped.
	subs[0].WriteMessage(websocket.TextMessage, []byte("ignored"))
	for i := range 50 {
		mt := websocket.BinaryMessage
		if i%2 == 0 {
			mt = websocket.TextMessage
		}
		if err := pub.WriteMessage(mt, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range subs {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := range 50 {
			mt, p, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			wantType := websocket.BinaryMessage
			if i%2 == 0 {
				wantType = websocket.TextMessage
			}
			if mt != wantType || len(p) != 1 || p[0] != byte(i) {
				t.Fatalf("message %d: type %d payload %v", i, mt, p)
			}
		}
	}
}

func TestTopicClosedAfterGrace(t *testing.T) {
	s := start(t, Config{GracePeriod: 50 * time.Millisecond})
	pub, _ := dial(t, s, "/ws/pub/k1/d/t")
	sub, _ := dial(t, s, "/ws/sub/d/t")
	pub.Close()
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := sub.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseTopicClosed {
		t.Fatalf("want close 4001, got %v", err)
	}
}

func TestSubscribeWaits(t *testing.T) {
	s := start(t, Config{SubscribeWaits: true})
	sub, code := dial(t, s, "/ws/sub/d/t")
	if sub == nil {
		t.Fatalf("subscribe first: %d", code)
	}
	pub, _ := dial(t, s, "/ws/pub/k1/d/t")
	pub.WriteMessage(websocket.BinaryMessage, []byte("x"))
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, p, err := sub.ReadMessage(); err != nil || string(p) != "x" {
		t.Fatalf("got %q %v", p, err)
	}
}

// TestPongTimeout: a subscriber that answers pings stays; one that does
// not is closed with 4003.
func TestPongTimeout(t *testing.T) {
	s := start(t, Config{PingPeriod: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	pub, _ := dial(t, s, "/ws/pub/k1/d/t")
	alive, _ := dial(t, s, "/ws/sub/d/t")
	mute, _ := dial(t, s, "/ws/sub/d/t")
	// The one that reads all along answers pings as it reads.
	got := make(chan error, 1)
	go func() {
		alive.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, p, err := alive.ReadMessage()
		if err == nil && string(p) != "after" {
			err = fmt.Errorf("got %q", p)
		}
		got <- err
	}()
	mute.SetPingHandler(func(string) error { return nil })
	mute.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := mute.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseIdleTimeout {
		t.Fatalf("silent subscriber: want close 4003, got %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := pub.WriteMessage(websocket.BinaryMessage, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("subscriber that answers pings: %v", err)
	}
}
