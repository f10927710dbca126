package loop_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/loop"
)

// waitFor is how long a test waits for something that must happen; it
// bounds a hang, it is never a speed target.
const waitFor = 20 * time.Second

// connLog is what a recorder saw of one connection.
type connLog struct {
	mu       sync.Mutex
	data     bytes.Buffer
	closes   int
	closeErr error
	events   []string // "open", "data", "close", in the order they came

	inData atomic.Int32 // OnData calls running now
	closed chan struct{}
}

// recorder is a Handler that logs every event of every connection and
// flags what the contract forbids: an event before OnOpen or after
// OnClose, a second OnClose, two OnData at once.
type recorder struct {
	opened chan *loop.Conn
	// onData, if set, runs after the data is logged (an echo, say).
	onData func(c *loop.Conn, data []byte)
	// onOpen, if set, runs after the connection is logged.
	onOpen func(c *loop.Conn)

	mu         sync.Mutex
	violations []string
}

func newRecorder() *recorder { return &recorder{opened: make(chan *loop.Conn, 128)} }

func (r *recorder) violate(format string, args ...any) {
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) OnOpen(c *loop.Conn) {
	if c.Value != nil {
		r.violate("OnOpen on a connection that has a Value already")
	}
	l := &connLog{events: []string{"open"}, closed: make(chan struct{})}
	c.Value = l
	if r.onOpen != nil {
		r.onOpen(c)
	}
	r.opened <- c
}

func (r *recorder) OnData(c *loop.Conn, data []byte) {
	l, ok := c.Value.(*connLog)
	if !ok {
		r.violate("OnData before OnOpen")
		return
	}
	if l.inData.Add(1) != 1 {
		r.violate("two OnData at once for one connection")
	}
	l.mu.Lock()
	if l.closes > 0 {
		r.violate("OnData after OnClose")
	}
	l.events = append(l.events, "data")
	l.data.Write(data)
	l.mu.Unlock()
	if r.onData != nil {
		r.onData(c, data)
	}
	l.inData.Add(-1)
}

func (r *recorder) OnClose(c *loop.Conn, err error) {
	l, ok := c.Value.(*connLog)
	if !ok {
		r.violate("OnClose before OnOpen")
		return
	}
	l.mu.Lock()
	l.closes++
	l.closeErr = err
	l.events = append(l.events, "close")
	n := l.closes
	l.mu.Unlock()
	if n == 1 {
		close(l.closed)
	} else {
		r.violate("OnClose called %d times", n)
	}
}

// check fails t for every violation seen so far.
func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violations {
		t.Error(v)
	}
}

// next is the next connection the engine opened.
func (r *recorder) next(t testing.TB) *loop.Conn {
	t.Helper()
	select {
	case c := <-r.opened:
		return c
	case <-time.After(waitFor):
		t.Fatal("no connection opened")
		return nil
	}
}

func logOf(c *loop.Conn) *connLog { return c.Value.(*connLog) }

// waitClosed waits for c's OnClose.
func waitClosed(t *testing.T, c *loop.Conn) {
	t.Helper()
	select {
	case <-logOf(c).closed:
	case <-time.After(waitFor):
		t.Fatal("OnClose never came")
	}
}

// start runs an engine on a free port of 127.0.0.1, stopped at cleanup.
func start(t testing.TB, cfg loop.Config, h loop.Handler) *loop.Engine {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Pollers == 0 {
		cfg.Pollers = 2
	}
	e, err := loop.Start(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func dial(t testing.TB, e *loop.Engine) *net.TCPConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", e.Addr(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.TCPConn)
}

// readEOF reads nc to its end and returns what came; it fails t if the
// connection is not closed in time.
func readEOF(t *testing.T, nc net.Conn) []byte {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(waitFor))
	b, err := io.ReadAll(nc)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("reading to the end: %v (after %d bytes)", err, len(b))
	}
	return b
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// waitUntil polls cond until it holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// numbered is n messages of size bytes, each starting with its index, so a
// reader can tell a lost, repeated or reordered one.
func numbered(n, size int) [][]byte {
	msgs := make([][]byte, n)
	for i := range msgs {
		m := bytes.Repeat([]byte{byte(i)}, size)
		binary.BigEndian.PutUint32(m, uint32(i))
		msgs[i] = m
	}
	return msgs
}

func checkNumbered(t *testing.T, got []byte, n, size int) {
	t.Helper()
	if len(got) != n*size {
		t.Fatalf("read %d bytes, want %d", len(got), n*size)
	}
	for i := 0; i < n; i++ {
		m := got[i*size : (i+1)*size]
		if j := binary.BigEndian.Uint32(m); j != uint32(i) {
			t.Fatalf("message %d arrived in place %d", j, i)
		}
	}
}

