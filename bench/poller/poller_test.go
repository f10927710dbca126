package poller

import (
	"bufio"
	"errors"
	"io"
	"net"
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

// dropper answers each Open by dropping the connection, with a reset when
// the dial's Data says so.
type dropper struct {
	recorder
}

func (d *dropper) Open(c *Conn, now int64) { c.Drop(c.Data.(bool)) }

// TestRequestAndDrop: a custom request goes out byte for byte and a refusal
// fails the dial; Drop ends an upgraded connection with a FIN, or a RST.
func TestRequestAndDrop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type seen struct {
		req string
		err error
	}
	got := make(chan seen, 3)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(nc)
				req, err := http.ReadRequest(r)
				if err != nil {
					got <- seen{err: err}
					return
				}
				if req.URL.Path == "/refuse" {
					io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					got <- seen{req: req.Header.Get("X-Raw")}
					return
				}
				key := req.Header.Get("Sec-WebSocket-Key")
				io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+frame.AcceptKey(key)+"\r\n\r\n")
				_, err = r.ReadByte()
				got <- seen{req: req.URL.Path, err: err}
			}()
		}
	}()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	d := &dropper{}
	e, err := New(Config{Workers: 1, NewHandler: func(int) Handler { return d }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Do(0, func(w *Worker) {
		w.Dial(DialSpec{Server: ap, Request: []byte("GET /refuse HTTP/1.1\r\nHost: h\r\nX-Raw: yes\r\n\r\n")})
		w.Dial(DialSpec{Server: ap, Path: "/fin", Data: false})
		w.Dial(DialSpec{Server: ap, Path: "/rst", Data: true})
	})
	results := map[string]error{}
	for range 3 {
		select {
		case s := <-got:
			results[s.req] = s.err
		case <-time.After(10 * time.Second):
			t.Fatal("timed out")
		}
	}
	if err, ok := results["yes"]; !ok || err != nil {
		t.Errorf("custom request: %v %v", ok, err)
	}
	if err := results["/fin"]; err != io.EOF {
		t.Errorf("Drop(false): server read %v, want EOF", err)
	}
	if err := results["/rst"]; err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("Drop(true): server read %v, want a reset", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.mu.Lock()
		n := d.closed
		d.mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	refused := 0
	for _, err := range d.errs {
		var he *frame.HandshakeError
		if errorsAs(err, &he) && he.Status == 400 {
			refused++
		} else if err != nil {
			t.Errorf("Closed with %v", err)
		}
	}
	if d.closed != 3 || refused != 1 {
		t.Errorf("closed %d, refused %d; errors %v", d.closed, refused, d.errs)
	}
}

// muter records whether each connection's subprotocol was accepted, and
// mutes the ones whose Data says so.
type muter struct {
	mu       sync.Mutex
	accepted map[string]bool
}

func (m *muter) Open(c *Conn, now int64) {
	c.Mute(c.Data.(bool))
	m.mu.Lock()
	m.accepted[c.Spec().Path] = c.Accepted()
	m.mu.Unlock()
}
func (m *muter) Message(*Conn, byte, []byte, int64) {}
func (m *muter) Drained(*Conn, int64)               {}
func (m *muter) Closed(*Conn, int, error)           {}

// TestProtocolAndMute: an offered subprotocol is accepted only when the
// server chooses it, and a muted connection leaves pings unanswered.
func TestProtocolAndMute(t *testing.T) {
	up := websocket.Upgrader{Subprotocols: []string{"wspubsub.meta"}}
	ponged := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPongHandler(func(string) error { ponged <- r.URL.Path; return nil })
		c.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		c.ReadMessage()
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	m := &muter{accepted: map[string]bool{}}
	e, err := New(Config{Workers: 1, NewHandler: func(int) Handler { return m }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Do(0, func(w *Worker) {
		w.Dial(DialSpec{Server: ap, Path: "/meta", Protocol: "wspubsub.meta", Data: false})
		w.Dial(DialSpec{Server: ap, Path: "/plain", Data: false})
		w.Dial(DialSpec{Server: ap, Path: "/muted", Protocol: "wspubsub.meta", Data: true})
	})
	got := map[string]bool{}
	timeout := time.After(time.Second)
	for len(got) < 3 {
		select {
		case p := <-ponged:
			got[p] = true
			continue
		case <-timeout:
		}
		break
	}
	if !got["/meta"] || !got["/plain"] || got["/muted"] {
		t.Errorf("pongs from %v, want /meta and /plain only", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.accepted["/meta"] || m.accepted["/plain"] || !m.accepted["/muted"] {
		t.Errorf("accepted %v", m.accepted)
	}
}
