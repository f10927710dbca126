package server_test

import (
	"bytes"
	"strconv"
	"sync"
	"testing"
	"time"
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