func TestEventsInOrderOnce(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{ReadBufferSize: 1 << 10}, r)

	const conns = 8
	want := make([][]byte, conns)
	clients := make([]*net.TCPConn, conns)
	for i := range clients {
		clients[i] = dial(t, e)
		// More than the read buffer, in pieces, so OnData is called
		// several times.
		want[i] = bytes.Repeat([]byte(fmt.Sprintf("conn %d;", i)), 1000)
	}
	var wg sync.WaitGroup
	for i, nc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := want[i]; len(b) > 0; {
				n := min(len(b), 777)
				if _, err := nc.Write(b[:n]); err != nil {
					t.Error(err)
					return
				}
				b = b[n:]
			}
			nc.CloseWrite()
		}()
	}
	wg.Wait()
	got := map[string]*loop.Conn{}
	for range conns {
		c := r.next(t)
		got[c.RemoteAddr().String()] = c
	}
	for i, nc := range clients {
		c := got[nc.LocalAddr().String()]
		if c == nil {
			t.Fatalf("no connection for client %v", nc.LocalAddr())
		}
		// The client's FIN ends the connection on the hub's side.
		waitClosed(t, c)
		l := logOf(c)
		l.mu.Lock()
		if !bytes.Equal(l.data.Bytes(), want[i]) {
			t.Errorf("conn %d: OnData got %d bytes, not the %d sent in order", i, l.data.Len(), len(want[i]))
		}
		if len(l.events) < 3 || l.events[0] != "open" || l.events[len(l.events)-1] != "close" {
			t.Errorf("conn %d: events %v, want open, data..., close", i, l.events)
		}
		l.mu.Unlock()
		// Closing again, from the Handler's side, calls nothing.
		c.Close()
		c.CloseFlushed()
	}
	e.Stop()
	for _, c := range got {
		if n := func() int { l := logOf(c); l.mu.Lock(); defer l.mu.Unlock(); return l.closes }(); n != 1 {
			t.Errorf("OnClose called %d times", n)
		}
	}
	r.check(t)
}

func TestSendInOrder(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 64 << 20}, r)
	nc := dial(t, e)
	c := r.next(t)

	// Several MiB, more than the socket buffers take at once, so most of it
	// goes through the backlog and the writable events.
	const n, size = 2000, 3000
	msgs := numbered(n, size)
	done := make(chan []byte)
	go func() { done <- readEOF(t, nc) }()
	for _, m := range msgs {
		if err := c.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "backlog empty", func() bool { return c.Backlog() == 0 })
	queued, written := c.Counts()
	if queued != n*size || written != n*size {
		t.Errorf("Counts = %d queued, %d written; want %d both", queued, written, n*size)
	}
	c.Close()
	checkNumbered(t, <-done, n, size)
	waitClosed(t, c)
	r.check(t)
}

// TestBacklogBound fills a connection whose peer does not read: Send takes
// bytes until the next would pass MaxBacklog, refuses that one whole, and
// takes more once the peer has read.
func TestBacklogBound(t *testing.T) {
	const max, size = 256 << 10, 10 << 10
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: max}, r)
	nc := dial(t, e)
	c := r.next(t)

	var sent int64
	msgs := numbered(10000, size)
	i := 0
	for ; ; i++ {
		if i == len(msgs) {
			t.Fatal("Send never refused")
		}
		err := c.Send(msgs[i])
		if errors.Is(err, loop.ErrBacklogFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent += size
	}
	queued, written := c.Counts()
	backlog := c.Backlog()
	if queued != sent {
		t.Errorf("queued %d, want the %d bytes Send took (the refused one not counted)", queued, sent)
	}
	if int64(backlog) != queued-written {
		t.Errorf("Backlog %d, want queued-written = %d", backlog, queued-written)
	}
	if backlog > max || backlog+size <= max {
		t.Errorf("refused with a backlog of %d: want one more Send of %d to pass %d, and no more than %d", backlog, size, max, max)
	}
	if written == 0 {
		t.Error("the kernel took nothing: the socket buffers should")
	}

	// The peer reads: the backlog drains, Send takes again, nothing is lost.
	got := make(chan []byte)
	go func() { got <- readEOF(t, nc) }()
	waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
	for ; i < len(msgs) && int64(i)*size < sent+4*max; i++ {
		if err := c.Send(msgs[i]); err != nil && !errors.Is(err, loop.ErrBacklogFull) {
			t.Fatal(err)
		} else if err != nil {
			waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
			i--
		}
	}
	waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
	c.Close()
	checkNumbered(t, <-got, i, size)
	r.check(t)
}

