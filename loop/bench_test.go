package loop_test

import (
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/wspubsub/wspubsub/loop"
)

// benchSend measures Send of size bytes to one peer that reads as fast as
// it can: the write path of every delivery (plaintext: a write system call
// or a place in the backlog; TLS: the same after encrypting).
func benchSend(b *testing.B, size int, withTLS bool) {
	r := newRecorder()
	var peer io.Reader
	var c *loop.Conn
	if withTLS {
		te := startTLS(b, loop.Config{}, r)
		tc := te.dialTLS(b)
		c = r.next(b)
		// The hub is done with the handshake once it decrypts a byte.
		if _, err := tc.Write([]byte("x")); err != nil {
			b.Fatal(err)
		}
		for !hasData(c) {
			runtime.Gosched()
		}
		peer = tc
	} else {
		e := start(b, loop.Config{}, r)
		peer = dial(b, e)
		c = r.next(b)
	}
	go io.Copy(io.Discard, peer)
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for {
			err := c.Send(msg)
			if err == nil {
				break
			}
			if !errors.Is(err, loop.ErrBacklogFull) {
				b.Fatal(err)
			}
			runtime.Gosched() // the bound: let the peer read
		}
	}
	b.StopTimer()
	c.Close()
}

func hasData(c *loop.Conn) bool {
	l := logOf(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.data.Len() > 0
}

func BenchmarkSend_128B(b *testing.B)    { benchSend(b, 128, false) }
func BenchmarkSend_4KiB(b *testing.B)    { benchSend(b, 4<<10, false) }
func BenchmarkSendTLS_128B(b *testing.B) { benchSend(b, 128, true) }
func BenchmarkSendTLS_4KiB(b *testing.B) { benchSend(b, 4<<10, true) }
