// Package loop runs the non-blocking event loops (nbio pollers) that own
// every socket of the hub, and gives each connection a write path whose
// backlog is bounded and accounted to the byte.
//
// Concurrency: a Handler's OnOpen for a connection is called on the
// accepting goroutine, before the connection joins its loop; its OnData calls
// come after OnOpen has returned, on the loop goroutine that owns it, one at a
// time, and see everything OnOpen did. The data slice passed to OnData is the
// loop's shared read buffer, valid only during the call. OnClose is called
// once per connection, after OnOpen has returned, on nbio's closing
// goroutine, which runs the OnClose calls of every connection one at a time;
// no read starts after the close, but when another goroutine closed the
// connection (Close, a deadline, a failed Send) OnClose may run while the
// loop is still in the last OnData, so state both touch needs a lock. Conn's
// methods may be called from any goroutine; Send never blocks on the
// network: what the kernel does not take at once joins the connection's
// backlog and is written when the socket turns writable. No goroutine is
// started per connection.
//
// With Config.TLS set, every connection speaks TLS, still without a
// goroutine of its own: the loop feeds what it reads to the connection's TLS
// state, which runs the handshake as its messages arrive and hands the
// Handler plaintext; Send encrypts, on the goroutine that calls it, and the
// backlog holds and counts ciphertext. Without it, TLS costs a nil check per
// Send.
//
// A TLS connection may open with a preface in the clear, before its TLS
// handshake: the PROXY protocol header of a load balancer that passes TLS
// through. For a connection on which OnOpen called ExpectPreface, the loop
// hands what it reads to the Prefacer's OnPreface, on the loop goroutine
// that owns the connection, one call at a time, before any OnData and with
// no lock of the Conn held, until it reports the preface done; the bytes
// after it go to TLS. The data slice is the loop's shared read buffer, as
// for OnData. Other TLS connections pay a nil check per read.
package loop

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
)

// ErrBacklogFull means a Send would take a connection's backlog past its
// bound: the peer reads too slowly.
var ErrBacklogFull = errors.New("loop: connection backlog full")

// ErrClosing means the connection has sent its last bytes.
var ErrClosing = errors.New("loop: connection is closing")

// Handler receives a connection's events.
type Handler interface {
	OnOpen(c *Conn)
	OnData(c *Conn, data []byte)
	OnClose(c *Conn, err error)
}

// Prefacer reads a TLS connection's preface (see ExpectPreface).
type Prefacer interface {
	// OnPreface gets the bytes read on c since its last call, valid only
	// during the call, and returns the bytes that follow the preface and
	// true once it is complete; false while it needs more, keeping what it
	// needs of data. A bad preface is the Prefacer's to refuse: it closes
	// c and returns false.
	OnPreface(c *Conn, data []byte) (rest []byte, done bool)
}

// Config sets up an Engine.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:8080".
	Addr string
	// Pollers is the number of event loops; 0 means one per usable core
	// (runtime.GOMAXPROCS(0)).
	Pollers int
	// ReadBufferSize is the most read in one system call, into a buffer
	// shared by all of a loop's connections; 0 means 64 KiB.
	ReadBufferSize int
	// MaxBacklog is the most bytes a connection may have waiting for the
	// kernel before Send refuses more with ErrBacklogFull. A Send on an empty
	// backlog is always taken, so the hub holds at most MaxBacklog or one
	// Send, whichever is larger. 0 means 1 MiB.
	MaxBacklog int
	// HardLimit is the backstop nbio enforces on a connection's write buffer
	// by closing it without a word; it only matters if the bound above is
	// bypassed (close frames are). 0 means 2*MaxBacklog + 8 MiB.
	HardLimit int
	// TLS, if set, makes every connection TLS (1.2 or 1.3) with this
	// certificate, which may be reloaded while serving. Each connection's
	// bytes are encrypted on their own: a broadcast encoded once is still
	// encrypted once per subscriber, in its Send. nil: plaintext.
	TLS *KeyPair
}

// Engine owns the listener and the loops.
type Engine struct {
	nb      *nbio.Engine
	h       Handler
	max     int64
	stopped atomic.Bool
	tls     *tls.Config // nil: plaintext
	plain   sync.Pool   // buffers of ReadBufferSize for decrypted input
}

