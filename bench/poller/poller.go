// Package poller is the load generator's client engine: a few epoll workers
// that each own many non-blocking WebSocket client connections, read many
// frames per system call and call a Handler for each message, with no
// goroutine per connection and no allocation per message.
//
// Workers use edge-triggered epoll and block in epoll_wait without handing
// their P back to the scheduler (see Worker.wait); New raises GOMAXPROCS to
// Workers+2 for that.
//
// Concurrency contract: every Conn belongs to one worker, and everything that
// touches it — Handler calls, Timer fires, Conn methods — runs on that
// worker's goroutine. Other goroutines reach a worker only through
// Engine.Do, whose queue is bounded (Do blocks while it is full). A Handler
// gets one instance per worker (Config.NewHandler), so handlers need no
// locks; they must publish anything other goroutines read with atomics.
// Handlers and Timers must never block: they run the event loop.
package poller

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/wspubsub/wspubsub/bench/frame"
)

// Config sets up an Engine. Zero fields take the defaults documented here.
type Config struct {
	// Workers is the number of epoll loops, each on its own goroutine.
	// Default 2.
	Workers int
	// MaxMessage bounds a received message. Default 1 MiB.
	MaxMessage int
	// DialConcurrency bounds the handshakes a worker has in flight at once,
	// so a burst of dials does not overflow the server's accept backlog.
	// Default 64.
	DialConcurrency int
	// HandshakeTimeout bounds connect plus upgrade. Default 15 s.
	HandshakeTimeout time.Duration
	// MaxOutput bounds the bytes a connection may have queued for writing;
	// Conn.Write fails with ErrOutputFull beyond it. Default 4 MiB.
	MaxOutput int
	// Coalesce, when positive, makes a worker that just handled events
	// pause this long before polling again, so that more frames pile up in
	// each socket and a read brings several. It trades up to Coalesce of
	// added receive latency for fewer system calls. Default 0.
	Coalesce time.Duration
	// WallClockReceive turns off kernel receive timestamps. By default each
	// socket has SO_TIMESTAMPNS, and Handler.Message gets the time the
	// kernel queued the data (CLOCK_REALTIME) rather than the time this
	// process got round to reading it, so neither Coalesce nor a busy client
	// inflates measured latency. When a read spans several segments the
	// stamp is the last segment's.
	WallClockReceive bool
	// NewHandler returns the Handler of worker i. Required.
	NewHandler func(worker int) Handler
}

// Handler receives the events of the connections of one worker.
type Handler interface {
	// Open is called once the server accepted the upgrade.
	Open(c *Conn, now int64)
	// Message is called for each complete data message; payload is only
	// valid during the call. now is the CLOCK_REALTIME nanoseconds of the
	// read that brought the message's last byte.
	Message(c *Conn, op byte, payload []byte, now int64)
	// Drained is called when a connection's output queue has been written
	// out completely after having been non-empty.
	Drained(c *Conn, now int64)
	// Closed is called once per dialed connection when it is gone. code is
	// the close code the server sent, or 0. err is nil when Close was
	// called, otherwise it says why the connection failed or ended.
	Closed(c *Conn, code int, err error)
}

// Timer is an event scheduled on a worker (Worker.Schedule). Fire returns
// the CLOCK_REALTIME nanoseconds at which to fire again, or 0 to stop.
type Timer interface {
	Fire(now int64) (next int64)
}

