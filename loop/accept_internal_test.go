//go:build linux

// The accept patch is in nbio's epoll poller; the options checked are
// Linux's names.

package loop

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// opens records the connections an Engine opens.
type opens struct{ ch chan *Conn }

func (o opens) OnOpen(c *Conn)              { o.ch <- c }
func (o opens) OnData(c *Conn, data []byte) { c.Send(data) }
func (o opens) OnClose(*Conn, error)        {}

// TestAcceptedSockets: a connection accepted by nbio's accept4 path (a
// wspubsub patch, see third_party/nbio/PATCHES.md) has TCP_NODELAY and
// keepalive, as the standard library's Accept gave it; its RemoteAddr is the client's address; and a burst of
// connections made at once is accepted in full and served.
func TestAcceptedSockets(t *testing.T) {
	o := opens{ch: make(chan *Conn, 512)}
	e, err := Start(Config{Addr: "127.0.0.1:0"}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	nc, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var c *Conn
	select {
	case c = <-o.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no OnOpen for the connection")
	}
	if got, want := c.RemoteAddr().String(), nc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want the client's %s", got, want)
	}
	checkOptions(t, c)

	// A burst: every connection is accepted and echoes.
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	release := make(chan struct{}) // the clients stay until their sockets are checked
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.DialTimeout("tcp", e.Addr(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := nc.Write([]byte("ping")); err != nil {
				errs <- err
				return
			}
			b := make([]byte, 4)
			if _, err := nc.Read(b); err != nil || string(b) != "ping" {
				errs <- err
			}
			<-release
		}()
	}
	// Most of the burst came through accept4 (all but the first of each
	// batch): every one has the options.
	for range n {
		select {
		case c := <-o.ch:
			checkOptions(t, c)
		case <-time.After(10 * time.Second):
			t.Fatal("not every connection of the burst was opened")
		}
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("burst connection: %v", err)
	}
}

// checkOptions fails t unless c's socket has TCP_NODELAY and keepalive as
// the standard library sets them.
func checkOptions(t *testing.T, c *Conn) {
	t.Helper()
	rc, err := c.nc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
	} {
		var v int
		var gerr error
		err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), opt.level, opt.opt) })
		if err != nil || gerr != nil {
			t.Fatalf("getsockopt %s: %v %v", opt.name, err, gerr)
		}
		if v != opt.want {
			t.Errorf("accepted socket's %s = %d, want %d", opt.name, v, opt.want)
		}
	}
}
