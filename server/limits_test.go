package server_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

func TestMessageSizes(t *testing.T) {
	const max = 64 << 10
	h := startHub(t, func(c *server.Config) { c.MaxMessageSize = max })
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	raw := h.rawSub(t, "test", "news")
	text := bytes.Repeat([]byte("é"), max/2)
	bin := make([]byte, max)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, nil},
		{websocket.BinaryMessage, nil},
		{websocket.TextMessage, []byte("a")},
		{websocket.BinaryMessage, []byte{0}},
		{websocket.BinaryMessage, bin[:125]},
		{websocket.BinaryMessage, bin[:126]},
		{websocket.BinaryMessage, bin[:0xffff]},
		{websocket.BinaryMessage, bin[:0x10000]},
		{websocket.TextMessage, text},
		{websocket.BinaryMessage, bin},
	}
	for _, m := range msgs {
		if err := p.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		expect(t, s, m.typ, m.data)
		raw.expectFrame(t, finBit|byte(m.typ), m.data)
	}

	// Fragments adding up to exactly the limit.
	rp := h.rawPub(t, "test", "frag")
	rs := h.sub(t, "test", "frag")
	rp.send(t, masked(opBin, bin[:max/2]), masked(opCont, bin[max/2:max-1]), masked(finBit|opCont, bin[max-1:]))
	expect(t, rs, websocket.BinaryMessage, bin)
}

// TestMessageTooBig: one byte over the limit closes the publisher with
// 1009, whether the message comes whole or in fragments, and none of it is
// forwarded.
func TestMessageTooBig(t *testing.T) {
	const max = 64 << 10
	h := startHub(t, func(c *server.Config) { c.MaxMessageSize = max })
	t.Run("gorilla", func(t *testing.T) {
		p := h.pub(t, "test", "whole")
		sub := h.rawSub(t, "test", "whole")
		if err := p.WriteMessage(websocket.BinaryMessage, make([]byte, max+1)); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, p, 1009)
		// The next frame the subscriber gets is from the next publisher.
		p2 := h.pub(t, "test", "whole")
		publish(t, p2, websocket.TextMessage, "next")
		sub.expectFrame(t, finBit|opText, []byte("next"))
	})
	t.Run("raw", func(t *testing.T) {
		p := h.rawPub(t, "test", "raw")
		sub := h.rawSub(t, "test", "raw")
		p.send(t, masked(finBit|opBin, make([]byte, max+1)))
		p.expectClose(t, 1009)
		p.closeHandshake(t, 1000)
		p2 := h.pub(t, "test", "raw")
		publish(t, p2, websocket.TextMessage, "next")
		sub.expectFrame(t, finBit|opText, []byte("next"))
	})
	t.Run("fragments", func(t *testing.T) {
		p := h.rawPub(t, "test", "frag")
		sub := h.rawSub(t, "test", "frag")
		p.send(t, masked(opBin, make([]byte, max/2)), masked(opCont, make([]byte, max/2)), masked(finBit|opCont, []byte{1}))
		p.expectClose(t, 1009)
		p.closeHandshake(t, 1000)
		p2 := h.pub(t, "test", "frag")
		publish(t, p2, websocket.TextMessage, "next")
		sub.expectFrame(t, finBit|opText, []byte("next"))
	})
}

func TestDefaultMaxMessageSize(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i ^ i>>8)
	}
	if err := p.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.BinaryMessage, msg)

	if err := p.WriteMessage(websocket.BinaryMessage, make([]byte, 1<<20+1)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, p, 1009)
}

