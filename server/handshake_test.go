package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/server"
)

// nothingCreated checks that no refusal left a topic behind.
func nothingCreated(t *testing.T, h *hub, domains ...string) {
	t.Helper()
	if n := h.Topics(); n != 0 {
		t.Fatalf("%d topics after refusals, want 0", n)
	}
	for _, d := range domains {
		if got := h.refused(t, "/ws/sub/"+d+"/news", nil); got != http.StatusNotFound {
			t.Fatalf("subscriber to %s/news: %d, want 404", d, got)
		}
	}
}

func TestPublisherKeyInPathOrHeader(t *testing.T) {
	h := startHub(t)
	p1 := h.dial(t, "/ws/pub/"+h.key+"/test/one", nil)
	p2 := h.dial(t, "/ws/pub/test/two", http.Header{"Authorization": {"Bearer " + h.key}})
	s1 := h.sub(t, "test", "one")
	s2 := h.sub(t, "test", "two")
	if err := p1.WriteMessage(websocket.TextMessage, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := p2.WriteMessage(websocket.TextMessage, []byte("two")); err != nil {
		t.Fatal(err)
	}
	expect(t, s1, websocket.TextMessage, []byte("one"))
	expect(t, s2, websocket.TextMessage, []byte("two"))
}

func TestRefusedKeys(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	other, err := h.keys.Add(ctx, "other", "o")
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := h.keys.Add(ctx, "test", "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.keys.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	inactive, err := h.keys.Add(ctx, "off", "i")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.keys.SetActive(ctx, "off", false); err != nil {
		t.Fatal(err)
	}
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	typo := h.key[:10] + string(h.key[10]^1) + h.key[11:]
	bearer := func(v string) http.Header { return http.Header{"Authorization": {v}} }

	cases := []struct {
		name, path string
		hdr        http.Header
	}{
		{"unknown", "/ws/pub/" + unknown + "/test/news", nil},
		{"unknown UUID", "/ws/pub/123e4567-e89b-12d3-a456-426614174000/test/news", nil},
		{"typo", "/ws/pub/" + typo + "/test/news", nil},
		{"garbage", "/ws/pub/garbage/test/news", nil},
		{"another domain's key", "/ws/pub/" + other + "/test/news", nil},
		{"key for test on other", "/ws/pub/" + h.key + "/other/news", nil},
		{"domain differs in case", "/ws/pub/" + h.key + "/TEST/news", nil},
		{"domain is a prefix", "/ws/pub/" + h.key + "/tes/news", nil},
		{"domain is longer", "/ws/pub/" + h.key + "/test2/news", nil},
		{"revoked", "/ws/pub/" + revoked + "/test/news", nil},
		{"deactivated", "/ws/pub/" + inactive + "/off/news", nil},
		{"no key", "/ws/pub/test/news", nil},
		{"empty bearer", "/ws/pub/test/news", bearer("Bearer ")},
		{"basic auth", "/ws/pub/test/news", bearer("Basic " + h.key)},
		{"no scheme", "/ws/pub/test/news", bearer(h.key)},
		{"bearer garbage", "/ws/pub/test/news", bearer("Bearer garbage")},
		{"bearer unknown", "/ws/pub/test/news", bearer("Bearer " + unknown)},
		{"bearer revoked", "/ws/pub/test/news", bearer("Bearer " + revoked)},
		{"bearer other domain", "/ws/pub/test/news", bearer("Bearer " + other)},
		{"bearer deactivated", "/ws/pub/off/news", bearer("Bearer " + inactive)},
	}
	for _, c := range cases {
		if got := h.refused(t, c.path, c.hdr); got != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", c.name, got)
		}
	}
	if got := h.Stats().Refused.Load(); got != int64(len(cases)) {
		t.Errorf("Stats.Refused = %d, want %d", got, len(cases))
	}
	nothingCreated(t, h, "test", "other", "off", "TEST", "tes", "test2")
}