// Conn is one connection. Value is the Handler's own state for it.
type Conn struct {
	nc    *nbio.Conn
	max   int64
	Value any

	mu      sync.Mutex
	closing bool  // guarded by mu
	queued  int64 // bytes handed to nc.Write; guarded by mu
	written atomic.Int64
	tls     *tlsConn // nil: plaintext; guarded by mu

	// opened is set once OnOpen has returned. The callbacks after it load
	// it first: OnOpen runs on the accepting goroutine and nbio hands the
	// connection to its loop through the kernel (epoll_ctl, kevent), which
	// orders nothing for Go, so without this load the Handler's writes in
	// OnOpen (Value, say) would race with its reads in OnData and OnClose.
	opened atomic.Bool

	// end is, after SendFinal, the count of written bytes at which the
	// connection is closed; 0 otherwise. Read by the write callback, which
	// runs under nbio's lock and so may not take mu.
	end atomic.Int64
}

func init() {
	logging.SetLevel(logging.LevelError)
}

// DefaultPollers is how many event loops Start runs when Config.Pollers is
// 0: one per usable core, runtime.GOMAXPROCS(0).
func DefaultPollers() int { return runtime.GOMAXPROCS(0) }

// Start listens on cfg.Addr and starts the loops.
func Start(cfg Config, h Handler) (*Engine, error) {
	if cfg.Pollers <= 0 {
		cfg.Pollers = DefaultPollers()
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = 64 << 10
	}
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = 1 << 20
	}
	if cfg.HardLimit <= 0 {
		cfg.HardLimit = 2*cfg.MaxBacklog + 8<<20
	}
	e := &Engine{h: h, max: int64(cfg.MaxBacklog)}
	if cfg.TLS != nil {
		e.tls = serverConfig(cfg.TLS)
		size := cfg.ReadBufferSize
		e.plain.New = func() any { b := make([]byte, size); return &b }
	}
	e.nb = nbio.NewEngine(nbio.Config{
		Name:               "wspubsub",
		Network:            "tcp",
		Addrs:              []string{cfg.Addr},
		NPoller:            cfg.Pollers,
		ReadBufferSize:     cfg.ReadBufferSize,
		MaxWriteBufferSize: cfg.HardLimit,
	})
	e.nb.OnOpen(func(nc *nbio.Conn) {
		c := &Conn{nc: nc, max: e.max}
		if e.tls != nil {
			c.tls = newTLSConn(nc, e.tls)
		}
		nc.SetSession(c)
		h.OnOpen(c)
		c.opened.Store(true)
	})
	if e.tls == nil {
		e.nb.OnData(func(nc *nbio.Conn, data []byte) {
			if c, ok := nc.Session().(*Conn); ok {
				c.afterOpen()
				h.OnData(c, data)
			}
		})
	} else {
		e.nb.OnData(func(nc *nbio.Conn, data []byte) {
			if c, ok := nc.Session().(*Conn); ok {
				c.afterOpen()
				e.onTLSData(c, data)
			}
		})
	}
	e.nb.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		if c, ok := nc.Session().(*Conn); ok {
			if w := c.written.Add(int64(n)); w == c.end.Load() {
				// The last byte after SendFinal is out. nbio holds the
				// connection's lock here, which Close takes.
				time.AfterFunc(0, func() { nc.Close() })
			}
		}
	})
	e.nb.OnClose(func(nc *nbio.Conn, err error) {
		if c, ok := nc.Session().(*Conn); ok {
			c.afterOpen()
			h.OnClose(c, err)
		}
	})
	if err := e.nb.Start(); err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	return e, nil
}

// afterOpen returns once OnOpen has returned, ordering what it did before
// the caller (see Conn.opened). Only OnClose can wait here, and only when
// the Handler closed the connection inside OnOpen: nbio adds a connection to
// its loop, which reads it, after OnOpen. The wait holds up the closing
// goroutine for the rest of that OnOpen, which must not block anyway.
func (c *Conn) afterOpen() {
	for !c.opened.Load() {
		runtime.Gosched()
	}
}

// Addr is the address the engine listens on (with the port chosen when
// Config.Addr asked for port 0).
func (e *Engine) Addr() string { return e.nb.Addrs[0] }

// Stop closes the listener and every connection and stops the loops.
func (e *Engine) Stop() {
	if e.stopped.CompareAndSwap(false, true) {
		e.nb.Stop()
	}
}

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Backlog is the number of bytes waiting to be taken by the kernel
// (ciphertext, under TLS).
func (c *Conn) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.queued - c.written.Load())
}

// Send writes b, or queues what the kernel does not take at once behind the
// bytes already waiting, so one later write carries them all. It fails with
// ErrBacklogFull, queuing nothing, when the backlog is not empty and b would
// take it past the bound (under TLS, b's ciphertext: at most 29 bytes more
// per 16 KiB), and with ErrClosing after SendLast.
func (c *Conn) Send(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosing
	}
	if backlog := c.queued - c.written.Load(); backlog > 0 && backlog+c.size(b) > c.max {
		return ErrBacklogFull
	}
	return c.write(b)
}

