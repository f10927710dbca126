// Package refhub is the reference hub the load tests compare ours against:
// the same protocol written the way most Go code would write it, with
// gorilla/websocket, a reader and a writer goroutine per subscriber, a
// mutex-guarded map of topics and a bounded channel per subscriber. It is a
// baseline, so it is meant to be idiomatic and reasonable, not slow on
// purpose: a broadcast is encoded once (websocket.PreparedMessage) and write
// buffers are pooled.
//
// Protocol:
//
//	GET /ws/pub/{key}/{domain}/{topic}  publisher; 401 for a bad key, 409 if
//	                                    the topic already has a publisher
//	GET /ws/sub/{domain}/{topic}        subscriber; 404 if the topic has no
//	                                    publisher (unless SubscribeWaits)
//
// Every message a publisher sends goes to every subscriber of its topic, in
// order, with its frame type. What subscribers send is dropped. Close codes:
// 1001 on shutdown, 4000 for a subscriber whose queue overflowed, 4001 when
// a topic's publisher has been gone for longer than the grace period, 4003
// for a subscriber that answered no ping for PingPeriod + PongTimeout (when
// PongTimeout is set: the read deadline of gorilla's own chat example). It
// keeps no history: a subscriber that reconnects gets the live stream, and
// query parameters such as since are ignored.
//
// Concurrency contract: Hub's methods are safe from any goroutine. Lock
// order: Hub.mu before topic.mu. A publisher's goroutine sends to
// subscriber channels under topic.mu with a non-blocking send, so a slow
// subscriber never stalls a publisher: it is cut off instead.
package refhub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes of the protocol.
const (
	CloseSlowConsumer = 4000
	CloseTopicClosed  = 4001
	CloseIdleTimeout  = 4003
)

// Config sets up a Hub. Zero fields take the defaults documented here.
type Config struct {
	// Keys maps each valid publisher key to the domain it is valid for.
	Keys map[string]string
	// SubscribeWaits lets subscribers join a topic before its publisher.
	SubscribeWaits bool
	// GracePeriod is how long a topic outlives its publisher. Default 10 s.
	GracePeriod time.Duration
	// QueueLen bounds the messages queued for one subscriber; beyond it the
	// subscriber is closed with 4000. Default 256.
	QueueLen int
	// MaxMessage bounds a published message. Default 1 MiB.
	MaxMessage int64
	// WriteTimeout bounds one write to a subscriber. Default 10 s.
	WriteTimeout time.Duration
	// PingPeriod is how often subscribers are pinged. Default 30 s.
	PingPeriod time.Duration
	// PongTimeout, when set, closes with 4003 a subscriber from which
	// nothing (a pong or anything else) came for PingPeriod + PongTimeout.
	// Default 0: none.
	PongTimeout time.Duration
	// Logger receives connection errors. Default slog.Default().
	Logger *slog.Logger
}

// Hub routes messages from publishers to subscribers.
type Hub struct {
	cfg      Config
	upgrader websocket.Upgrader

	mu       sync.Mutex
	topics   map[string]*topic
	closing  bool
	conns    sync.WaitGroup
	shutdown chan struct{}
}

type topic struct {
	id string

	mu     sync.RWMutex
	subs   map[*subscriber]struct{}
	pub    *websocket.Conn // nil when no publisher is connected
	hasPub bool            // a publisher holds the topic (set before upgrade)
	gen    int             // bumped whenever hasPub changes, to void stale grace timers
}

type subscriber struct {
	send chan *websocket.PreparedMessage
	quit chan struct{}
	once sync.Once
	code int // close code to send, set before quit closes
}

// New returns a Hub; serve it with its ServeHTTP.
func New(cfg Config) *Hub {
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = 10 * time.Second
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 256
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 1 << 20
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.PingPeriod <= 0 {
		cfg.PingPeriod = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Hub{
		cfg: cfg,
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		topics:   map[string]*topic{},
		shutdown: make(chan struct{}),
	}
}

// Handler returns the hub's routes.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/pub/{key}/{domain}/{topic}", h.publish)
	mux.HandleFunc("GET /ws/sub/{domain}/{topic}", h.subscribe)
	return mux
}

func (h *Hub) publish(w http.ResponseWriter, r *http.Request) {
	domain, name := r.PathValue("domain"), r.PathValue("topic")
	if d, ok := h.cfg.Keys[r.PathValue("key")]; !ok || d != domain {
		http.Error(w, "key not valid for this domain", http.StatusUnauthorized)
		return
	}
	id := domain + "/" + name
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	t := h.topics[id]
	if t == nil {
		t = &topic{id: id, subs: map[*subscriber]struct{}{}}
		h.topics[id] = t
	}
	t.mu.Lock()
	if t.hasPub {
		t.mu.Unlock()
		h.mu.Unlock()
		http.Error(w, "topic already has a publisher", http.StatusConflict)
		return
	}
	t.hasPub = true
	t.gen++
	t.mu.Unlock()
	h.conns.Add(1)
	h.mu.Unlock()
	defer h.conns.Done()

	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.publisherGone(t)
		return
	}
	conn.SetReadLimit(h.cfg.MaxMessage)
	t.mu.Lock()
	t.pub = conn
	t.mu.Unlock()
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			break
		}
		pm, err := websocket.NewPreparedMessage(mt, data)
		if err != nil {
			break
		}
		t.broadcast(pm)
	}
	conn.Close()
	h.publisherGone(t)
}