func TestSetActiveTurnsKeysOffAndOn(t *testing.T) {
	h := startHub(t)
	ctx := context.Background()
	if _, err := h.keys.SetActive(ctx, "test", false); err != nil {
		t.Fatal(err)
	}
	if got := h.refused(t, "/ws/pub/"+h.key+"/test/news", nil); got != http.StatusUnauthorized {
		t.Fatalf("deactivated key: %d, want 401", got)
	}
	if got := h.refused(t, "/ws/pub/test/news", http.Header{"Authorization": {"Bearer " + h.key}}); got != http.StatusUnauthorized {
		t.Fatalf("deactivated key as bearer: %d, want 401", got)
	}
	nothingCreated(t, h, "test")
	if _, err := h.keys.SetActive(ctx, "test", true); err != nil {
		t.Fatal(err)
	}
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	if err := p.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.BinaryMessage, []byte{1})
}

// TestSubscriberInTopicBy101 dials a subscriber and publishes at once, many
// times: the message must never be missed.
func TestSubscriberInTopicBy101(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	for i := range 200 {
		c, _, err := dialer.Dial(h.url+"/ws/sub/test/news", nil)
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte{byte(i), byte(i >> 8)}
		if err := p.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		expect(t, c, websocket.BinaryMessage, msg)
		c.Close()
	}
}

func TestPaths(t *testing.T) {
	h := startHub(t)
	rep := strings.Repeat
	k := h.key
	cases := []struct {
		target string
		status int
	}{
		// Well formed: the topic is not started.
		{"/ws/sub/test/news", 404},
		{"/ws/sub/test/news?from=1&a/b", 404},
		{"/ws/sub/test/news?x=%zz&rewind=2", 404},
		{"/ws/sub/" + rep("d", 64) + "/" + rep("t", 255), 404},
		{"/ws/sub/" + rep("%41", 64) + "/" + rep("%62", 255), 404},
		{"/ws/sub/%C3%A9t%C3%A9/prix%20%2B", 404},
		{"/ws/sub/" + rep("%C3%A9", 32) + "/x", 404},

		// Missing, extra or empty segments.
		{"/ws/sub", 400},
		{"/ws/sub/", 400},
		{"/ws/sub/test", 400},
		{"/ws/sub/test/", 400},
		{"/ws/sub//news", 400},
		{"/ws/sub//", 400},
		{"/ws/sub/test/news/", 400},
		{"/ws/sub/test/news/more", 400},
		{"/ws/sub/test//news", 400},
		// Too long, after decoding.
		{"/ws/sub/" + rep("d", 65) + "/news", 400},
		{"/ws/sub/test/" + rep("t", 256), 400},
		{"/ws/sub/" + rep("%41", 65) + "/news", 400},
		{"/ws/sub/" + rep("%C3%A9", 32) + "x/news", 400},
		// Bad percent-encoding.
		{"/ws/sub/%zz/news", 400},
		{"/ws/sub/test/news%", 400},
		{"/ws/sub/test/news%4", 400},
		{"/ws/sub/%G0/news", 400},
		// Invalid UTF-8.
		{"/ws/sub/%FF/news", 400},
		{"/ws/sub/test/%C3", 400},
		{"/ws/sub/test/%C0%AF", 400},
		{"/ws/sub/test/%ED%A0%80", 400},
		// An encoded slash.
		{"/ws/sub/a%2Fb/news", 400},
		{"/ws/sub/test/a%2fb", 400},

		// A malformed publisher path is 400 whatever the key.
		{"/ws/pub/" + k + "/test/news/more", 400},
		{"/ws/pub/" + k + "/test/", 400},
		{"/ws/pub/" + k + "//news", 400},
		{"/ws/pub/" + k + "/test/%zz", 400},
		{"/ws/pub/" + k + "/a%2Fb/news", 400},
		{"/ws/pub/" + k + "/test/%FF", 400},
		{"/ws/pub/" + k + "/" + rep("d", 65) + "/news", 400},
		{"/ws/pub/" + k + "/test/" + rep("t", 256), 400},
		{"/ws/pub//test/news", 400},
		{"/ws/pub/garbage/test/%FF", 400},
		{"/ws/pub/garbage/test/news/more", 400},
		{"/ws/pub/" + rep("k", 129) + "/test/news", 400},
		{"/ws/pub/%zz/test/news", 400},
		{"/ws/pub", 400},
		{"/ws/pub/", 400},

		// No endpoint.
		{"/", 404},
		{"/ws", 404},
		{"/ws/", 404},
		{"/ws/foo/test/news", 404},
		{"/ws/SUB/test/news", 404},
		{"/ws/subscribe/test/news", 404},
		{"/wss/sub/test/news", 404},
		{"/metrics", 404},
		{"/sub/test/news", 404},
	}
	for _, c := range cases {
		resp := h.roundTrip(t, request("GET", c.target, upgradeHeaders()...))
		if resp.StatusCode != c.status {
			t.Errorf("%.60s: %d, want %d", c.target, resp.StatusCode, c.status)
		}
	}
	if got := h.Stats().Refused.Load(); got != int64(len(cases)) {
		t.Errorf("Stats.Refused = %d, want %d", got, len(cases))
	}
	nothingCreated(t, h, "test")
}

