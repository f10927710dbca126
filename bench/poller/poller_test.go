package poller

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/bench/frame"
)

// recorder is a Handler that keeps what it saw; the test reads it after
// the engine closed.
type recorder struct {
	mu      sync.Mutex
	open    int
	msgs    [][]byte
	stamps  []int64
	closed  int
	codes   []int
	errs    []error
	stats   Stats
	w       *Worker
	written chan int64
}

func (r *recorder) Open(c *Conn, now int64) {
	r.mu.Lock()
	r.open++
	r.w = c.Worker()
	r.mu.Unlock()
	if err := c.WriteMessage(frame.OpText, []byte("hello")); err != nil {
		panic(err)
	}
	c.Flush()
}

func (r *recorder) Message(c *Conn, op byte, p []byte, now int64) {
	r.mu.Lock()
	r.msgs = append(r.msgs, append([]byte{}, p...))
	r.stamps = append(r.stamps, now)
	r.stats = c.Worker().Stats()
	r.mu.Unlock()
}

func (r *recorder) Drained(*Conn, int64) {}

func (r *recorder) Closed(c *Conn, code int, err error) {
	r.mu.Lock()
	r.closed++
	r.codes = append(r.codes, code)
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// server upgrades, expects "hello", sends n messages one by one with a
// pause, answers a ping's pong, then closes with 4000.
func server(t *testing.T, n int, sentAt chan<- int64) *httptest.Server {
	up := websocket.Upgrader{}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, p, err := c.ReadMessage()
		if err != nil || string(p) != "hello" {
			t.Errorf("server read %q %v", p, err)
			return
		}
		for i := range n {
			time.Sleep(20 * time.Millisecond)
			sentAt <- time.Now().UnixNano()
			c.WriteMessage(websocket.BinaryMessage, []byte(strings.Repeat("x", i*1000)))
		}
		pong := make(chan struct{})
		c.SetPongHandler(func(string) error { close(pong); return nil })
		c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
		go c.ReadMessage()
		select {
		case <-pong:
		case <-time.After(5 * time.Second):
			t.Error("no pong")
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "slow"), time.Now().Add(time.Second))
		time.Sleep(100 * time.Millisecond)
	}))
}

func TestEngine(t *testing.T) {
	const n = 5
	sentAt := make(chan int64, n)
	srv := server(t, n, sentAt)
	defer srv.Close()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	rec := &recorder{}
	e, err := New(Config{Workers: 1, NewHandler: func(int) Handler { return rec }})
	if err != nil {
		t.Fatal(err)
	}
	e.Do(0, func(w *Worker) {
		w.Dial(DialSpec{Server: ap, Source: netip.MustParseAddr("127.0.0.2"), Path: "/ws"})
		w.Dial(DialSpec{Server: ap, Path: "/missing"})
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		done := rec.closed == 2
		rec.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Close()
	if rec.open != 1 || rec.closed != 2 {
		t.Fatalf("open %d closed %d", rec.open, rec.closed)
	}
	if len(rec.msgs) != n {
		t.Fatalf("got %d messages, want %d", len(rec.msgs), n)
	}
	for i, m := range rec.msgs {
		if len(m) != i*1000 {
			t.Errorf("message %d: %d bytes", i, len(m))
		}
		sent := <-sentAt
		if d := rec.stamps[i] - sent; d < 0 || d > int64(time.Second) {
			t.Errorf("message %d: receive stamp %d ns after the send", i, d)
		}
	}
	if rec.stats.Stamped == 0 {
		t.Errorf("no kernel receive timestamps: %+v", rec.stats)
	}
	var sawSlow, saw404 bool
	for i, code := range rec.codes {
		if code == 4000 {
			sawSlow = true
		}
		var he *frame.HandshakeError
		if errorsAs(rec.errs[i], &he) && he.Status == 404 {
			saw404 = true
		}
	}
	if !sawSlow || !saw404 {
		t.Errorf("close codes %v errors %v", rec.codes, rec.errs)
	}
}

func errorsAs(err error, target **frame.HandshakeError) bool {
	return errors.As(err, target)
}