// DialSpec says where a connection goes.
type DialSpec struct {
	// Server is the hub's address; it must be IPv4.
	Server netip.AddrPort
	// Source is the local address to bind, or the zero Addr for the
	// kernel's choice.
	Source netip.Addr
	// Host is the Host header; defaults to Server.
	Host string
	// Path is the request path, e.g. /ws/sub/d/t.
	Path string
	// Data is the caller's state for the connection (Conn.Data).
	Data any
	// Protocol, when set, is offered in Sec-WebSocket-Protocol; whether the
	// server chose it is Conn.Accepted. A server that answers with another
	// fails the dial.
	Protocol string
	// Extensions, when set, is offered in Sec-WebSocket-Extensions; if the
	// server agrees to permessage-deflate, compressed messages are
	// inflated before Handler.Message sees them.
	Extensions string
	// Raw, with Extensions, leaves compressed messages compressed:
	// Handler.Message gets them as they came, and Conn.Compressed says so.
	Raw bool
	// Request, when set, is written instead of the upgrade request: for
	// clients that send a broken or partial handshake on purpose. The
	// answer is parsed as usual, so anything but a valid 101 fails the
	// dial (a refusal with a *frame.HandshakeError).
	Request []byte
}

// Errors of the engine.
var (
	ErrOutputFull       = errors.New("poller: connection output queue is full")
	ErrHandshakeTimeout = errors.New("poller: connect and upgrade timed out")
	ErrClosedByPeer     = errors.New("poller: server closed the connection")
	ErrEngineClosed     = errors.New("poller: engine closed")
)

const (
	stateQueued = iota
	stateConnecting
	stateHandshake
	stateOpen
	stateClosed
)

const commandQueue = 1024

// epollET is EPOLLET as the uint32 that EpollEvent.Events holds.
const epollET = 1 << 31

// Engine is a set of epoll workers.
type Engine struct {
	cfg     Config
	workers []*Worker
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
}

// Worker is one epoll loop and the connections it owns.
type Worker struct {
	index   int
	cfg     *Config
	h       Handler
	epfd    int
	wakeR   int
	wakeW   int
	cmds    chan func(*Worker)
	events  []syscall.EpollEvent
	buf     []byte // read scratch shared by the worker's connections
	conns   []*Conn
	live    int
	queue   []*Conn // dials not started yet, oldest first
	pending []*Conn // dials in flight (connect or upgrade)
	timers  timerHeap
	stop    bool
	rng     uint64
	nextDue int64 // handshake deadline scan
	stats   Stats
	msg     syscall.Msghdr
	iov     syscall.Iovec
	oob     [64]byte
}

// Stats count a worker's system calls, to see how many frames a read brings.
type Stats struct {
	Waits uint64 // epoll_wait calls that returned events
	Reads uint64 // read calls that returned data
	// Stamped counts reads that came with a kernel receive timestamp.
	Stamped uint64
	// WireBytes counts the bytes read off open connections (after the
	// handshake): what the server sent, compressed or not.
	WireBytes uint64
}

// Conn is one client connection.
type Conn struct {
	// Data is the caller's state, from DialSpec.Data.
	Data any

	w        *Worker
	fd       int
	state    uint8
	spec     DialSpec
	key      string
	hs       []byte // handshake request, then response bytes
	dec      frame.Decoder
	out      []byte
	blocked  bool // a write hit EAGAIN; the next EPOLLOUT edge resumes it
	deadline int64
	sentBye  bool
	accepted bool // the server chose spec.Protocol
	mute     bool // pings go unanswered
}

// New starts an Engine's workers.
func New(cfg Config) (*Engine, error) {
	if cfg.NewHandler == nil {
		return nil, errors.New("poller: Config.NewHandler is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 1 << 20
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = 64
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 15 * time.Second
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = 4 << 20
	}
	// Workers block in epoll_wait holding their P (see Worker.wait); leave
	// Ps for everything else.
	if runtime.GOMAXPROCS(0) < cfg.Workers+2 {
		runtime.GOMAXPROCS(cfg.Workers + 2)
	}
	e := &Engine{cfg: cfg}
	for i := range cfg.Workers {
		w, err := newWorker(i, &e.cfg)
		if err != nil {
			for _, w := range e.workers {
				w.release()
			}
			return nil, err
		}
		e.workers = append(e.workers, w)
	}
	for _, w := range e.workers {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			w.loop()
		}()
	}
	return e, nil
}