// TestPathsAreDecoded checks that differently encoded paths name the same
// topic.
func TestPathsAreDecoded(t *testing.T) {
	h := startHub(t)
	p := h.rawUpgrade(t, "/ws/pub/"+h.key+"/test/caf%C3%A9%20cr%c3%a8me+%2B")
	s1 := h.rawUpgrade(t, "/ws/sub/%74%65%73%74/caf%c3%a9%20cr%C3%A8me%2B+")
	s2 := h.sub(t, "test", "café crème++")
	p.send(t, masked(finBit|opText, []byte("x")))
	s1.expectFrame(t, finBit|opText, []byte("x"))
	expect(t, s2, websocket.TextMessage, []byte("x"))
	if n := h.Topics(); n != 1 {
		t.Fatalf("%d topics, want 1", n)
	}
	// The key segment is decoded too.
	encoded := strings.Replace(h.key, "_", "%5F", 1)
	p2 := h.rawUpgrade(t, "/ws/pub/"+encoded+"/test/other")
	s3 := h.sub(t, "test", "other")
	p2.send(t, masked(finBit|opText, []byte("y")))
	expect(t, s3, websocket.TextMessage, []byte("y"))
}

// TestHandshakeWithoutHost: RFC 6455 section 4.2.1 requires a Host header
// in the opening handshake and RFC 9112 section 3.2 a 400 without one.
func TestHandshakeWithoutHost(t *testing.T) {
	h := startHub(t)
	h.pub(t, "test", "news")
	req := request("GET", "/ws/sub/test/news", upgradeHeaders()[1:]...)
	if resp := h.roundTrip(t, req); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("handshake without Host: %d, want 400", resp.StatusCode)
	}
}