// TestManyMessagesInOrder: 5,000 messages sent as fast as the publisher can,
// each reaching each subscriber once, in order.
func TestManyMessagesInOrder(t *testing.T) {
	const n = 5000
	h := startHub(t)
	p := h.pub(t, "test", "news")
	subs := make([]*websocket.Conn, 5)
	for i := range subs {
		subs[i] = h.sub(t, "test", "news")
	}
	msgIn, deliveries := h.Stats().MessagesIn.Load(), h.Stats().Deliveries.Load()

	message := func(i int) (int, []byte) {
		b := binary.BigEndian.AppendUint32(nil, uint32(i))
		b = append(b, bytes.Repeat([]byte{'a' + byte(i%26)}, i%200)...)
		if i%3 == 0 {
			return websocket.BinaryMessage, b
		}
		return websocket.TextMessage, []byte(fmt.Sprintf("%08d%s", i, b[4:]))
	}
	errs := make(chan error, len(subs))
	var wg sync.WaitGroup
	for k, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.SetReadDeadline(time.Now().Add(30 * time.Second))
			for i := range n + 1 {
				typ, got, err := s.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("subscriber %d, message %d: %v", k, i, err)
					return
				}
				wt, want := websocket.TextMessage, []byte("end")
				if i < n {
					wt, want = message(i)
				}
				if typ != wt || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("subscriber %d, message %d: got %d %.20q, want %d %.20q", k, i, typ, got, wt, want)
					return
				}
			}
		}()
	}
	for i := range n {
		typ, data := message(i)
		if err := p.WriteMessage(typ, data); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, p, websocket.TextMessage, "end")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// Nothing more, no duplicate: the next message is the next one sent.
	publish(t, p, websocket.BinaryMessage, "tail")
	for _, s := range subs {
		expect(t, s, websocket.BinaryMessage, []byte("tail"))
	}
	waitFor(t, "MessagesIn and Deliveries to count every message", func() bool {
		return h.Stats().MessagesIn.Load()-msgIn == n+2 &&
			h.Stats().Deliveries.Load()-deliveries == int64(len(subs))*(n+2)
	})
}

func TestStatsCount(t *testing.T) {
	h := startHub(t)
	st := h.Stats()
	p := h.pub(t, "test", "news")
	s1 := h.sub(t, "test", "news")
	s2 := h.sub(t, "test", "news")
	if got := st.Publishers.Load(); got != 1 {
		t.Errorf("Publishers = %d, want 1", got)
	}
	if got := st.Subscribers.Load(); got != 2 {
		t.Errorf("Subscribers = %d, want 2", got)
	}
	for _, m := range []string{"a", "bb", "ccc"} {
		publish(t, p, websocket.TextMessage, m)
	}
	for _, s := range []*websocket.Conn{s1, s2} {
		for _, m := range []string{"a", "bb", "ccc"} {
			expect(t, s, websocket.TextMessage, []byte(m))
		}
	}
	h.refused(t, "/ws/sub/test/none", nil)
	h.refused(t, "/ws/pub/garbage/test/x", nil)
	h.refused(t, "/ws/pub/"+h.key+"/test/news", nil)
	waitFor(t, "the counters", func() bool {
		return st.MessagesIn.Load() == 3 && st.BytesIn.Load() == 6 && st.Deliveries.Load() == 6 && st.Refused.Load() == 3
	})
}

// TestSlowConsumer: a subscriber that does not read is cut off once its
// backlog passes MaxBacklog, while a subscriber that reads gets everything.
func TestSlowConsumer(t *testing.T) {
	const (
		backlog = 64 << 10
		size    = 1024
		batch   = 16 // messages the healthy subscriber may be behind
		total   = 8 << 20 / size
	)
	h := startHub(t, func(c *server.Config) { c.MaxBacklog = backlog })
	p := h.pub(t, "test", "news")
	healthy := h.sub(t, "test", "news")

	slow := h.rawDial(t, 4096)
	slow.send(t, []byte(request("GET", "/ws/sub/test/news", upgradeHeaders()...)))
	slow.upgraded(t)

	checkSlowConsumer(t, p, healthy, slow, &h.Stats().SlowConsumers, total, batch, size)
}

