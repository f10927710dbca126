package server_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/ws"
)

// TestLargeFanoutKeepsOrder: a topic large enough for its fan-outs to be
// handed to the pool while the publisher's reads are paused (the hub's
// asyncMin is 1,024) gets every message, once, in order, at every
// subscriber, with the publisher writing faster than the fan-outs go, and a
// small topic served meanwhile; the publisher's ping is answered after
// everything it sent before it.
func TestLargeFanoutKeepsOrder(t *testing.T) {
	const subs, writes, perWrite = 1100, 40, 10
	h := startHub(t)
	pub := h.rawPub(t, "test", "big")
	smallPub := h.rawPub(t, "test", "small")
	readers := make([]*rawClient, subs)
	for i := range readers {
		readers[i] = h.rawSub(t, "test", "big")
	}
	small := h.rawSub(t, "test", "small")

	var wg sync.WaitGroup
	errs := make(chan string, subs)
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.SetReadDeadline(time.Now().Add(60 * time.Second))
			for want := 1; want <= writes*perWrite; want++ {
				_, p, err := r.readFrame()
				if err != nil {
					errs <- "read: " + err.Error()
					return
				}
				if string(p) != strconv.Itoa(want) {
					errs <- "got " + string(p) + ", want " + strconv.Itoa(want)
					return
				}
			}
		}()
	}
	n := 0
	for range writes {
		var w []byte
		for range perWrite {
			n++
			w = append(w, masked(finBit|opText, []byte(strconv.Itoa(n)))...)
		}
		pub.send(t, w)
		smallPub.send(t, masked(finBit|opText, []byte("s"+strconv.Itoa(n))))
	}
	pub.send(t, masked(finBit|opPing, []byte("after")))
	for i := perWrite; i <= n; i += perWrite {
		small.expectFrame(t, finBit|opText, []byte("s"+strconv.Itoa(i)))
	}
	pub.expectFrame(t, finBit|opPong, []byte("after"))
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	// Nothing more: each message came once.
	for _, r := range readers[:10] {
		r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, p, err := r.readFrame(); err == nil {
			t.Fatalf("one more frame %q", bytes.Clone(p))
		}
	}
}

// TestLargeFanoutPublisherLeaves: a publisher that sends a burst to a large
// topic and its close frame in the same write, while its fan-outs are being
// written by the pool, gets its close answered; every subscriber gets the
// whole burst in order and then the topic's close (no grace period).
func TestLargeFanoutPublisherLeaves(t *testing.T) {
	const subs, msgs = 1100, 30
	h := startHub(t, func(c *server.Config) { c.GracePeriod = -1 })
	pub := h.rawPub(t, "test", "leaving")
	readers := make([]*rawClient, subs)
	for i := range readers {
		readers[i] = h.rawSub(t, "test", "leaving")
	}
	var w []byte
	for i := 1; i <= msgs; i++ {
		w = append(w, masked(finBit|opText, []byte(strconv.Itoa(i)))...)
		if i%3 == 0 { // several reads' worth, so that fan-outs are in flight
			pub.send(t, w)
			w = nil
		}
	}
	pub.send(t, masked(finBit|opClose, closePayload(1000, "bye")))
	pub.expectClose(t, 1000)
	var wg sync.WaitGroup
	errs := make(chan string, subs)
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.SetReadDeadline(time.Now().Add(60 * time.Second))
			for want := 1; want <= msgs; want++ {
				_, p, err := r.readFrame()
				if err != nil || string(p) != strconv.Itoa(want) {
					errs <- fmt.Sprintf("got %q %v, want %d", p, err, want)
					return
				}
			}
			b0, p, err := r.readFrame()
			if err != nil || b0 != finBit|opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != ws.CloseTopicClosed {
				errs <- fmt.Sprintf("after the burst: %#x %q %v, want close %d", b0, p, err, ws.CloseTopicClosed)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