func newWorker(i int, cfg *Config) (*Worker, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cannot create an epoll instance: %w", err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("cannot create the wake-up pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, fmt.Errorf("cannot watch the wake-up pipe: %w", err)
	}
	var seed [8]byte
	rand.Read(seed[:])
	w := &Worker{
		index:  i,
		cfg:    cfg,
		h:      cfg.NewHandler(i),
		epfd:   epfd,
		wakeR:  p[0],
		wakeW:  p[1],
		cmds:   make(chan func(*Worker), commandQueue),
		events: make([]syscall.EpollEvent, 512),
		buf:    make([]byte, max(256<<10, cfg.MaxMessage+64<<10)),
		rng:    uint64(seed[0]) | uint64(seed[1])<<8 | uint64(seed[2])<<16 | uint64(seed[3])<<24 | uint64(seed[4])<<32 | 1,
	}
	return w, nil
}

// Workers returns the number of workers.
func (e *Engine) Workers() int { return len(e.workers) }

// Do runs fn on worker i's goroutine. It blocks while that worker's command
// queue is full and fails once the engine is closed.
func (e *Engine) Do(i int, fn func(*Worker)) error {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.closed {
		return ErrEngineClosed
	}
	w := e.workers[i%len(e.workers)]
	w.cmds <- fn
	w.wake()
	return nil
}

// Close closes every connection (sending a close frame where it can) and
// stops the workers. Handlers see Closed for every connection.
func (e *Engine) Close() {
	e.closeMu.Lock()
	if e.closed {
		e.closeMu.Unlock()
		return
	}
	for _, w := range e.workers {
		w.cmds <- func(w *Worker) { w.stop = true }
		w.wake()
	}
	e.closed = true
	e.closeMu.Unlock()
	e.wg.Wait()
}

func (w *Worker) wake() {
	var b [1]byte
	syscall.Write(w.wakeW, b[:]) // EAGAIN means a wake-up is already pending
}

// Index returns the worker's number.
func (w *Worker) Index() int { return w.index }

// Handler returns the worker's Handler.
func (w *Worker) Handler() Handler { return w.h }

// Live returns the number of connections the worker holds, dials included.
func (w *Worker) Live() int { return w.live }

// Schedule makes t fire at CLOCK_REALTIME nanoseconds at.
func (w *Worker) Schedule(t Timer, at int64) {
	w.timers.push(timerEntry{at: at, t: t})
}

// Dial queues a connection; it starts after the current event batch, once
// fewer than DialConcurrency handshakes are in flight. The Handler hears Open
// or Closed.
func (w *Worker) Dial(spec DialSpec) *Conn {
	c := &Conn{Data: spec.Data, w: w, fd: -1, spec: spec}
	w.live++
	w.queue = append(w.queue, c)
	return c
}

// Rand returns a pseudo-random number from the worker's generator.
func (w *Worker) Rand() uint64 {
	// xorshift64*
	x := w.rng
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	w.rng = x
	return x * 2685821657736338717
}

func (w *Worker) startDials() {
	now := time.Now().UnixNano()
	for len(w.queue) > 0 && len(w.pending) < w.cfg.DialConcurrency {
		c := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		if c.state == stateClosed {
			continue
		}
		if err := c.connect(now); err != nil {
			c.fail(0, err)
			continue
		}
		w.pending = append(w.pending, c)
	}
	if len(w.queue) == 0 {
		w.queue = nil // let the backing array go
	}
}

func (c *Conn) connect(now int64) error {
	w := c.w
	srv := c.spec.Server
	if !srv.Addr().Is4() {
		return fmt.Errorf("cannot dial %v: only IPv4 servers are supported", srv)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot create a socket: %w", err)
	}
	c.fd = fd
	w.setConn(fd, c)
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if !w.cfg.WallClockReceive {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}
	if c.spec.Source.IsValid() {
		// IP_BIND_ADDRESS_NO_PORT: pick the port at connect time, so the
		// port space is per destination, not per source address.
		syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, 24, 1)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: c.spec.Source.As4()}); err != nil {
			return fmt.Errorf("cannot bind to %v: %w", c.spec.Source, err)
		}
	}
	err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(srv.Port()), Addr: srv.Addr().As4()})
	if err != nil && err != syscall.EINPROGRESS {
		return fmt.Errorf("cannot connect to %v: %w", srv, err)
	}
	c.state = stateConnecting
	c.deadline = now + int64(w.cfg.HandshakeTimeout)
	// Edge-triggered, in and out at once: no epoll_ctl after this. A read
	// shorter than the buffer means the socket is drained; a write that
	// hits EAGAIN waits for the next EPOLLOUT edge.
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: int32(fd)}
	if err := syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("cannot watch socket: %w", err)
	}
	return nil
}

