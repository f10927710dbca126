package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

func publish(t testing.TB, p *websocket.Conn, typ int, data string) {
	t.Helper()
	if err := p.WriteMessage(typ, []byte(data)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// leave closes a publisher with the close handshake and returns once the
// hub has answered, that is once the publisher is out of its topic.
func leave(t testing.TB, p *websocket.Conn) {
	t.Helper()
	if err := p.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, p, 1000)
}

func TestDomainsDoNotMix(t *testing.T) {
	h := startHub(t)
	keyB, err := h.keys.Add(context.Background(), "b", "bob")
	if err != nil {
		t.Fatal(err)
	}
	keyA, err := h.keys.Add(context.Background(), "a", "alice")
	if err != nil {
		t.Fatal(err)
	}
	pa := h.dial(t, "/ws/pub/"+keyA+"/a/news", nil)
	pb := h.dial(t, "/ws/pub/b/news", http.Header{"Authorization": {"Bearer " + keyB}})
	pt := h.pub(t, "test", "news")
	sa := h.sub(t, "a", "news")
	sb := h.sub(t, "b", "news")
	st := h.sub(t, "test", "news")
	if n := h.Topics(); n != 3 {
		t.Fatalf("%d topics, want 3", n)
	}
	publish(t, pa, websocket.TextMessage, "a1")
	publish(t, pb, websocket.TextMessage, "b1")
	publish(t, pt, websocket.TextMessage, "t1")
	publish(t, pa, websocket.TextMessage, "a2")
	publish(t, pb, websocket.TextMessage, "b2")
	publish(t, pt, websocket.TextMessage, "t2")
	for _, c := range []struct {
		s    *websocket.Conn
		want []string
	}{{sa, []string{"a1", "a2"}}, {sb, []string{"b1", "b2"}}, {st, []string{"t1", "t2"}}} {
		for _, w := range c.want {
			expect(t, c.s, websocket.TextMessage, []byte(w))
		}
	}
	// Each domain's topic has its own publisher slot.
	if got := h.refused(t, "/ws/pub/"+keyA+"/a/news", nil); got != http.StatusConflict {
		t.Fatalf("second publisher of a/news: %d, want 409", got)
	}
}

func TestSubscriberToUnstartedTopic(t *testing.T) {
	h := startHub(t)
	if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusNotFound {
		t.Fatalf("subscriber to a topic not started: %d, want 404", got)
	}
	if n := h.Topics(); n != 0 {
		t.Fatalf("%d topics, want 0", n)
	}
	h.pub(t, "test", "news")
	h.sub(t, "test", "news")
	if got := h.refused(t, "/ws/sub/test/other", nil); got != http.StatusNotFound {
		t.Fatalf("subscriber to another topic: %d, want 404", got)
	}
}

func TestSubscribeWaits(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	s1 := h.sub(t, "test", "news")
	s2 := h.sub(t, "test", "news")
	p := h.pub(t, "test", "news")
	publish(t, p, websocket.TextMessage, "first")
	expect(t, s1, websocket.TextMessage, []byte("first"))
	expect(t, s2, websocket.TextMessage, []byte("first"))
	if n := h.Topics(); n != 1 {
		t.Fatalf("%d topics, want 1", n)
	}
}

func TestSecondPublisherConflict(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	path := "/ws/pub/" + h.key + "/test/news"
	if got := h.refused(t, path, nil); got != http.StatusConflict {
		t.Fatalf("second publisher: %d, want 409", got)
	}
	if got := h.refused(t, "/ws/pub/test/news", http.Header{"Authorization": {"Bearer " + h.key}}); got != http.StatusConflict {
		t.Fatalf("second publisher, bearer: %d, want 409", got)
	}
	// The first publisher is unaffected.
	publish(t, p, websocket.TextMessage, "still mine")
	expect(t, s, websocket.TextMessage, []byte("still mine"))
}

func TestTwoPublishersPerTopic(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.PublishersPerTopic = 2 })
	p1 := h.pub(t, "test", "news")
	p2 := h.pub(t, "test", "news")
	if got := h.refused(t, "/ws/pub/"+h.key+"/test/news", nil); got != http.StatusConflict {
		t.Fatalf("third publisher: %d, want 409", got)
	}
	s := h.sub(t, "test", "news")
	publish(t, p1, websocket.TextMessage, "one")
	expect(t, s, websocket.TextMessage, []byte("one"))
	publish(t, p2, websocket.TextMessage, "two")
	expect(t, s, websocket.TextMessage, []byte("two"))

	// One leaving frees its slot; the topic lives on with the other.
	leave(t, p1)
	publish(t, p2, websocket.TextMessage, "three")
	expect(t, s, websocket.TextMessage, []byte("three"))
	p3 := h.pub(t, "test", "news")
	publish(t, p3, websocket.TextMessage, "four")
	expect(t, s, websocket.TextMessage, []byte("four"))
}