// checkSlowConsumer publishes total messages of size bytes, batch at a
// time, and checks that healthy gets every one while slow, which does not
// read, gets whole messages in order from the first and then a close with
// 4000 (or the end of its connection), and that slowCount reaches 1.
func checkSlowConsumer(t *testing.T, p, healthy *websocket.Conn, slow *rawClient, slowCount *atomic.Int64, total, batch, size int) {
	t.Helper()
	message := func(i int) []byte {
		b := make([]byte, size)
		binary.BigEndian.PutUint32(b, uint32(i))
		return b
	}
	for i := 0; i < total; i += batch {
		for j := i; j < i+batch; j++ {
			if err := p.WriteMessage(websocket.BinaryMessage, message(j)); err != nil {
				t.Fatal(err)
			}
		}
		for j := i; j < i+batch; j++ {
			expect(t, healthy, websocket.BinaryMessage, message(j))
		}
	}
	waitFor(t, "SlowConsumers to count the slow subscriber", func() bool { return slowCount.Load() == 1 })

	// The slow subscriber gets whole messages, in order, from the first,
	// then a close frame with 4000 or the end of the connection.
	got := 0
	for {
		slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		b0, payload, err := slow.readFrame()
		if err != nil {
			if isTimeout(err) {
				t.Fatalf("after %d messages: %v", got, err)
			}
			break // dropped
		}
		if b0 == finBit|opClose {
			if code := binary.BigEndian.Uint16(payload); code != 4000 {
				t.Fatalf("after %d messages: close %d, want 4000", got, code)
			}
			slow.closeHandshake(t, 1000)
			break
		}
		if b0 != finBit|opBin || !bytes.Equal(payload, message(got)) {
			t.Fatalf("message %d: got %#x %.8x", got, b0, payload)
		}
		got++
	}
	if got >= total {
		t.Fatalf("the slow subscriber got all %d messages", got)
	}
	t.Logf("the slow subscriber got %d of %d messages", got, total)
}

// TestNoGoroutinePerConnection counts goroutines with 10 and with 5,000
// subscribers connected: the hub must not start one per connection.
func TestNoGoroutinePerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 sockets")
	}
	const many = 5000
	h := startHub(t)
	p := h.pub(t, "test", "news")
	subs := make([]*websocket.Conn, 0, many)
	connect := func(n int) {
		for len(subs) < n {
			c, _, err := dialer.Dial(h.url+"/ws/sub/test/news", nil)
			if err != nil {
				t.Fatalf("subscriber %d: %v", len(subs), err)
			}
			subs = append(subs, c)
		}
	}
	closeAll := func() {
		for _, c := range subs {
			c.Close()
		}
		subs = subs[:0]
	}
	defer closeAll()

	connect(10)
	base := runtime.NumGoroutine()
	// flat checks that the goroutines are back to base+10 within two
	// seconds: timers of other tests may run a goroutine for a moment, a
	// goroutine per connection stays.
	flat := func(when string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			g := runtime.NumGoroutine()
			if g <= base+10 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines %s, %d with 10 subscribers", g, when, base)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	connect(many)
	flat(fmt.Sprintf("with %d subscribers", many))
	if got := h.Stats().Subscribers.Load(); got != many {
		t.Fatalf("Stats.Subscribers = %d, want %d", got, many)
	}
	// Every one of them is in the topic.
	publish(t, p, websocket.TextMessage, "to all")
	for _, c := range subs {
		expect(t, c, websocket.TextMessage, []byte("to all"))
	}
	flat(fmt.Sprintf("after a fan-out to %d subscribers", many))

	closeAll()
	waitFor(t, "the hub's subscribers to drain", func() bool { return h.Stats().Subscribers.Load() == 0 })
	flat("after the subscribers left")
	publish(t, p, websocket.TextMessage, "nobody")
	s := h.sub(t, "test", "news")
	publish(t, p, websocket.TextMessage, "somebody")
	expect(t, s, websocket.TextMessage, []byte("somebody"))
}