// TestSendOnEmptyBacklog: a Send larger than the bound is taken when
// nothing is waiting, so one big message is never refused for its size.
func TestSendOnEmptyBacklog(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 4 << 10}, r)
	nc := dial(t, e)
	c := r.next(t)
	big := numbered(1, 4<<20)[0]
	if err := c.Send(big); err != nil {
		t.Fatalf("Send of 4 MiB on an empty backlog: %v", err)
	}
	if err := c.Send([]byte("x")); !errors.Is(err, loop.ErrBacklogFull) {
		t.Errorf("Send behind 4 MiB with a 4 KiB bound: %v, want ErrBacklogFull", err)
	}
	got := make(chan []byte)
	go func() { got <- readEOF(t, nc) }()
	waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
	c.Close()
	checkNumbered(t, <-got, 1, 4<<20)
}

// TestSendFirst: the bytes join returns go before any Send that waits for
// the lock, and a failed join writes nothing.
func TestSendFirst(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{}, r)
	nc := dial(t, e)
	c := r.next(t)

	refused := errors.New("refused")
	if err := c.SendFirst(func() ([]byte, error) { return []byte("never"), refused }); !errors.Is(err, refused) {
		t.Fatalf("SendFirst = %v, want the join's error", err)
	}
	started := make(chan struct{})
	sent := make(chan error)
	err := c.SendFirst(func() ([]byte, error) {
		go func() { close(started); sent <- c.Send([]byte("second")) }()
		<-started
		time.Sleep(20 * time.Millisecond) // give the Send its chance to jump ahead
		return []byte("first;"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
	c.Close()
	if got := string(readEOF(t, nc)); got != "first;second" {
		t.Errorf("read %q, want %q", got, "first;second")
	}
}

// fill makes c's backlog non-empty by sending to a peer that does not read,
// and returns what it sent.
func fill(t *testing.T, c *loop.Conn) []byte {
	t.Helper()
	var all []byte
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4<<10)
	for c.Backlog() == 0 {
		if err := c.Send(chunk); err != nil {
			t.Fatal(err)
		}
		all = append(all, chunk...)
		if len(all) > 256<<20 {
			t.Fatal("the backlog never grew")
		}
	}
	return all
}

// TestCloseFlushed: after SendLast, CloseFlushed leaves a connection with a
// backlog open, so the queued bytes all reach the peer, and closes it once
// they have.
func TestCloseFlushed(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 64 << 20}, r)
	nc := dial(t, e)
	c := r.next(t)

	want := fill(t, c)
	if !c.SendLast([]byte("last"), time.Hour) {
		t.Fatal("SendLast reported the connection closing already")
	}
	want = append(want, "last"...)
	if c.SendLast([]byte("again"), 0) {
		t.Error("a second SendLast was taken")
	}
	if err := c.Send([]byte("more")); !errors.Is(err, loop.ErrClosing) {
		t.Errorf("Send after SendLast = %v, want ErrClosing", err)
	}
	if !c.Closing() {
		t.Error("Closing() false after SendLast")
	}
	c.CloseFlushed() // backlog not empty: must not close
	got := make([]byte, len(want))
	nc.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(nc, got); err != nil {
		t.Fatalf("read after CloseFlushed with a backlog: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes differ from those sent")
	}
	waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
	select {
	case <-logOf(c).closed:
		t.Fatal("closed before CloseFlushed on an empty backlog (linger is an hour)")
	default:
	}
	c.CloseFlushed()
	if rest := readEOF(t, nc); len(rest) != 0 {
		t.Errorf("%d bytes after the last", len(rest))
	}
	waitClosed(t, c)
	r.check(t)
}

// TestSendLastLinger: a peer that never reads is dropped when linger runs
// out, its backlog discarded.
func TestSendLastLinger(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 64 << 20}, r)
	dial(t, e) // never reads
	c := r.next(t)
	fill(t, c)
	c.SendLast([]byte("last"), 50*time.Millisecond)
	waitClosed(t, c)
	r.check(t)
}

// TestSendLastNoLinger: with linger 0 and everything taken by the kernel,
// the connection is closed at once, its bytes delivered (an HTTP refusal).
func TestSendLastNoLinger(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{}, r)
	nc := dial(t, e)
	c := r.next(t)
	c.SendLast([]byte("HTTP/1.1 429 Too Many Requests\r\n\r\n"), 0)
	if got := string(readEOF(t, nc)); got != "HTTP/1.1 429 Too Many Requests\r\n\r\n" {
		t.Errorf("read %q", got)
	}
	waitClosed(t, c)
}