// TestGraceTakeover: a new publisher arriving within the grace period takes
// the topic over; its subscribers notice nothing.
func TestGraceTakeover(t *testing.T) {
	const grace = time.Second
	for _, how := range []string{"close handshake", "dropped connection"} {
		t.Run(how, func(t *testing.T) {
			h := startHub(t, func(c *server.Config) { c.GracePeriod = grace })
			p := h.pub(t, "test", "news")
			s := h.sub(t, "test", "news")
			raw := h.rawSub(t, "test", "news")
			publish(t, p, websocket.TextMessage, "before")
			expect(t, s, websocket.TextMessage, []byte("before"))
			raw.expectFrame(t, finBit|opText, []byte("before"))

			if how == "close handshake" {
				leave(t, p)
			} else {
				p.NetConn().(*net.TCPConn).SetLinger(0)
				p.Close()
				waitFor(t, "the publisher to leave", func() bool { return h.Stats().Publishers.Load() == 0 })
			}
			left := time.Now()
			late := h.sub(t, "test", "news") // may join during the grace
			p2 := h.pub(t, "test", "news")
			if d := time.Since(left); d >= grace {
				t.Fatalf("the new publisher took %v to come, longer than the grace period", d)
			}
			// Wait past the end of the first grace period on a subscriber:
			// nothing may arrive, no close above all.
			raw.SetReadDeadline(left.Add(grace + 200*time.Millisecond))
			if b0, p, err := raw.readFrame(); !isTimeout(err) {
				t.Fatalf("during the takeover the subscriber got %#x %.40q %v, want nothing", b0, p, err)
			}
			if got := h.refused(t, "/ws/pub/"+h.key+"/test/news", nil); got != http.StatusConflict {
				t.Fatalf("publisher after the takeover: %d, want 409", got)
			}
			publish(t, p2, websocket.TextMessage, "after")
			expect(t, s, websocket.TextMessage, []byte("after"))
			expect(t, late, websocket.TextMessage, []byte("after"))
			raw.expectFrame(t, finBit|opText, []byte("after"))
			if got := h.Stats().TopicsExpired.Load(); got != 0 {
				t.Fatalf("Stats.TopicsExpired = %d, want 0", got)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestGraceExpiry: when the grace runs out, every subscriber is closed with
// 4001 and the topic is gone.
func TestGraceExpiry(t *testing.T) {
	const grace = 300 * time.Millisecond
	h := startHub(t, func(c *server.Config) { c.GracePeriod = grace })
	p := h.pub(t, "test", "news")
	subs := []*websocket.Conn{h.sub(t, "test", "news"), h.sub(t, "test", "news")}
	raw := h.rawSub(t, "test", "news")
	publish(t, p, websocket.BinaryMessage, "last")
	leave(t, p)
	left := time.Now()
	subs = append(subs, h.sub(t, "test", "news")) // joins during the grace

	// A publisher with a refused key does not take the topic over.
	other, err := h.keys.Add(context.Background(), "other", "o")
	if err != nil {
		t.Fatal(err)
	}
	if got := h.refused(t, "/ws/pub/"+other+"/test/news", nil); got != http.StatusUnauthorized {
		t.Fatalf("publisher with another domain's key: %d, want 401", got)
	}

	for i, s := range subs {
		if i < 2 {
			expect(t, s, websocket.BinaryMessage, []byte("last"))
		}
		expectClosed(t, s, 4001)
	}
	raw.expectFrame(t, finBit|opBin, []byte("last"))
	raw.expectClose(t, 4001)
	if d := time.Since(left); d < grace-20*time.Millisecond {
		t.Fatalf("subscribers closed %v after the publisher left, want at least %v", d, grace)
	}
	raw.closeHandshake(t, 4001)
	if n := h.Topics(); n != 0 {
		t.Fatalf("%d topics after the grace, want 0", n)
	}
	if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusNotFound {
		t.Fatalf("subscriber after the grace: %d, want 404", got)
	}
	if got := h.Stats().TopicsExpired.Load(); got != 1 {
		t.Fatalf("Stats.TopicsExpired = %d, want 1", got)
	}
	// The topic can start again.
	p2 := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	publish(t, p2, websocket.TextMessage, "again")
	expect(t, s, websocket.TextMessage, []byte("again"))
}

func TestShutdownClosesEveryone(t *testing.T) {
	h := startHub(t)
	var clients []*websocket.Conn
	for _, topic := range []string{"one", "two"} {
		clients = append(clients, h.pub(t, "test", topic))
		for range 3 {
			clients = append(clients, h.sub(t, "test", topic))
		}
	}
	half := h.rawDial(t, 0)
	half.send(t, []byte("GET /ws/sub/test/one HTTP/1.1\r\nHost: h\r\n"))
	// The hub accepts connections in order: once raw, dialed after half, is
	// upgraded, half is open in the hub.
	raw := h.rawSub(t, "test", "one")

	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, errs[i] = c.ReadMessage()
		}()
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { done <- h.Shutdown(ctx) }()

	raw.expectClose(t, 1001)
	// While the hub drains, a handshake in progress and a new one get 503.
	if resp, _ := half.response(t); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("handshake in progress at Shutdown: %d, want 503", resp.StatusCode)
	}
	if got := h.refused(t, "/ws/sub/test/one", nil); got != http.StatusServiceUnavailable {
		t.Errorf("handshake during Shutdown: %d, want 503", got)
	}
	raw.closeHandshake(t, 1000)
	wg.Wait()
	for i, err := range errs {
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1001 {
			t.Errorf("client %d: %v, want close 1001", i, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, _, err := dialer.Dial(h.url+"/ws/sub/test/one", nil); err == nil {
		t.Fatal("dial after Shutdown succeeded")
	}
}

// TestSubscriberSurvivesOthersLeaving: subscribers that leave abruptly (a
// reset, while messages are being written to them) must not take a newly
// upgraded subscriber down with them. Each round upgrades a subscriber,
// reads three messages and resets the connection.
func TestSubscriberSurvivesOthersLeaving(t *testing.T) {
	const rounds = 300
	h := startHub(t)
	p := h.pub(t, "test", "news")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.WriteMessage(websocket.BinaryMessage, []byte{byte(i)}); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()

	req := []byte(request("GET", "/ws/sub/test/news", upgradeHeaders()...))
	for round := range rounds {
		c := h.rawDial(t, 0)
		c.send(t, req)
		c.upgraded(t)
		for i := range 3 {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.readFrame(); err != nil {
				t.Fatalf("round %d: message %d after the 101: %v (Stats: %d slow consumers)", round, i, err, h.Stats().SlowConsumers.Load())
			}
		}
		c.Conn.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

// TestShutdownRefusesHandshakesStartedDuringIt: a connection that opens
// while the hub drains gets 503 even if it never finishes its request head,
// and does not hold Shutdown up until its handshake timeout.
func TestShutdownRefusesHandshakesStartedDuringIt(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	raw := h.rawSub(t, "test", "news")
	pubClosed := make(chan error, 1)
	go func() {
		p.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := p.ReadMessage()
		pubClosed <- err
	}()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- h.Shutdown(ctx)
	}()
	// Once both clients have their 1001 the hub has closed every client it
	// had; late comes after.
	raw.expectClose(t, 1001)
	if err := <-pubClosed; !websocket.IsCloseError(err, 1001) {
		t.Fatalf("publisher: %v, want close 1001", err)
	}
	late := h.rawDial(t, 0)
	late.send(t, []byte("GET /ws/sub/test/news HTTP/1.1\r\nHost: h\r\n"))
	raw.closeHandshake(t, 1000)

	start := time.Now()
	late.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := http.ReadResponse(late.r, nil)
	switch {
	case err != nil:
		t.Errorf("handshake begun during Shutdown: %v after %v, want 503", err, time.Since(start).Round(time.Millisecond))
	case resp.StatusCode != http.StatusServiceUnavailable:
		t.Errorf("handshake begun during Shutdown: %d, want 503", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatalf("Shutdown still waiting %v after the last upgraded client left", time.Since(start).Round(time.Millisecond))
	}
}

// TestRefusedPublisherEarlyFrames: frames a publisher sends right after its
// request go nowhere when the request is refused.
func TestRefusedPublisherEarlyFrames(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	s := h.rawSub(t, "test", "news")
	frames := append(masked(finBit|opText, []byte("intruder")), masked(finBit|opBin, []byte{6, 6, 6})...)
	other, err := h.keys.Add(context.Background(), "other", "o")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/ws/pub/" + other + "/test/news", "/ws/pub/garbage/test/news", "/ws/pub/test/news"} {
		c := h.rawDial(t, 0)
		c.send(t, append([]byte(request("GET", target, upgradeHeaders()...)), frames...))
		if resp, _ := c.response(t); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%.30s: %d, want 401", target, resp.StatusCode)
		}
	}
	p := h.pub(t, "test", "news")
	c := h.rawDial(t, 0)
	c.send(t, append([]byte(request("GET", "/ws/pub/"+h.key+"/test/news", upgradeHeaders()...)), frames...))
	if resp, _ := c.response(t); resp.StatusCode != http.StatusConflict {
		t.Fatalf("second publisher: %d, want 409", resp.StatusCode)
	}
	publish(t, p, websocket.TextMessage, "owner")
	s.expectFrame(t, finBit|opText, []byte("owner"))
}