// TestJoinMidStream: subscribers join while a publisher streams; each gets
// whole messages, an unbroken run of the stream that starts no later than
// the first message sent after its 101.
func TestJoinMidStream(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	var sent atomicCounter // the last message written
	sent.set(-1)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			msg := binary.BigEndian.AppendUint32(nil, uint32(i))
			msg = append(msg, bytes.Repeat([]byte{byte(i)}, i%300)...)
			if err := p.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				done <- err
				return
			}
			sent.set(i)
		}
	}()
	for range 50 {
		c, _, err := dialer.Dial(h.url+"/ws/sub/test/news", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Message after+1 may have been on its way; after+2 was written
		// wholly after the 101 came.
		after := sent.get()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		prev := -1
		for range 20 {
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read after message %d: %v", prev, err)
			}
			i := int(binary.BigEndian.Uint32(msg))
			switch {
			case len(msg) != 4+i%300:
				t.Fatalf("message %d has %d bytes, want %d", i, len(msg), 4+i%300)
			case prev < 0 && i > after+2:
				t.Fatalf("first message %d, but %d was sent after the 101", i, after+2)
			case prev >= 0 && i != prev+1:
				t.Fatalf("message %d after %d", i, prev)
			}
			prev = i
		}
		// Leave with the close handshake: TestSubscriberSurvivesOthersLeaving
		// is about abrupt leaves.
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
			t.Fatal(err)
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if !websocket.IsCloseError(err, 1000) {
					t.Fatalf("leaving: %v, want close 1000", err)
				}
				break
			}
		}
		c.Close()
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// atomicCounter is an int shared by two goroutines.
type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (a *atomicCounter) set(n int) { a.mu.Lock(); a.n = n; a.mu.Unlock() }
func (a *atomicCounter) get() int  { a.mu.Lock(); defer a.mu.Unlock(); return a.n }

// TestTwoPublishersConcurrently: with two publishers sending at once, each
// subscriber gets every message of each, whole and in that publisher's
// order.
func TestTwoPublishersConcurrently(t *testing.T) {
	const n = 2000
	h := startHub(t, func(c *server.Config) { c.PublishersPerTopic = 2 })
	pubs := []*websocket.Conn{h.pub(t, "test", "news"), h.pub(t, "test", "news")}
	subs := []*websocket.Conn{h.sub(t, "test", "news"), h.sub(t, "test", "news")}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				msg := fmt.Appendf(nil, "%d:%06d:%s", k, i, bytes.Repeat([]byte{'x'}, i%500))
				if err := p.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for j, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := [2]int{}
			s.SetReadDeadline(time.Now().Add(30 * time.Second))
			for range 2 * n {
				_, msg, err := s.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("subscriber %d: %v", j, err)
					return
				}
				var k, i int
				if _, err := fmt.Sscanf(string(msg), "%d:%d:", &k, &i); err != nil || k < 0 || k > 1 ||
					i != next[k] || len(msg) != 9+i%500 {
					errs <- fmt.Errorf("subscriber %d: got %.20q, want publisher %d's message %d next", j, msg, k, next[k])
					return
				}
				next[k]++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSubscriberFloodAcrossSecondBoundary: the limit is on any second, not
// on each second of the clock: 1.5 times the limit sent within a few
// milliseconds that straddle a clock second is a flood.
func TestSubscriberFloodAcrossSecondBoundary(t *testing.T) {
	const limit = 4096
	h := startHub(t, func(c *server.Config) { c.SubscriberInputLimit = limit })
	h.pub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	chunk := masked(finBit|opBin, make([]byte, limit*3/4))

	// Just before a second of the clock ends, then just after.
	now := time.Now()
	next := now.Truncate(time.Second).Add(time.Second)
	if next.Sub(now) < 100*time.Millisecond {
		next = next.Add(time.Second)
	}
	time.Sleep(time.Until(next.Add(-30 * time.Millisecond)))
	s.send(t, chunk)
	time.Sleep(time.Until(next.Add(30 * time.Millisecond)))
	s.send(t, chunk, masked(finBit|opPing, []byte("?")))
	b0, p := s.next(t)
	if b0 != finBit|opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != 1008 {
		t.Fatalf("after %d bytes in 60ms: got frame %#x %q, want close 1008", 2*len(chunk), b0, p)
	}
}