func (w *Worker) setConn(fd int, c *Conn) {
	for fd >= len(w.conns) {
		w.conns = append(w.conns, make([]*Conn, max(1024, len(w.conns)))...)
	}
	w.conns[fd] = c
}

func (w *Worker) release() {
	syscall.Close(w.epfd)
	syscall.Close(w.wakeR)
	syscall.Close(w.wakeW)
}

func (w *Worker) loop() {
	defer w.release()
	for !w.stop {
		n, err := w.wait(w.timeout())
		if err != nil && err != syscall.EINTR {
			panic(fmt.Sprintf("poller: epoll_wait failed: %v", err))
		}
		if n > 0 {
			w.stats.Waits++
		}
		for i := 0; i < n; i++ {
			ev := w.events[i]
			fd := int(ev.Fd)
			if fd == w.wakeR {
				w.commands()
				continue
			}
			if fd >= len(w.conns) || w.conns[fd] == nil {
				continue
			}
			w.conns[fd].event(ev.Events)
		}
		if n > 0 && w.cfg.Coalesce > 0 {
			ts := syscall.NsecToTimespec(int64(w.cfg.Coalesce))
			syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		now := time.Now().UnixNano()
		w.fireTimers(now)
		if len(w.pending) > 0 && now >= w.nextDue {
			w.expireDials(now)
		}
		// New sockets are made only here, between event batches, so a
		// descriptor closed during a batch is never reused while stale
		// events for it are still in that batch.
		if len(w.queue) > 0 {
			w.startDials()
		}
	}
	for _, c := range w.queue {
		if c.state != stateClosed {
			c.fail(0, ErrEngineClosed)
		}
	}
	for _, c := range w.conns {
		if c != nil {
			c.Close(frame.CloseGoingAway)
		}
	}
}

// maxRawWait bounds a wait that keeps the worker's P, so that the
// goroutine reaches a preemption point at least this often even if no
// signal interrupts it.
const maxRawWait = 10 // ms

// wait is epoll_wait made as a raw system call: the worker keeps its P
// while it blocks, so the runtime does no hand-off per wake-up and sysmon
// does not spin at its 20 µs tick watching a P in a system call — together
// these cost more than the reads themselves under load. The timeout is
// capped, and sysmon's preemption signal interrupts the wait (EINTR), so
// the goroutine still yields to GC and the scheduler. New raises GOMAXPROCS
// so the blocked workers never starve the other goroutines.
func (w *Worker) wait(timeout int) (int, error) {
	if timeout < 0 || timeout > maxRawWait {
		timeout = maxRawWait
	}
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), uintptr(timeout), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Deflate reports whether the server agreed to permessage-deflate
// (DialSpec.Extensions), so that compressed messages are inflated.
func (c *Conn) Deflate() bool { return c.dec.Inflate }

// Compressed reports whether the message Handler.Message is given came
// compressed and is left so (DialSpec.Raw).
func (c *Conn) Compressed() bool { return c.dec.Compressed() }

// Stats returns the worker's counters; call it on the worker's goroutine.
func (w *Worker) Stats() Stats { return w.stats }

func (w *Worker) commands() {
	var b [64]byte
	for {
		if n, _ := syscall.Read(w.wakeR, b[:]); n < len(b) {
			break
		}
	}
	for {
		select {
		case fn := <-w.cmds:
			fn(w)
		default:
			return
		}
	}
}

func (w *Worker) timeout() int {
	t := -1
	now := int64(0)
	if len(w.timers) > 0 {
		now = time.Now().UnixNano()
		d := w.timers[0].at - now
		if d <= 0 {
			return 0
		}
		t = int((d + int64(time.Millisecond) - 1) / int64(time.Millisecond))
	}
	if len(w.pending) > 0 && (t < 0 || t > 100) {
		t = 100
	}
	return t
}

func (w *Worker) fireTimers(now int64) {
	for len(w.timers) > 0 && w.timers[0].at <= now {
		next := w.timers[0].t.Fire(now)
		if next == 0 {
			w.timers.pop()
		} else {
			w.timers[0].at = next
			w.timers.fix0()
		}
	}
}

func (w *Worker) expireDials(now int64) {
	w.nextDue = now + int64(100*time.Millisecond)
	for _, c := range w.pending {
		if c.state != stateClosed && now > c.deadline {
			c.fail(0, ErrHandshakeTimeout)
		}
	}
	w.prunePending()
}

func (w *Worker) prunePending() {
	k := 0
	for _, c := range w.pending {
		if c.state == stateConnecting || c.state == stateHandshake {
			w.pending[k] = c
			k++
		}
	}
	clear(w.pending[k:])
	w.pending = w.pending[:k]
}

func (c *Conn) event(ev uint32) {
	switch c.state {
	case stateConnecting:
		if ev&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		soerr, err := syscall.GetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && soerr != 0 {
			err = syscall.Errno(soerr)
		}
		if err != nil {
			c.fail(0, fmt.Errorf("cannot connect to %v: %w", c.spec.Server, err))
			c.w.prunePending()
			return
		}
		c.sendRequest()
	case stateHandshake, stateOpen:
		if ev&syscall.EPOLLOUT != 0 && len(c.out) > 0 {
			c.flush()
			if c.state == stateClosed {
				return
			}
		}
		if ev&(syscall.EPOLLIN|syscall.EPOLLERR|syscall.EPOLLHUP|syscall.EPOLLRDHUP) != 0 {
			c.readable()
		}
	}
}

func (c *Conn) sendRequest() {
	var seed [16]byte
	r1, r2 := c.w.Rand(), c.w.Rand()
	for i := range 8 {
		seed[i] = byte(r1 >> (8 * i))
		seed[8+i] = byte(r2 >> (8 * i))
	}
	c.key = frame.NewKey(seed)
	host := c.spec.Host
	if host == "" {
		host = c.spec.Server.String()
	}
	c.state = stateHandshake
	if c.spec.Request != nil {
		c.out = append(c.out[:0], c.spec.Request...)
	} else {
		c.out = frame.AppendRequestOffers(c.out[:0], host, c.spec.Path, c.key, c.spec.Protocol, c.spec.Extensions)
	}
	c.flush()
}

// flush writes the output queue; EAGAIN leaves the rest for the next
// EPOLLOUT edge.
func (c *Conn) flush() {
	for len(c.out) > 0 {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(c.fd), uintptr(unsafe.Pointer(&c.out[0])), uintptr(len(c.out)))
		n := int(r)
		var err error
		if e != 0 {
			err = e
		}
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			c.blocked = true
			return
		}
		if err != nil {
			c.fail(0, fmt.Errorf("cannot write to %v: %w", c.spec.Server, err))
			return
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	if c.blocked {
		c.blocked = false
		if c.state == stateOpen {
			c.w.h.Drained(c, time.Now().UnixNano())
		}
	}
}

// readable reads until the socket is drained, as edge-triggered epoll
// requires: a read shorter than the space offered means nothing is left.
func (c *Conn) readable() {
	for c.readOnce() {
	}
}

// readOnce does one read and handles the frames it completes. It reports
// whether the read filled the buffer, so that more may be waiting.
func (c *Conn) readOnce() (more bool) {
	w := c.w
	head := 0
	if c.state == stateOpen {
		head = c.dec.Prepare(w.buf)
	}
	space := len(w.buf) - head
	var n int
	var err error
	var stamp int64
	if c.state == stateOpen && !w.cfg.WallClockReceive {
		n, stamp, err = w.recv(c.fd, w.buf[head:])
	} else {
		n, err = rawRead(c.fd, w.buf[head:])
	}
	now := time.Now().UnixNano()
	if stamp > 0 && stamp <= now {
		now = stamp
		w.stats.Stamped++
	}
	if err == syscall.EAGAIN || err == syscall.EINTR {
		if c.state == stateOpen {
			c.dec.Start(w.buf[:head])
			c.dec.Finish()
		}
		return err == syscall.EINTR
	}
	if err != nil || n == 0 {
		if err == nil {
			err = ErrClosedByPeer
		} else {
			err = fmt.Errorf("cannot read from %v: %w", c.spec.Server, err)
		}
		c.fail(0, err)
		if len(w.pending) > 0 {
			w.prunePending()
		}
		return false
	}
	w.stats.Reads++
	if c.state == stateOpen {
		w.stats.WireBytes += uint64(n)
	}
	more = n == space
	data := w.buf[:head+n]
	if c.state == stateHandshake {
		c.hs = append(c.hs, data...)
		hl, accepted, err := frame.ParseResponseProtocol(c.hs, c.key, c.spec.Protocol)
		if err != nil {
			c.fail(0, err)
			w.prunePending()
			return false
		}
		if hl == 0 {
			return more
		}
		// Frames that came with the response head go to the decoder.
		rest := copy(w.buf, c.hs[hl:])
		data = w.buf[:rest]
		c.state = stateOpen
		c.accepted = accepted
		c.dec.MaxMessage = w.cfg.MaxMessage
		c.dec.Inflate = c.spec.Extensions != "" && bytes.Contains(c.hs[:hl], []byte("permessage-deflate"))
		c.dec.Raw = c.spec.Raw
		c.hs = nil
		w.prunePending()
		w.h.Open(c, now)
		if c.state != stateOpen {
			return false
		}
	}
	c.dec.Start(data)
	for {
		op, p, ok, err := c.dec.Next()
		if err != nil {
			c.fail(0, fmt.Errorf("cannot parse frames from %v: %w", c.spec.Server, err))
			return false
		}
		if !ok {
			break
		}
		switch op {
		case frame.OpText, frame.OpBinary:
			w.h.Message(c, op, p, now)
		case frame.OpPing:
			if !c.mute {
				c.control(frame.OpPong, p)
			}
		case frame.OpClose:
			code := frame.CloseCode(p)
			if !c.sentBye {
				c.control(frame.OpClose, p[:min(2, len(p))])
			}
			c.fail(code, fmt.Errorf("%w with code %d", ErrClosedByPeer, code))
			return false
		}
		if c.state != stateOpen {
			return false
		}
	}
	c.dec.Finish()
	return more
}

// rawRead is read(2) on a non-blocking socket, which never blocks, so it
// skips the runtime's system-call bookkeeping.
func rawRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// recv is recvmsg(2) that also returns the kernel's receive timestamp
// (SCM_TIMESTAMPNS), or 0 when there is none.
func (w *Worker) recv(fd int, p []byte) (n int, stamp int64, err error) {
	w.iov.Base = &p[0]
	w.iov.SetLen(len(p))
	w.msg.Iov = &w.iov
	w.msg.Iovlen = 1
	w.msg.Control = &w.oob[0]
	w.msg.SetControllen(len(w.oob))
	w.msg.Flags = 0
	r, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.msg)), 0)
	if e != 0 {
		return 0, 0, e
	}
	if int(w.msg.Controllen) >= syscall.SizeofCmsghdr+int(unsafe.Sizeof(syscall.Timespec{})) {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&w.oob[0]))
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS {
			ts := (*syscall.Timespec)(unsafe.Pointer(&w.oob[syscall.SizeofCmsghdr]))
			stamp = ts.Nano()
		}
	}
	return int(r), stamp, nil
}