func TestHandshakeStatuses(t *testing.T) {
	h := startHub(t)
	pubPath := "/ws/pub/" + h.key + "/test/news"
	plain := []string{"Host: hub.test"}
	noKey := []string{"Host: hub.test", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"}
	withKey := func(key string) []string {
		return []string{"Host: hub.test", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"}
	}
	withVersion := func(v ...string) []string {
		return append([]string{"Host: hub.test", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + wsKey}, v...)
	}
	cases := []struct {
		name, req string
		status    int
		header    string // a header the response must carry, "Name: value"
	}{
		{"plain GET to a subscriber", request("GET", "/ws/sub/test/news", plain...), 426, "Upgrade: websocket"},
		{"plain GET to a publisher", request("GET", pubPath, plain...), 426, "Upgrade: websocket"},
		{"Upgrade without Connection", request("GET", pubPath, "Host: h", "Upgrade: websocket", "Sec-WebSocket-Key: "+wsKey, "Sec-WebSocket-Version: 13"), 426, ""},
		{"Connection without Upgrade", request("GET", pubPath, "Host: h", "Connection: Upgrade", "Sec-WebSocket-Key: "+wsKey, "Sec-WebSocket-Version: 13"), 426, ""},
		{"upgrade to hc", request("GET", pubPath, "Host: h", "Upgrade: hc", "Connection: Upgrade", "Sec-WebSocket-Key: "+wsKey, "Sec-WebSocket-Version: 13"), 426, ""},
		{"POST", request("POST", pubPath, upgradeHeaders()...), 405, "Allow: GET"},
		{"PUT", request("PUT", "/ws/sub/test/news", upgradeHeaders()...), 405, "Allow: GET"},
		{"lower-case get", request("get", "/ws/sub/test/news", upgradeHeaders()...), 405, ""},
		{"HEAD", request("HEAD", "/ws/sub/test/news", upgradeHeaders()...), 405, ""},
		{"version 8", request("GET", pubPath, withVersion("Sec-WebSocket-Version: 8")...), 426, "Sec-WebSocket-Version: 13"},
		{"version 14", request("GET", "/ws/sub/test/news", withVersion("Sec-WebSocket-Version: 14")...), 426, "Sec-WebSocket-Version: 13"},
		{"no version", request("GET", pubPath, withVersion()...), 426, "Sec-WebSocket-Version: 13"},
		{"no key", request("GET", pubPath, noKey...), 400, ""},
		{"empty key", request("GET", pubPath, withKey("")...), 400, ""},
		{"key not base64", request("GET", pubPath, withKey("not base64 at all!!!!!!!")...), 400, ""},
		{"key of 15 bytes", request("GET", pubPath, withKey("AAAAAAAAAAAAAAAAAAAA")...), 400, ""},
		{"key of 17 bytes", request("GET", "/ws/sub/test/news", withKey("AAAAAAAAAAAAAAAAAAAAAAA=")...), 400, ""},
		{"header too large", request("GET", pubPath, upgradeHeaders("X-Pad: "+strings.Repeat("p", 9000))...), 431, ""},
		{"many headers", request("GET", pubPath, upgradeHeaders(strings.Repeat("X-Pad: 0123456789\r\n", 500)+"X-End: 1")...), 431, ""},
		{"endless head", "GET " + pubPath + " HTTP/1.1\r\nX-Pad: " + strings.Repeat("p", 10000), 431, ""},
		{"HTTP/1.0", "GET " + pubPath + " HTTP/1.0\r\n" + strings.Join(upgradeHeaders(), "\r\n") + "\r\n\r\n", 400, ""},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, ""},
		{"no target", "GET HTTP/1.1\r\n\r\n", 400, ""},
		{"header without colon", request("GET", pubPath, upgradeHeaders("NoColon")...), 400, ""},
		{"space before colon", request("GET", pubPath, upgradeHeaders("X-A : b")...), 400, ""},
		{"control byte in a header", request("GET", pubPath, upgradeHeaders("X-A: b\x01c")...), 400, ""},
	}
	for _, c := range cases {
		resp := h.roundTrip(t, c.req)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.status)
			continue
		}
		if c.header != "" {
			name, value, _ := strings.Cut(c.header, ": ")
			if got := resp.Header.Get(name); got != value {
				t.Errorf("%s: %s: %q, want %q", c.name, name, got, value)
			}
		}
	}
	nothingCreated(t, h, "test")

	// A head of exactly 8 KiB is served; one byte more is not.
	pad := 8<<10 - len(request("GET", pubPath, upgradeHeaders("X-Pad: ")...))
	over := request("GET", pubPath, upgradeHeaders("X-Pad: "+strings.Repeat("p", pad+1))...)
	if resp := h.roundTrip(t, over); len(over) != 8<<10+1 || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("head of %d bytes: %d, want 431", len(over), resp.StatusCode)
	}
	c := h.rawUpgrade(t, pubPath, "X-Pad: "+strings.Repeat("p", pad))
	c.send(t, masked(finBit|opClose, closePayload(1000, "")))
	c.expectClose(t, 1000)
}

