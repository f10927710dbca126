package server_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

// TestKeepaliveDropsSilentPeerAtOnce: a subscriber that answers no ping
// gets its 4003 close frame and then loses its socket at once: the hub does
// not wait CloseTimeout (an hour here) for a close the peer will not send.
// The client reads everything, as a peer whose application hangs does (its
// kernel still takes the bytes), and never writes.
func TestKeepaliveDropsSilentPeerAtOnce(t *testing.T) {
	h := startHub(t, func(c *server.Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 100 * time.Millisecond
		c.CloseTimeout = time.Hour
	})
	p := h.pub(t, "test", "news") // gorilla answers pings while it reads
	go func() {
		for {
			if _, _, err := p.ReadMessage(); err != nil {
				return
			}
		}
	}()
	silent := h.rawSub(t, "test", "news")
	b0, _ := silent.next(t)
	if b0 != finBit|opPing {
		t.Fatalf("first frame to a silent subscriber: %#x, want a ping", b0)
	}
	silent.expectClose(t, 4003)
	silent.expectEnd(t) // five seconds, against CloseTimeout's hour
	// The hub is still there for everyone else.
	sub := h.sub(t, "test", "news")
	if err := p.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
		t.Fatal(err)
	}
	expect(t, sub, websocket.TextMessage, []byte("after"))
}

// TestKeepaliveClosesSilentPeers: a connection that sends nothing is pinged
// after PingInterval and closed with 4003 if it stays silent for
// PongTimeout; one that answers its pings stays.
func TestKeepaliveClosesSilentPeers(t *testing.T) {
	h := startHub(t, func(c *server.Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 200 * time.Millisecond
	})
	p := h.pub(t, "test", "news") // gorilla answers pings while it reads
	go func() {
		for {
			if _, _, err := p.ReadMessage(); err != nil {
				return
			}
		}
	}()
	silent := h.rawSub(t, "test", "news")
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	b0, _ := silent.next(t)
	if b0 != finBit|opPing {
		t.Fatalf("first frame to a silent subscriber: %#x, want a ping", b0)
	}
	silent.expectClose(t, 4003)
	if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
		t.Errorf("silent subscriber closed after %v, want about 300ms (ping interval + pong timeout)", el)
	}
	// A subscriber that answers its pings (the raw client pongs each one)
	// outlives several pong timeouts.
	alive := h.rawSub(t, "test", "news")
	deadline := time.Now().Add(time.Second)
	pings := 0
	for time.Now().Before(deadline) {
		alive.SetReadDeadline(deadline)
		b0, payload, err := alive.readFrame()
		if err != nil {
			break
		}
		if b0 == finBit|opClose {
			t.Fatalf("a subscriber that answers pings was closed: %q", payload)
		}
		if b0 == finBit|opPing {
			pings++
			alive.send(t, masked(finBit|opPong, payload))
		}
	}
	if pings < 2 {
		t.Errorf("answering subscriber got %d pings in a second, want several", pings)
	}
	if err := p.WriteMessage(websocket.TextMessage, []byte("still served")); err != nil {
		t.Fatalf("the publisher (answering pings) was closed: %v", err)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		h := startHub(t, func(c *server.Config) { c.MaxConnections = 2 })
		h.pub(t, "test", "news")
		h.sub(t, "test", "news")
		if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusServiceUnavailable {
			t.Fatalf("third connection: %d, want 503", got)
		}
	})
	t.Run("per address", func(t *testing.T) {
		h := startHub(t, func(c *server.Config) { c.MaxConnectionsPerAddr = 2 })
		h.pub(t, "test", "news")
		h.sub(t, "test", "news")
		if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusServiceUnavailable {
			t.Fatalf("third connection from 127.0.0.1: %d, want 503", got)
		}
		other := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			return d.Dial(network, addr)
		}}
		c, _, err := other.Dial(h.url+"/ws/sub/test/news", nil)
		if err != nil {
			t.Fatalf("a connection from 127.0.0.2 was refused: %v", err)
		}
		c.Close()
	})
	t.Run("handshake rate", func(t *testing.T) {
		h := startHub(t, func(c *server.Config) { c.HandshakeRate = 5; c.HandshakeBurst = 3 })
		h.pub(t, "test", "news")
		h.sub(t, "test", "news")
		h.sub(t, "test", "news")
		if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusTooManyRequests {
			t.Fatalf("fourth handshake in a burst of 3: %d, want 429", got)
		}
		time.Sleep(300 * time.Millisecond) // refills at 5 a second
		h.sub(t, "test", "news")
		if got := h.Stats().Refused.Load(); got != 1 {
			t.Errorf("refusals counted: %d, want 1", got)
		}
	})
}

func TestAllowedOrigins(t *testing.T) {
	h := startHub(t, func(c *server.Config) {
		c.AllowedOrigins = []string{"https://app.example", "https://*.example.org"}
	})
	h.pub(t, "test", "news")
	for origin, ok := range map[string]bool{
		"":                      true, // not a browser
		"https://app.example":   true,
		"https://a.example.org": true,
		"https://example.org":   false,
		"http://app.example":    false,
		"https://evil.example":  false,
		"https://app.example.x": false,
	} {
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		c, resp, err := dialer.Dial(h.url+"/ws/sub/test/news", hdr)
		switch {
		case ok && err != nil:
			t.Errorf("origin %q refused: %v", origin, err)
		case !ok && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden):
			t.Errorf("origin %q: err %v, want 403", origin, err)
		}
		if c != nil {
			c.Close()
		}
	}
}

func TestMaxTopicsPerDomain(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.MaxTopicsPerDomain = 2 })
	h.pub(t, "test", "a")
	h.pub(t, "test", "b")
	if got := h.refused(t, "/ws/pub/"+h.key+"/test/c", nil); got != http.StatusTooManyRequests {
		t.Fatalf("third topic of a domain: %d, want 429", got)
	}
}

func TestMaxPublishRate(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.MaxPublishRate = 10 })
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	for i := range 50 {
		if err := p.WriteMessage(websocket.BinaryMessage, []byte{byte(i)}); err != nil {
			break
		}
	}
	expectClosed(t, p, 4004)
	got := 0
	for {
		s.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, b, err := s.ReadMessage()
		if err != nil {
			break
		}
		if int(b[0]) != got {
			t.Fatalf("message %d arrived as number %d", b[0], got)
		}
		got++
	}
	if got < 10 || got > 12 {
		t.Errorf("subscriber got %d messages of a burst of 50 at 10 a second, want the first 10 or so", got)
	}
}

// TestConfiguredMaxHeaderBytes: a head up to MaxHeaderBytes is served, one
// byte more gets 431.
func TestConfiguredMaxHeaderBytes(t *testing.T) {
	const limit = 1024
	h := startHub(t, func(c *server.Config) { c.MaxHeaderBytes = limit })
	h.pub(t, "test", "news")
	head := func(pad int) string {
		return request("GET", "/ws/sub/test/news", upgradeHeaders("X-Pad: "+strings.Repeat("p", pad))...)
	}
	base := len(head(0))
	if resp := h.roundTrip(t, head(limit-base)); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a %d-byte head: %s, want 101", limit, resp.Status)
	}
	if resp := h.roundTrip(t, head(limit-base+1)); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a %d-byte head: %s, want 431", limit+1, resp.Status)
	}
}
