package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// TestSlowCutOutsideLocks: a fan-out that finds a subscriber's backlog full
// marks it and lets go of the topic's Publishing mutex before it takes the
// subscriber's client.mu to close it. Here another goroutine holds that
// client.mu: the publish must still release the topic (the next publisher
// of the topic may go on), and close the subscriber with 4000 once it can.
// The fan-out used to close it under the Publishing mutex.
func TestSlowCutOutsideLocks(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", Keys: anyKey{}, MaxBacklog: 64 << 10,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	k := topics.Key{Domain: "test", Topic: "slow"}
	tp, err := s.topics.AddPublisher(k)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /ws/sub/test/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("subscriber handshake: %v %v", resp, err)
	}
	// The subscriber reads nothing more.
	deadline := time.Now().Add(5 * time.Second)
	for tp.Len() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber did not join")
		}
		time.Sleep(time.Millisecond)
	}
	sub := tp.Subscribers()[0]

	sub.mu.Lock()
	locked := true
	defer func() {
		if locked {
			sub.mu.Unlock()
		}
	}()
	payload := make([]byte, 1<<20)
	frame := ws.AppendFrame(nil, ws.OpBinary, payload)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 256 {
			s.publishFrame(tp, frame, len(payload), nil)
			if s.stats.SlowConsumers.Load() > 0 {
				return
			}
		}
	}()
	for s.stats.SlowConsumers.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the subscriber's backlog never filled")
		}
		time.Sleep(time.Millisecond)
	}
	for !tp.Publishing.TryLock() {
		if time.Now().After(deadline) {
			t.Fatal("the topic's Publishing mutex is held while the subscriber's client.mu is")
		}
		time.Sleep(time.Millisecond)
	}
	tp.Publishing.Unlock()
	select {
	case <-done:
		t.Fatal("the slow subscriber was closed without its client.mu")
	case <-time.After(50 * time.Millisecond):
	}
	sub.mu.Unlock()
	locked = false
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the publish did not end once the subscriber's client.mu was free")
	}
	sub.mu.Lock()
	code, st := sub.closeCode, sub.state
	sub.mu.Unlock()
	if code != ws.CloseSlowConsumer || st != stateClosing && st != stateClosed {
		t.Fatalf("the slow subscriber is in state %d with close code %d; want closing with %d", st, code, ws.CloseSlowConsumer)
	}
	if n := s.stats.SlowConsumers.Load(); n != 1 {
		t.Fatalf("%d slow consumers counted, want 1", n)
	}
}