// TestHandshakeInPieces sends an upgrade request a few bytes at a time.
func TestHandshakeInPieces(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	c := h.rawDial(t, 0)
	req := []byte(request("GET", "/ws/sub/test/news", upgradeHeaders()...))
	for len(req) > 0 {
		n := min(7, len(req))
		c.send(t, req[:n])
		req = req[n:]
	}
	c.upgraded(t)
	if err := p.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	c.expectFrame(t, finBit|opText, []byte("hi"))
}

// TestFramesRightAfterHandshake sends a publisher's first frames in the same
// write as its request: they are published once the key is accepted.
func TestFramesRightAfterHandshake(t *testing.T) {
	// A waiting subscriber, so the messages have somewhere to go.
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	s := h.sub(t, "test", "news")
	p := h.rawDial(t, 0)
	req := request("GET", "/ws/pub/"+h.key+"/test/news", upgradeHeaders()...)
	p.send(t, append([]byte(req), append(masked(finBit|opText, []byte("early")), masked(finBit|opBin, []byte{1, 2})...)...))
	p.upgraded(t)
	expect(t, s, websocket.TextMessage, []byte("early"))
	expect(t, s, websocket.BinaryMessage, []byte{1, 2})
}

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startHub(t, func(c *server.Config) { c.HandshakeTimeout = timeout })
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")

	start := time.Now()
	half := h.rawDial(t, 0)
	half.send(t, []byte("GET /ws/sub/test/news HTTP/1.1\r\nHost: hub.test\r\nUpgrade: webs"))
	silent := h.rawDial(t, 0)

	// A client trickling a byte every 20ms never finishes in time.
	trickle := h.rawDial(t, 0)
	trickled := make(chan struct{})
	defer func() { trickle.Close(); <-trickled }()
	go func() {
		defer close(trickled)
		req := []byte(request("GET", "/ws/sub/test/news", upgradeHeaders(strings.Repeat("X-Pad: 0123456789\r\n", 10)+"X-End: 1")...))
		for _, b := range req {
			if _, err := trickle.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	for name, c := range map[string]*rawClient{"half request": half, "silent": silent, "trickle": trickle} {
		c.expectEnd(t)
		if d := time.Since(start); d < timeout-50*time.Millisecond || d > timeout+2*time.Second {
			t.Errorf("%s: dropped after %v, want about %v", name, d, timeout)
		}
	}
	// Upgraded clients are past their handshake deadline and stay.
	if err := p.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.TextMessage, []byte("still here"))
}

// TestUpgradeHeaderVariants are requests that RFC 6455 and HTTP allow
// browsers and proxies to send.
func TestUpgradeHeaderVariants(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	variants := [][]string{
		{"Host: h", "Upgrade: WebSocket", "Connection: keep-alive, Upgrade", "Sec-WebSocket-Key: " + wsKey, "Sec-WebSocket-Version: 13"},
		{"host: h", "upgrade: websocket", "connection: upgrade", "sec-websocket-key: " + wsKey, "sec-websocket-version: 13"},
		{"Host: h", "Upgrade:websocket", "Connection:Upgrade", "Sec-WebSocket-Key:" + wsKey, "Sec-WebSocket-Version:13"},
		{"Host: h", "Upgrade: websocket ", "Connection:  Upgrade\t", "Sec-WebSocket-Key:  " + wsKey + " ", "Sec-WebSocket-Version: 13 "},
		{"Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + wsKey, "Sec-WebSocket-Version: 13",
			"Origin: https://example.com", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits", "Sec-WebSocket-Protocol: chat"},
	}
	for i, hdr := range variants {
		c := h.rawDial(t, 0)
		c.send(t, []byte(request("GET", "/ws/sub/test/news", hdr...)))
		resp, body := c.response(t)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("variant %d: %s %q, want 101", i, resp.Status, body)
			continue
		}
		want := "" // only the last offers an extension, permessage-deflate
		if i == len(variants)-1 {
			want = wantExtension
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != want {
			t.Errorf("variant %d: the hub agreed to extensions %q, want %q", i, ext, want)
		}
		msg := fmt.Sprint("variant ", i) // below --compress-min-size: plain
		publish(t, p, websocket.TextMessage, msg)
		c.expectFrame(t, finBit|opText, []byte(msg))
		c.Close()
	}
}

// TestBearerSchemeIsCaseInsensitive: RFC 9110 section 11.1 makes the
// authentication scheme a case-insensitive token.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	h := startHub(t)
	for i, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		hdr := http.Header{"Authorization": {scheme + " " + h.key}}
		c, resp, err := dialer.Dial(fmt.Sprintf("%s/ws/pub/test/t%d", h.url, i), hdr)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Errorf("Authorization: %s {key}: %v (status %d), want 101", scheme, err, status)
			continue
		}
		c.Close()
	}
}