func (c *Conn) control(op byte, p []byte) {
	if op == frame.OpClose {
		c.sentBye = true
	}
	c.out = frame.AppendClientFrame(c.out, op, p, uint32(c.w.Rand()))
	c.flush()
}

// fail closes the connection and tells the Handler why.
func (c *Conn) fail(code int, err error) {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	w := c.w
	if c.fd >= 0 {
		syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
		syscall.Close(c.fd)
		w.conns[c.fd] = nil
		c.fd = -1
	}
	c.out = nil
	c.hs = nil
	w.live--
	w.h.Closed(c, code, err)
}

// Worker returns the worker that owns the connection.
func (c *Conn) Worker() *Worker { return c.w }

// Spec returns how the connection was dialed.
func (c *Conn) Spec() DialSpec { return c.spec }

// IsOpen reports whether the upgrade succeeded and the connection is up.
func (c *Conn) IsOpen() bool { return c.state == stateOpen }

// Accepted reports whether the server chose the subprotocol the dial
// offered (DialSpec.Protocol).
func (c *Conn) Accepted() bool { return c.accepted }

// Mute stops or resumes answering pings: a muted connection reads as
// usual but never sends a pong, as a peer whose pongs are lost, so a
// server with a pong timeout closes it.
func (c *Conn) Mute(on bool) { c.mute = on }