// broadcast queues pm for every subscriber; one whose queue is full is cut
// off with 4000.
func (t *topic) broadcast(pm *websocket.PreparedMessage) {
	t.mu.RLock()
	for s := range t.subs {
		select {
		case s.send <- pm:
		default:
			s.kick(CloseSlowConsumer)
		}
	}
	t.mu.RUnlock()
}

// publisherGone releases the topic and closes it after the grace period
// unless a new publisher takes it over.
func (h *Hub) publisherGone(t *topic) {
	t.mu.Lock()
	t.hasPub = false
	t.pub = nil
	t.gen++
	gen := t.gen
	t.mu.Unlock()
	time.AfterFunc(h.cfg.GracePeriod, func() { h.expire(t, gen) })
}

func (h *Hub) expire(t *topic, gen int) {
	h.mu.Lock()
	t.mu.Lock()
	if t.gen != gen || t.hasPub || h.topics[t.id] != t {
		t.mu.Unlock()
		h.mu.Unlock()
		return
	}
	delete(h.topics, t.id)
	subs := t.subs
	t.subs = map[*subscriber]struct{}{}
	t.mu.Unlock()
	h.mu.Unlock()
	for s := range subs {
		s.kick(CloseTopicClosed)
	}
}

func (h *Hub) subscribe(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("domain") + "/" + r.PathValue("topic")
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	t := h.topics[id]
	if t == nil {
		if !h.cfg.SubscribeWaits {
			h.mu.Unlock()
			http.Error(w, "topic has no publisher", http.StatusNotFound)
			return
		}
		t = &topic{id: id, subs: map[*subscriber]struct{}{}}
		h.topics[id] = t
		t.gen++
		gen := t.gen
		time.AfterFunc(h.cfg.GracePeriod, func() { h.expire(t, gen) })
	}
	// Join before the upgrade, so a subscriber that has seen its 101 misses
	// nothing published after it.
	s := &subscriber{
		send: make(chan *websocket.PreparedMessage, h.cfg.QueueLen),
		quit: make(chan struct{}),
	}
	t.mu.Lock()
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	h.conns.Add(1)
	h.mu.Unlock()
	defer h.conns.Done()

	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		t.leave(s)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.writePump(conn, s)
	}()
	// The reader drops what subscribers send; it is there to see pongs,
	// close frames and the connection ending.
	conn.SetReadLimit(4096)
	conn.SetPongHandler(func(string) error { return nil })
	if h.cfg.PongTimeout > 0 {
		wait := h.cfg.PingPeriod + h.cfg.PongTimeout
		conn.SetReadDeadline(time.Now().Add(wait))
		conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(wait)) })
	}
	for {
		if _, _, err := conn.NextReader(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.kick(CloseIdleTimeout)
			}
			break
		}
		if h.cfg.PongTimeout > 0 {
			conn.SetReadDeadline(time.Now().Add(h.cfg.PingPeriod + h.cfg.PongTimeout))
		}
	}
	s.kick(0)
	<-done
	t.leave(s)
}

func (t *topic) leave(s *subscriber) {
	t.mu.Lock()
	delete(t.subs, s)
	t.mu.Unlock()
}

func (s *subscriber) kick(code int) {
	s.once.Do(func() {
		s.code = code
		close(s.quit)
	})
}

func (h *Hub) writePump(conn *websocket.Conn, s *subscriber) {
	ping := time.NewTicker(h.cfg.PingPeriod)
	defer func() {
		ping.Stop()
		conn.Close()
	}()
	for {
		select {
		case pm := <-s.send:
			conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
			if err := conn.WritePreparedMessage(pm); err != nil {
				h.cfg.Logger.Debug("refhub: cannot write to a subscriber", "err", err)
				s.kick(0)
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(h.cfg.WriteTimeout)); err != nil {
				s.kick(0)
				return
			}
		case <-s.quit:
			if s.code != 0 {
				msg := websocket.FormatCloseMessage(s.code, closeReason(s.code))
				conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			}
			return
		}
	}
}

func closeReason(code int) string {
	switch code {
	case CloseSlowConsumer:
		return "slow consumer"
	case CloseTopicClosed:
		return "topic closed"
	case CloseIdleTimeout:
		return "idle timeout: no answer to ping"
	case websocket.CloseGoingAway:
		return "shutting down"
	}
	return ""
}

// Shutdown closes every connection with 1001 and waits for their
// goroutines to end, or for ctx.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	var pubs []*websocket.Conn
	for _, t := range h.topics {
		t.mu.Lock()
		for s := range t.subs {
			s.kick(websocket.CloseGoingAway)
		}
		if t.pub != nil {
			pubs = append(pubs, t.pub)
		}
		t.mu.Unlock()
	}
	h.mu.Unlock()
	for _, c := range pubs {
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutting down")
		c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.Close()
	}
	done := make(chan struct{})
	go func() {
		h.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot finish closing connections: %w", ctx.Err())
	}
}

// Server is a Hub listening on a TCP address.
type Server struct {
	Hub  *Hub
	Addr string // host:port it listens on
	http *http.Server
	done chan error
}

// Listen starts a Hub on addr (e.g. 127.0.0.1:0).
func Listen(addr string, cfg Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	h := New(cfg)
	s := &Server{
		Hub:  h,
		Addr: ln.Addr().String(),
		http: &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.http.Serve(ln) }()
	return s, nil
}

// Close stops accepting, closes every connection with 1001 and waits for
// them, at most until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	errHTTP := s.http.Shutdown(ctx)
	errHub := s.Hub.Shutdown(ctx)
	if err := <-s.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cannot serve: %w", err)
	}
	return errors.Join(errHTTP, errHub)
}