// checkerFunc adapts a function to server.KeyChecker.
type checkerFunc func(ctx context.Context, key, domain string) error

func (f checkerFunc) Check(ctx context.Context, key, domain string) error { return f(ctx, key, domain) }

func TestKeyStoreUnavailable(t *testing.T) {
	h := startHub(t)
	if err := h.keys.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.refused(t, "/ws/pub/"+h.key+"/test/news", nil); got != http.StatusServiceUnavailable {
		t.Fatalf("key store closed: %d, want 503", got)
	}
	nothingCreated(t, h, "test")
}

// TestPendingKeyChecks: handshakes waiting on a slow key store are bounded;
// one over the bound gets 503.
func TestPendingKeyChecks(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	h := startHub(t, func(c *server.Config) {
		store := c.Keys
		c.MaxPendingKeyChecks = 1
		c.HandshakeTimeout = 2 * time.Second
		c.Keys = checkerFunc(func(ctx context.Context, key, domain string) error {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			return store.Check(ctx, key, domain)
		})
	})
	first := h.rawDial(t, 0)
	first.send(t, []byte(request("GET", "/ws/pub/"+h.key+"/test/news", upgradeHeaders()...)))
	<-started
	if got := h.refused(t, "/ws/pub/"+h.key+"/test/other", nil); got != http.StatusServiceUnavailable {
		t.Fatalf("second pending key check: %d, want 503", got)
	}
	// Subscribers do not wait on the key store; the topic is not started yet.
	if got := h.refused(t, "/ws/sub/test/news", nil); got != http.StatusNotFound {
		t.Fatalf("subscriber while its publisher's key is checked: %d, want 404", got)
	}
	close(release)
	first.upgraded(t)
	s := h.sub(t, "test", "news")
	first.send(t, masked(finBit|opText, []byte("checked")))
	expect(t, s, websocket.TextMessage, []byte("checked"))
}

// TestKeyRevokedClosesPublishers: the hub closes the live publishers of a
// revoked key with 4002; their subscribers stay.
func TestKeyRevokedClosesPublishers(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.GracePeriod = time.Minute })
	other, err := h.keys.Add(context.Background(), "test", "other")
	if err != nil {
		t.Fatal(err)
	}
	p1 := h.pub(t, "test", "one")
	p2 := h.dial(t, "/ws/pub/test/two", http.Header{"Authorization": {"Bearer " + h.key}})
	p3 := h.dial(t, "/ws/pub/"+other+"/test/three", nil)
	s := h.sub(t, "test", "one")
	if err := h.keys.Revoke(context.Background(), h.key); err != nil {
		t.Fatal(err)
	}
	if n := h.KeyRevoked(keys.Hash(h.key)); n != 2 {
		t.Fatalf("KeyRevoked closed %d publishers, want 2", n)
	}
	expectClosed(t, p1, 4002)
	expectClosed(t, p2, 4002)
	publish(t, p3, websocket.TextMessage, "unaffected")
	// The topic is in its grace period: a publisher with a valid key takes
	// it over.
	p4 := h.dial(t, "/ws/pub/"+other+"/test/one", nil)
	publish(t, p4, websocket.TextMessage, "new owner")
	expect(t, s, websocket.TextMessage, []byte("new owner"))
}