// size is how many bytes b takes in the backlog. c.mu is held.
func (c *Conn) size(b []byte) int64 {
	if c.tls != nil {
		return tlsSize(len(b))
	}
	return int64(len(b))
}

func (c *Conn) write(b []byte) error {
	if c.tls != nil {
		return c.writeTLS(b)
	}
	c.queued += int64(len(b))
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("cannot write to %v: %w", c.nc.RemoteAddr(), err)
	}
	return nil
}

// SendFirst runs join and then, if it succeeds, writes the bytes it
// returns, both under the lock Send takes, so no Send on another goroutine
// can put bytes on the wire before them. The hub uses it to make a
// subscriber part of its topic before the 101 response that tells the
// client so, and the replay of history that comes before live messages.
// The bytes are taken whatever the backlog's bound.
func (c *Conn) SendFirst(join func() ([]byte, error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosing
	}
	b, err := join()
	if err != nil {
		return err
	}
	return c.write(b)
}

// SendLast writes b past the backlog's bound and refuses every later Send.
// The connection is dropped when linger runs out, unless Close comes first;
// with linger 0 it is closed at once if the kernel took all of b, the right
// end for an HTTP refusal. It reports false if the connection was already
// closing.
func (c *Conn) SendLast(b []byte, linger time.Duration) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	err := c.write(b)
	flushed := c.queued == c.written.Load()
	c.mu.Unlock()
	switch {
	case err != nil:
	case linger == 0 && flushed:
		c.nc.Close()
	default:
		if linger <= 0 {
			linger = time.Second
		}
		// nbio closes the connection when this deadline passes; writes do
		// not clear it.
		c.nc.SetReadDeadline(time.Now().Add(linger))
	}
	return true
}

// SendFinal is SendLast for a peer that will never answer (an EventSource
// client has no close handshake): the connection is closed as soon as the
// kernel has taken every byte, b's included, or when linger runs out,
// whichever comes first. It reports false if the connection was already
// closing.
func (c *Conn) SendFinal(b []byte, linger time.Duration) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	err := c.write(b)
	c.end.Store(c.queued)
	flushed := c.queued == c.written.Load()
	c.mu.Unlock()
	switch {
	case err != nil:
	case flushed: // the write callback may have come before end was set
		c.nc.Close()
	default:
		if linger <= 0 {
			linger = time.Second
		}
		c.nc.SetReadDeadline(time.Now().Add(linger))
	}
	return true
}

// ExpectPreface makes the connection's first bytes go to p, not TLS, until
// p reports its preface done (see Prefacer). It is for OnOpen, before any
// byte is read; it reports false, and does nothing, on a connection without
// TLS, whose first bytes go to OnData as they come.
func (c *Conn) ExpectPreface(p Prefacer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tls == nil {
		return false
	}
	c.tls.preface = p
	return true
}

// Counts reports the bytes Send, SendFirst, SendLast and SendFinal took so
// far and how many of them the kernel took (ciphertext, under TLS). Bytes
// the kernel took may still be on their way: they are out of the hub.
func (c *Conn) Counts() (queued, written int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued, c.written.Load()
}

// Closing reports whether SendLast or SendFinal was called.
func (c *Conn) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// CloseFlushed closes the connection now if nothing is waiting for the
// kernel; otherwise the deadline SendLast set ends it, so the backlog still
// has its chance to go.
func (c *Conn) CloseFlushed() {
	if c.Backlog() == 0 {
		c.nc.Close()
	}
}

// Close drops the connection at once; bytes still waiting are discarded.
func (c *Conn) Close() { c.nc.Close() }

// SetDeadline drops the connection at t unless it is reset first; the zero
// time clears it.
func (c *Conn) SetDeadline(t time.Time) { c.nc.SetReadDeadline(t) }

// PauseRead stops reading the connection, without holding up its loop or
// its writes, until ResumeRead: bytes the peer sends meanwhile wait in the
// kernel (and, once its buffer is full, with the peer). It is for OnData,
// on the loop goroutine: no OnData call starts after it returns true and
// before ResumeRead, except under TLS, where the records of a read already
// taken are still handed over. It reports false where the poller cannot
// pause (kqueue, the std poller): reads go on then.
func (c *Conn) PauseRead() bool { return c.nc.PauseRead() }

// ResumeRead undoes PauseRead; it may be called from any goroutine.
func (c *Conn) ResumeRead() { c.nc.ResumeRead() }