// TestSendFinal: the connection closes as soon as the last byte is taken by
// the kernel, long before its linger, with everything delivered.
func TestSendFinal(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 64 << 20}, r)
	nc := dial(t, e)
	c := r.next(t)

	want := fill(t, c)
	if !c.SendFinal([]byte("bye"), time.Hour) {
		t.Fatal("SendFinal reported the connection closing already")
	}
	if c.SendFinal([]byte("again"), time.Hour) {
		t.Error("a second SendFinal was taken")
	}
	want = append(want, "bye"...)
	got := readEOF(t, nc) // fails unless closed long before the hour
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d sent", len(got), len(want))
	}
	waitClosed(t, c)

	// Flushed at once: closed at once too.
	nc = dial(t, e)
	c = r.next(t)
	c.SendFinal([]byte("bye"), time.Hour)
	if got := string(readEOF(t, nc)); got != "bye" {
		t.Errorf("read %q, want bye", got)
	}
	waitClosed(t, c)
	r.check(t)
}

func TestDeadline(t *testing.T) {
	r := newRecorder()
	r.onData = func(c *loop.Conn, data []byte) { c.Send(data) } // echo
	e := start(t, loop.Config{}, r)

	nc := dial(t, e)
	c := r.next(t)
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	waitClosed(t, c)
	readEOF(t, nc)

	// A cleared deadline drops nothing.
	nc = dial(t, e)
	c = r.next(t)
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	c.SetDeadline(time.Time{})
	time.Sleep(200 * time.Millisecond)
	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	nc.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(nc, buf); err != nil {
		t.Fatalf("echo after a cleared deadline: %v", err)
	}
	// A deadline moved later holds until the later time.
	c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	c.SetDeadline(time.Now().Add(time.Hour))
	time.Sleep(200 * time.Millisecond)
	select {
	case <-logOf(c).closed:
		t.Fatal("closed at a deadline that was moved an hour later")
	default:
	}
	r.check(t)
}

// TestStopWithConnections: Stop closes every connection (each gets its one
// OnClose, each peer its end of stream) and returns; a second Stop does
// nothing.
func TestStopWithConnections(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{MaxBacklog: 64 << 20}, r)
	var clients []net.Conn
	var conns []*loop.Conn
	for range 20 {
		clients = append(clients, dial(t, e))
		conns = append(conns, r.next(t))
	}
	fill(t, conns[0]) // one with a backlog too
	stopped := make(chan struct{})
	go func() { e.Stop(); e.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("Stop did not return")
	}
	for i, c := range conns {
		waitClosed(t, c)
		if i > 0 {
			if b := readEOF(t, clients[i]); len(b) != 0 {
				t.Errorf("client %d read %d bytes", i, len(b))
			}
		}
	}
	// The port is free after Stop (another process may have taken it since:
	// what counts is that this engine opens nothing more).
	if nc, err := net.DialTimeout("tcp", e.Addr(), time.Second); err == nil {
		nc.Close()
		select {
		case <-r.opened:
			t.Error("the engine still accepts after Stop")
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.check(t)
}

// TestStopRightAfterStart: an engine stopped before its goroutines ran
// stops (nbio patches, see third_party/nbio/PATCHES.md).
func TestStopRightAfterStart(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			e, err := loop.Start(loop.Config{Addr: "127.0.0.1:0", Pollers: 4}, newRecorder())
			if err != nil {
				t.Error(err)
				return
			}
			e.Stop()
		}
	}()
	select {
	case <-done:
	case <-time.After(waitFor * 3):
		t.Fatal("Stop right after Start hung")
	}
}