// Buffered returns the bytes queued for writing.
func (c *Conn) Buffered() int { return len(c.out) }

// WriteMessage queues one masked frame; Flush writes it. It fails with ErrOutputFull when the
// queue already holds MaxOutput bytes.
func (c *Conn) WriteMessage(op byte, payload []byte) error {
	if c.state != stateOpen {
		return fmt.Errorf("cannot write to %v: connection is not open", c.spec.Server)
	}
	if len(c.out) >= c.w.cfg.MaxOutput {
		return ErrOutputFull
	}
	c.out = frame.AppendClientFrame(c.out, op, payload, uint32(c.w.Rand()))
	return nil
}

// Flush writes queued frames; whatever the socket does not take is written
// when it becomes writable, and the Handler hears Drained then.
func (c *Conn) Flush() {
	if c.state == stateOpen {
		c.flush()
	}
}

// Close sends a close frame with code (best effort, without waiting) and
// closes the connection; the Handler hears Closed with a nil error.
func (c *Conn) Close(code int) {
	if c.state == stateClosed {
		return
	}
	if c.state == stateOpen && !c.sentBye && len(c.out) < c.w.cfg.MaxOutput {
		var p [2]byte
		c.sentBye = true
		c.out = frame.AppendClientFrame(c.out, frame.OpClose, frame.ClosePayload(p[:0], code, ""), uint32(c.w.Rand()))
		syscall.Write(c.fd, c.out)
	}
	wasPending := c.state == stateConnecting || c.state == stateHandshake
	c.fail(0, nil)
	if wasPending {
		c.w.prunePending()
	}
}

// Drop closes the connection without a close frame: with a FIN, or with
// reset a TCP RST (SO_LINGER 0), as a client that crashes or loses its
// network does. The Handler hears Closed with a nil error.
func (c *Conn) Drop(reset bool) {
	if c.state == stateClosed {
		return
	}
	if reset && c.fd >= 0 {
		syscall.SetsockoptLinger(c.fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	}
	wasPending := c.state == stateConnecting || c.state == stateHandshake
	c.fail(0, nil)
	if wasPending {
		c.w.prunePending()
	}
}

type timerEntry struct {
	at int64
	t  Timer
}

// timerHeap is a binary min-heap on at.
type timerHeap []timerEntry

func (h *timerHeap) push(e timerEntry) {
	*h = append(*h, e)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].at <= s[i].at {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *timerHeap) pop() {
	s := *h
	n := len(s) - 1
	s[0] = s[n]
	s[n] = timerEntry{}
	*h = s[:n]
	h.fix0()
}

func (h timerHeap) fix0() {
	i := 0
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
