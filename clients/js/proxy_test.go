package jsclient_test

import (
	"bufio"
	"io"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutter is a TCP proxy between the browser and the hub that breaks the
// connections it carries, the two ways connections die in the field:
// resetAll is the network failing (both sides get a TCP reset), and in
// swallow mode a connection stops carrying the browser's bytes after a while,
// as a half-dead NAT would, so that the hub's keepalive has to find out
// (4003) while the hub's own bytes still flow. It also moves every `since`
// a few offsets back, so that the hub replays messages the browser has seen
// and the client has to drop them.
type cutter struct {
	ln     net.Listener
	target string
	back   int          // offsets to move since back by
	moved  atomic.Int64 // handshakes whose since was moved back

	swallowAfter atomic.Int64 // nanoseconds; 0: carry everything (swallowEach)

	mu       sync.Mutex
	conns    map[*cutConn]struct{}
	requests []string // the request line of every connection, in order
	wg       sync.WaitGroup
}

type cutConn struct {
	browser, hub *net.TCPConn
	swallow      atomic.Bool // drop the browser's bytes from now on
}

// startCutter proxies a 127.0.0.1 port to target until the test ends,
// moving each since back by back offsets.
func startCutter(t *testing.T, target string, back int) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target, back: back, conns: make(map[*cutConn]struct{})}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(func() {
		ln.Close()
		c.resetAll()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) addr() string { return c.ln.Addr().String() }

func (c *cutter) accept() {
	defer c.wg.Done()
	for {
		b, err := c.ln.Accept()
		if err != nil {
			return
		}
		h, err := net.Dial("tcp", c.target)
		if err != nil {
			b.Close()
			continue
		}
		cc := &cutConn{browser: b.(*net.TCPConn), hub: h.(*net.TCPConn)}
		c.mu.Lock()
		c.conns[cc] = struct{}{}
		c.mu.Unlock()
		if d := time.Duration(c.swallowAfter.Load()); d > 0 {
			c.swallowLater(cc, d)
		}
		c.wg.Add(2)
		go c.up(cc)
		go c.down(cc)
	}
}

// swallowEach makes every connection, open or to come, stop carrying the
// browser's bytes once it is d old (or d from now); 0 stops that for
// connections to come and for those whose d has not run out.
func (c *cutter) swallowEach(d time.Duration) {
	c.swallowAfter.Store(int64(d))
	if d == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for cc := range c.conns {
		c.swallowLater(cc, d)
	}
}

func (c *cutter) swallowLater(cc *cutConn, d time.Duration) {
	time.AfterFunc(d, func() {
		if c.swallowAfter.Load() != 0 {
			cc.swallow.Store(true)
		}
	})
}

// up carries the browser's bytes to the hub, noting the request line.
func (c *cutter) up(cc *cutConn) {
	defer c.wg.Done()
	defer c.drop(cc)
	r := bufio.NewReader(cc.browser)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	c.mu.Lock()
	c.requests = append(c.requests, line)
	c.mu.Unlock()
	if _, err := io.WriteString(cc.hub, c.moveBack(line)); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if !cc.swallow.Load() {
			if _, werr := cc.hub.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

var sinceParam = regexp.MustCompile(`([?&]since=[A-Za-z0-9]+:)(\d+)`)

// moveBack moves the since of a request line back by c.back offsets.
func (c *cutter) moveBack(line string) string {
	m := sinceParam.FindStringSubmatchIndex(line)
	if m == nil || c.back == 0 {
		return line
	}
	o, _ := strconv.Atoi(line[m[4]:m[5]])
	if o == 0 {
		return line
	}
	c.moved.Add(1)
	return line[:m[4]] + strconv.Itoa(max(0, o-c.back)) + line[m[5]:]
}

// down carries the hub's bytes to the browser.
func (c *cutter) down(cc *cutConn) {
	defer c.wg.Done()
	defer c.drop(cc)
	io.Copy(cc.browser, cc.hub)
}

// drop closes both sides of cc (once the first direction ends, so does
// the other, as a real connection would).
func (c *cutter) drop(cc *cutConn) {
	c.mu.Lock()
	delete(c.conns, cc)
	c.mu.Unlock()
	cc.browser.Close()
	cc.hub.Close()
}

// resetAll breaks every connection with a TCP reset on both sides and
// says how many there were.
func (c *cutter) resetAll() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.conns)
	for cc := range c.conns {
		cc.browser.SetLinger(0)
		cc.hub.SetLinger(0)
		cc.browser.Close()
		cc.hub.Close()
		delete(c.conns, cc)
	}
	return n
}

// requestLines returns the request line of every connection so far.
func (c *cutter) requestLines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}