func TestListenError(t *testing.T) {
	r := newRecorder()
	e := start(t, loop.Config{}, r)
	_, err := loop.Start(loop.Config{Addr: e.Addr()}, r)
	if err == nil {
		t.Fatal("a second engine listened on a port in use")
	}
	if want := "cannot listen on " + e.Addr(); !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// TestPlaintextNoPreface: without TLS, ExpectPreface does nothing and the
// first bytes go to OnData.
func TestPlaintextNoPreface(t *testing.T) {
	r := newRecorder()
	p := &prefacer{want: "PROXY\n"}
	r.onOpen = func(c *loop.Conn) {
		if c.ExpectPreface(p) {
			r.violate("ExpectPreface accepted on a plaintext connection")
		}
	}
	e := start(t, loop.Config{}, r)
	nc := dial(t, e)
	c := r.next(t)
	nc.Write([]byte("PROXY\nhello"))
	nc.CloseWrite()
	waitClosed(t, c)
	if got := logOf(c).data.String(); got != "PROXY\nhello" {
		t.Errorf("OnData got %q", got)
	}
	if p.calls.Load() != 0 {
		t.Error("the Prefacer was called on a plaintext connection")
	}
	r.check(t)
}

// TestSurvivesOthersReset: a connection whose peer resets it while another
// goroutine writes to it must not take a new connection down with it. The
// writer's EPIPE closes the old connection off the loop, accept gives its fd
// number to the next connection, and the loop then reaches the old one's
// error event (nbio patch, see third_party/nbio/PATCHES.md).
func TestSurvivesOthersReset(t *testing.T) {
	const rounds = 1000
	var mu sync.Mutex
	open := map[*loop.Conn]bool{}
	r := newRecorder()
	r.onOpen = func(c *loop.Conn) { mu.Lock(); open[c] = true; mu.Unlock() }
	e := start(t, loop.Config{Pollers: 1}, r)
	go func() {
		for c := range r.opened { // drained, not used: writes go by the set
			go func() { <-logOf(c).closed; mu.Lock(); delete(open, c); mu.Unlock() }()
		}
	}()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // publishes to every connection, off the loop
		defer close(done)
		var conns []*loop.Conn
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			conns = conns[:0]
			mu.Lock()
			for c := range open {
				conns = append(conns, c)
			}
			mu.Unlock()
			for _, c := range conns {
				c.Send([]byte{byte(i)})
			}
			if len(conns) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { close(stop); <-done }()

	buf := make([]byte, 64)
	for round := range rounds {
		nc, err := net.DialTimeout("tcp", e.Addr(), waitFor)
		if err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 3; {
			nc.SetReadDeadline(time.Now().Add(waitFor))
			n, err := nc.Read(buf)
			if err != nil {
				nc.Close()
				t.Fatalf("round %d: after %d bytes: %v", round, got, err)
			}
			got += n
		}
		nc.(*net.TCPConn).SetLinger(0) // close with an RST
		nc.Close()
	}
	r.check(t)
}

// TestCloseInOnOpen: a Handler that closes a connection in OnOpen gets its
// OnClose once, and only after OnOpen has returned.
func TestCloseInOnOpen(t *testing.T) {
	r := newRecorder()
	r.onOpen = func(c *loop.Conn) {
		c.Close()
		time.Sleep(20 * time.Millisecond) // OnClose's chance to come too early
		l := logOf(c)
		l.mu.Lock()
		l.events = append(l.events, "end of OnOpen")
		l.mu.Unlock()
	}
	e := start(t, loop.Config{}, r)
	nc := dial(t, e)
	c := r.next(t)
	waitClosed(t, c)
	readEOF(t, nc)
	e.Stop()
	l := logOf(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if got := fmt.Sprint(l.events); got != "[open end of OnOpen close]" {
		t.Errorf("events %s, want [open end of OnOpen close]", got)
	}
	r.check(t)
}

// TestPauseRead: a paused connection is not read, while its loop goes on
// reading its other connections and its own writes go out; on resume, what
// came meanwhile is read.
func TestPauseRead(t *testing.T) {
	r := newRecorder()
	paused := make(chan bool, 1)
	r.onData = func(c *loop.Conn, data []byte) {
		if string(data) == "pause" {
			paused <- c.PauseRead()
		}
	}
	e := start(t, loop.Config{Pollers: 1}, r) // one loop: both connections on it
	nc := dial(t, e)
	c := r.next(t)
	other := dial(t, e)
	oc := r.next(t)
	if _, err := nc.Write([]byte("pause")); err != nil {
		t.Fatal(err)
	}
	if !<-paused {
		t.Fatal("PauseRead reported false on Linux")
	}
	// On loopback the kernel has these bytes before the other
	// connection's: had the loop read c, it would have read them first.
	if _, err := nc.Write([]byte("later")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Write([]byte("other")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the other connection read", func() bool {
		l := logOf(oc)
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.data.String() == "other"
	})
	l := logOf(c)
	l.mu.Lock()
	got := l.data.String()
	l.mu.Unlock()
	if got != "pause" {
		t.Fatalf("paused connection read %q", got)
	}
	if err := c.Send([]byte("out")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	nc.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "out" {
		t.Fatalf("write while paused: %q %v", buf, err)
	}
	c.ResumeRead()
	waitUntil(t, "the paused bytes read after resume", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.data.String() == "pauselater"
	})
	c.ResumeRead() // a second resume is harmless
	r.check(t)
}
