package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// logBuffer collects a hub's log lines, for tests that read them.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// behindProxy is a hub that trusts 127.0.0.1 as its proxy, allows two
// connections per address, lets subscribers wait for their publisher, and
// logs to the buffer it returns.
func behindProxy(t *testing.T, proxyProtocol bool) (*hub, *logBuffer) {
	logs := new(logBuffer)
	h := startHub(t, func(c *server.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.ProxyProtocol = proxyProtocol
		c.MaxConnectionsPerAddr = 2
		c.SubscribeWaits = true
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	return h, logs
}

// dialFrom connects to the hub from local address ip (127.0.0.0/8 is all
// this machine's).
func (h *hub) dialFrom(t testing.TB, ip string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{Conn: nc, r: bufio.NewReader(nc)}
}

// head reads the head of an HTTP response, leaving its body (an
// EventSource stream's, which does not end) unread.
func (c *rawClient) head(t testing.TB) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return resp
}

// status sends bs on c and returns the status of the answer; a refusal's
// body is returned too, and the connection must end after it.
func (c *rawClient) status(t testing.TB, bs ...[]byte) (int, string) {
	t.Helper()
	c.send(t, bs...)
	resp := c.head(t)
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.ContentLength < 0 {
		return resp.StatusCode, "" // upgraded, or an EventSource stream
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func subRequest(extra ...string) []byte {
	return []byte(request("GET", "/ws/sub/test/news", upgradeHeaders(extra...)...))
}

// proxyV1 is a PROXY protocol v1 header for a client at src.
func proxyV1(src string) []byte {
	return []byte("PROXY TCP4 " + src + " 127.0.0.1 40000 8080\r\n")
}

// proxyV2 is a PROXY protocol v2 header for a TCP client at src (IPv4 or
// IPv6), with a TLV after the addresses; src "" makes a LOCAL header.
func proxyV2(src string) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if src == "" {
		return append(b, 0x20, 0x00, 0, 0)
	}
	a := netip.MustParseAddr(src)
	var block []byte
	if a.Is4() {
		b = append(b, 0x21, 0x11)
		s, d := a.As4(), [4]byte{127, 0, 0, 1}
		block = append(s[:], d[:]...)
	} else {
		b = append(b, 0x21, 0x21)
		s, d := a.As16(), netip.IPv6Loopback().As16()
		block = append(s[:], d[:]...)
	}
	block = binary.BigEndian.AppendUint16(block, 40000)
	block = binary.BigEndian.AppendUint16(block, 8080)
	block = append(block, 0x05, 0, 3, 'a', 'b', 'c') // PP2_TYPE_UNIQUE_ID: skipped
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

// TestForwardedForFromTrustedProxy: behind a trusted proxy, the
// per-address limit counts the client X-Forwarded-For names, and the log
// names it; the proxy's own connections are not limited.
func TestForwardedForFromTrustedProxy(t *testing.T) {
	h, logs := behindProxy(t, false)
	for i := 0; i < 2; i++ {
		c := h.dialFrom(t, "127.0.0.1")
		c.send(t, subRequest("X-Forwarded-For: 192.0.2.7"))
		c.upgraded(t)
	}
	// The third from 192.0.2.7, also when another (trusted) proxy is on
	// the way, is refused; 192.0.2.8 through the same proxy is not.
	if got, body := h.dialFrom(t, "127.0.0.1").status(t, subRequest("X-Forwarded-For: 192.0.2.7, 127.0.0.1")); got != http.StatusServiceUnavailable {
		t.Fatalf("third connection from 192.0.2.7: %d %q, want 503", got, body)
	}
	if !strings.Contains(logs.String(), `remote="192.0.2.7 via 127.0.0.1:`) {
		t.Errorf("the refusal's log line does not name the client:\n%s", logs)
	}
	c := h.dialFrom(t, "127.0.0.1")
	c.send(t, subRequest("X-Forwarded-For: 198.51.100.1, 192.0.2.8"))
	c.upgraded(t)
	// The proxy's own connections (no X-Forwarded-For) are not limited.
	for i := 0; i < 3; i++ {
		c := h.dialFrom(t, "127.0.0.1")
		c.send(t, subRequest())
		c.upgraded(t)
	}
	// A list that is not addresses where the client should be: 400.
	if got, body := h.dialFrom(t, "127.0.0.1").status(t, subRequest("X-Forwarded-For: 192.0.2.9, unknown")); got != http.StatusBadRequest || !strings.Contains(body, "X-Forwarded-For") {
		t.Fatalf("malformed X-Forwarded-For: %d %q, want 400 naming it", got, body)
	}
	if got := h.Stats().Refused.Load(); got != 2 {
		t.Errorf("refusals counted: %d, want 2", got)
	}
}

// TestUntrustedPeerCannotSpoof: a peer that is not a trusted proxy is
// counted and logged by its own address, whatever X-Forwarded-For says,
// and a PROXY header from it is a malformed request.
func TestUntrustedPeerCannotSpoof(t *testing.T) {
	for _, pp := range []bool{false, true} {
		h, logs := behindProxy(t, pp)
		for _, xff := range []string{"192.0.2.1", "192.0.2.2"} {
			c := h.dialFrom(t, "127.0.0.2")
			c.send(t, subRequest("X-Forwarded-For: "+xff))
			c.upgraded(t)
		}
		if got, _ := h.dialFrom(t, "127.0.0.2").status(t, subRequest("X-Forwarded-For: 192.0.2.3")); got != http.StatusServiceUnavailable {
			t.Fatalf("proxy protocol %v: third connection from 127.0.0.2: %d, want 503", pp, got)
		}
		if l := logs.String(); !strings.Contains(l, "remote=127.0.0.2:") || strings.Contains(l, "192.0.2.3") {
			t.Errorf("proxy protocol %v: the refusal's log line does not name the peer:\n%s", pp, l)
		}
		for _, hdr := range [][]byte{proxyV1("192.0.2.4"), proxyV2("192.0.2.4")} {
			if got, body := h.dialFrom(t, "127.0.0.3").status(t, hdr, subRequest()); got != http.StatusBadRequest {
				t.Fatalf("proxy protocol %v: PROXY header from an untrusted peer: %d %q, want 400", pp, got, body)
			}
		}
	}
}

// TestProxyProtocol: with --proxy-protocol, a trusted proxy's connections
// start with a PROXY header (v1 or v2, in any pieces), whose client the
// limits count; LOCAL is the proxy's own; anything else is refused, and the
// hub keeps serving.
func TestProxyProtocol(t *testing.T) {
	h, logs := behindProxy(t, true)
	for _, hdr := range [][]byte{proxyV1("192.0.2.7"), proxyV2("192.0.2.7")} {
		c := h.dialFrom(t, "127.0.0.1")
		c.send(t, hdr, subRequest("X-Forwarded-For: 198.51.100.9")) // not read with the PROXY protocol
		c.upgraded(t)
	}
	if got, _ := h.dialFrom(t, "127.0.0.1").status(t, proxyV2("192.0.2.7"), subRequest()); got != http.StatusServiceUnavailable {
		t.Fatalf("third connection from 192.0.2.7: %d, want 503", got)
	}
	if !strings.Contains(logs.String(), `remote="192.0.2.7:40000 via 127.0.0.1:`) {
		t.Errorf("the refusal's log line does not name the client:\n%s", logs)
	}
	// Byte by byte, IPv6, and another client through the same proxy.
	c := h.dialFrom(t, "127.0.0.1")
	for _, b := range append(proxyV2("2001:db8::8"), subRequest()...) {
		c.send(t, []byte{b})
	}
	c.upgraded(t)
	c = h.dialFrom(t, "127.0.0.1")
	c.send(t, proxyV1("192.0.2.8"))
	time.Sleep(10 * time.Millisecond) // the header alone first
	c.send(t, subRequest())
	c.upgraded(t)
	// LOCAL: the proxy's own, not limited.
	for i := 0; i < 3; i++ {
		c := h.dialFrom(t, "127.0.0.1")
		c.send(t, proxyV2(""), subRequest())
		c.upgraded(t)
	}
	for name, in := range map[string][]byte{
		"missing":   subRequest(),
		"malformed": []byte("PROXY TCP4 192.0.2.7 127.0.0.1 99999 1\r\n"),
		"TCP6 addr": []byte("PROXY TCP4 2001:db8::1 127.0.0.1 1 1\r\n"),
		"too large": append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"), make([]byte, 64)...),
	} {
		got, body := h.dialFrom(t, "127.0.0.1").status(t, in)
		if got != http.StatusBadRequest || !strings.Contains(body, "PROXY protocol header") {
			t.Errorf("%s header: %d %q, want 400 naming the PROXY header", name, got, body)
		}
	}
	// Still serving: a message reaches a subscriber through the proxy.
	p := h.dialFrom(t, "127.0.0.2") // not a proxy: no header
	p.send(t, []byte(request("GET", "/ws/pub/"+h.key+"/test/after", upgradeHeaders()...)))
	p.upgraded(t)
	s := h.dialFrom(t, "127.0.0.1")
	s.send(t, proxyV1("192.0.2.20"), []byte(request("GET", "/ws/sub/test/after", upgradeHeaders()...)))
	s.upgraded(t)
	p.send(t, masked(finBit|opText, []byte("still here")))
	s.expectFrame(t, finBit|opText, []byte("still here"))
}

// TestProxiedSSEAndHTTPPublish: EventSource streams and HTTP publishes
// through a trusted proxy are counted for their clients too, a keep-alive
// connection for the client of its latest request.
func TestProxiedSSEAndHTTPPublish(t *testing.T) {
	h, _ := behindProxy(t, false)
	sse := func(xff string) int {
		c := h.dialFrom(t, "127.0.0.1")
		got, _ := c.status(t, []byte(request("GET", "/sse/sub/test/news", "Host: hub.test", "Accept: text/event-stream", "X-Forwarded-For: "+xff)))
		return got
	}
	for i := 0; i < 2; i++ {
		if got := sse("192.0.2.7"); got != http.StatusOK {
			t.Fatalf("EventSource stream %d from 192.0.2.7: %d, want 200", i+1, got)
		}
	}
	if got := sse("192.0.2.7"); got != http.StatusServiceUnavailable {
		t.Fatalf("third EventSource stream from 192.0.2.7: %d, want 503", got)
	}
	post := func(xff string) []byte {
		return []byte(request("POST", "/api/pub/test/news", "Host: hub.test", "Authorization: Bearer "+h.key,
			"Content-Type: text/plain", "Content-Length: 2", "X-Forwarded-For: "+xff) + "hi")
	}
	if got, body := h.dialFrom(t, "127.0.0.1").status(t, post("192.0.2.7")); got != http.StatusServiceUnavailable {
		t.Fatalf("HTTP publish from 192.0.2.7: %d %q, want 503", got, body)
	}
	// One keep-alive connection, first for 192.0.2.8 (its only one, so
	// a second from it is admitted), then for 192.0.2.7, which is full.
	c := h.dialFrom(t, "127.0.0.1")
	if got, body := c.status(t, post("192.0.2.8")); got != http.StatusOK {
		t.Fatalf("HTTP publish from 192.0.2.8: %d %q, want 200", got, body)
	}
	if got, _ := c.status(t, post("192.0.2.8")); got != http.StatusOK {
		t.Fatalf("second HTTP publish from 192.0.2.8 on its connection: %d, want 200", got)
	}
	if got, _ := h.dialFrom(t, "127.0.0.1").status(t, post("192.0.2.8")); got != http.StatusOK {
		t.Fatalf("HTTP publish from 192.0.2.8 on a second connection: %d, want 200", got)
	}
	if got, _ := c.status(t, post("192.0.2.7")); got != http.StatusServiceUnavailable {
		t.Fatalf("HTTP publish from 192.0.2.7 on 192.0.2.8's connection: %d, want 503", got)
	}
}

func TestProxyConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  server.Config
		want string
	}{
		"proxy protocol without trusted proxies": {server.Config{ProxyProtocol: true}, "--trusted-proxies"},
	} {
		cfg := tc.cfg
		store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listen, cfg.Keys = "127.0.0.1:0", store
		if s, err := server.Start(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			if s != nil {
				s.Shutdown(t.Context())
			}
			t.Errorf("%s: %v, want an error naming %s", name, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want, err string }{
		{"10.0.0.0/8, 192.0.2.7,::1 , 2001:db8::/32", "[10.0.0.0/8 192.0.2.7/32 ::1/128 2001:db8::/32]", ""},
		{"10.1.2.3/8", "[10.0.0.0/8]", ""},
		{"::ffff:10.0.0.0/104", "[10.0.0.0/8]", ""},
		{"", "[]", ""},
		{"10.0.0.0/33", "", "bad trusted proxy"},
		{"proxy.example", "", "bad trusted proxy"},
		{"fe80::1%eth0", "", "bad trusted proxy"},
	} {
		got, err := server.ParseTrustedProxies(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || fmtPrefixes(got) != tc.want {
			t.Errorf("%q: %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

// BenchmarkProxiedHandshake compares, in one run, subscriber handshakes
// over 127.0.0.1 from a client (direct) and from a trusted proxy that names
// the client in X-Forwarded-For or a PROXY header, with the per-address
// limits on: what learning the client's address adds to a handshake.
func BenchmarkProxiedHandshake(b *testing.B) {
	for _, bc := range []struct {
		name    string
		trusted string // "" for none
		pp      bool
		prefix  func(i int64) []byte
		header  func(i int64) string
	}{
		{"direct", "", false, nil, nil},
		{"x-forwarded-for", "127.0.0.1/32", false, nil, func(i int64) string {
			return fmt.Sprintf("X-Forwarded-For: 198.51.100.1, 192.0.%d.%d", i>>8&0xff, i&0xff)
		}},
		{"proxy-v1", "127.0.0.1/32", true, func(i int64) []byte { return proxyV1(fmt.Sprintf("192.0.%d.%d", i>>8&0xff, i&0xff)) }, nil},
		{"proxy-v2", "127.0.0.1/32", true, func(i int64) []byte { return proxyV2(fmt.Sprintf("192.0.%d.%d", i>>8&0xff, i&0xff)) }, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := startHub(b, func(c *server.Config) {
				if bc.trusted != "" {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(bc.trusted)}
				}
				c.ProxyProtocol = bc.pp
				c.MaxConnectionsPerAddr = 1 << 20
				c.SubscribeWaits = true
			})
			var n atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					var hdrs []string
					if bc.header != nil {
						hdrs = append(hdrs, bc.header(i))
					}
					msg := []byte(request("GET", "/ws/sub/test/bench", upgradeHeaders(hdrs...)...))
					if bc.prefix != nil {
						msg = append(bc.prefix(i), msg...)
					}
					nc, err := net.Dial("tcp", h.Addr())
					if err != nil {
						b.Fatal(err)
					}
					nc.Write(msg)
					resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
					nc.Close()
					if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
						b.Fatalf("handshake: %v %v", resp, err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

// prefaced is a connection that sends pre in the clear before the TLS
// client's bytes: with its first write (the ClientHello), in one write
// of the two, or, with byByte, each byte of pre in a write of its own
// first, so that the hub reads the header in pieces.
type prefaced struct {
	net.Conn
	pre []byte
}

func (c *prefaced) Write(b []byte) (int, error) {
	if c.pre == nil {
		return c.Conn.Write(b)
	}
	msg := append(c.pre, b...)
	c.pre = nil
	if _, err := c.Conn.Write(msg); err != nil {
		return 0, err
	}
	return len(b), nil
}

// dialerVia is a wss:// dialer for h whose connections leave from ip and
// open with pre in the clear (see prefaced).
func (h *tlsHub) dialerVia(ip string, pre []byte, byByte bool) *websocket.Dialer {
	d := h.dialer
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		nc, err := nd.DialContext(ctx, network, addr)
		if err != nil || !byByte {
			return &prefaced{Conn: nc, pre: pre}, err
		}
		for _, b := range pre {
			if _, err := nc.Write([]byte{b}); err != nil {
				nc.Close()
				return nil, err
			}
			time.Sleep(time.Millisecond) // a read of its own, most likely
		}
		return nc, nil
	}
	return &d
}

// refusedCount is the hub's count of refusals for reason.
func refusedCount(t testing.TB, s *server.Server, reason string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	v, _ := parseMetrics(t, rec.Body.String()).find("wspubsub_handshakes_refused_total", "reason", reason)
	return v
}

// TestProxyProtocolTLS: under --tls-cert, a trusted proxy that passes TLS
// through opens each connection with a PROXY header (v1 or v2, whole or in
// pieces) in the clear before the TLS handshake, whose client the limits
// count and the log names; LOCAL is the proxy's own. A trusted peer
// without a good header is closed without a word (no plain-text answer
// means anything on TLS), counted as bad_proxy_header and logged, and one
// whose header stops halfway at the handshake timeout; a PROXY
// header from any other peer fails its TLS handshake as any other garbage.
// The hub keeps serving.
func TestProxyProtocolTLS(t *testing.T) {
	logs := new(logBuffer)
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.ProxyProtocol = true
		c.MaxConnectionsPerAddr = 2
		c.SubscribeWaits = true
		c.HandshakeTimeout = time.Second
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	dialTo := func(d *websocket.Dialer, topic string) (*websocket.Conn, int, error) {
		c, resp, err := d.Dial(h.url+"/ws/sub/test/"+topic, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode, err
			}
			return nil, 0, err
		}
		t.Cleanup(func() { c.Close() })
		return c, http.StatusSwitchingProtocols, nil
	}
	dial := func(d *websocket.Dialer) (*websocket.Conn, int, error) { return dialTo(d, "news") }
	for _, hdr := range [][]byte{proxyV1("192.0.2.7"), proxyV2("192.0.2.7")} {
		if _, got, err := dial(h.dialerVia("127.0.0.1", hdr, false)); got != http.StatusSwitchingProtocols {
			t.Fatalf("%q from 192.0.2.7: %d %v, want 101", hdr[:5], got, err)
		}
	}
	if _, got, err := dial(h.dialerVia("127.0.0.1", proxyV2("192.0.2.7"), false)); got != http.StatusServiceUnavailable {
		t.Fatalf("third connection from 192.0.2.7: %d %v, want 503", got, err)
	}
	if !strings.Contains(logs.String(), `remote="192.0.2.7:40000 via 127.0.0.1:`) {
		t.Errorf("the refusal's log line does not name the client:\n%s", logs)
	}
	// Byte by byte, IPv6 and IPv4, and a LOCAL header (not limited) three
	// times through the same proxy.
	for _, hdr := range [][]byte{proxyV2("2001:db8::8"), proxyV1("192.0.2.8"), proxyV2(""), proxyV2(""), proxyV2("")} {
		if _, got, err := dial(h.dialerVia("127.0.0.1", hdr, true)); got != http.StatusSwitchingProtocols {
			t.Fatalf("%q byte by byte: %d %v, want 101", hdr, got, err)
		}
	}
	if got := refusedCount(t, h.Server, "bad_proxy_header"); got != 0 {
		t.Fatalf("bad_proxy_header refusals: %v, want 0", got)
	}

	// A trusted peer that starts TLS at once, or sends a bad header: the
	// connection ends with nothing sent back.
	if _, got, err := dial(h.dialerVia("127.0.0.1", nil, false)); err == nil || got != 0 {
		t.Fatalf("a TLS client from the trusted proxy without a header: %d %v, want the handshake to fail", got, err)
	}
	for name, in := range map[string][]byte{
		"a ClientHello": {0x16, 0x03, 0x01, 0x00, 0xc8, 0x01},
		"malformed":     []byte("PROXY TCP4 192.0.2.7 127.0.0.1 99999 1\r\n"),
		"too large":     append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"), make([]byte, 64)...),
	} {
		t.Run(name, func(t *testing.T) {
			c := h.dialFrom(t, "127.0.0.1")
			c.send(t, in)
			c.expectEnd(t)
		})
	}
	if got := refusedCount(t, h.Server, "bad_proxy_header"); got != 4 {
		t.Errorf("bad_proxy_header refusals: %v, want 4", got)
	}
	// A header that stops halfway holds nothing past the handshake timeout.
	c := h.dialFrom(t, "127.0.0.1")
	c.send(t, proxyV2("192.0.2.7")[:20])
	c.expectEnd(t)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		// OnClose, which counts it, may come after the client saw the end.
		got := refusedCount(t, h.Server, "handshake_timeout")
		if got == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake_timeout refusals: %v, want 1", got)
		}
	}
	for _, want := range []string{
		`reason="missing PROXY protocol header: the hub runs with --proxy-protocol and this peer is a trusted proxy" remote=127.0.0.1:`,
		`reason="malformed PROXY protocol header"`,
		`reason="PROXY protocol header larger than`,
		`answer="none: the connection is closed before TLS"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log has no %s:\n%s", want, logs)
		}
	}

	// Another peer is its own client: its TLS comes first, and a PROXY
	// header in front of it is a failed TLS handshake, as any garbage.
	for _, hdr := range [][]byte{proxyV1("192.0.2.9"), proxyV2("192.0.2.9")} {
		if _, got, err := dial(h.dialerVia("127.0.0.3", hdr, false)); err == nil || got != 0 {
			t.Fatalf("%q from an untrusted peer: %d %v, want the TLS handshake to fail", hdr[:5], got, err)
		}
	}
	if got := refusedCount(t, h.Server, "bad_proxy_header"); got != 4 {
		t.Errorf("bad_proxy_header refusals after untrusted peers: %v, want still 4", got)
	}

	// Still serving: a direct publisher reaches a subscriber through the
	// proxy.
	p, _, err := h.dialerVia("127.0.0.2", nil, false).Dial(h.url+"/ws/pub/"+h.key+"/test/after", nil)
	if err != nil {
		t.Fatalf("publisher from 127.0.0.2: %v", err)
	}
	defer p.Close()
	sub, got, err := dialTo(h.dialerVia("127.0.0.1", proxyV1("192.0.2.20"), false), "after")
	if got != http.StatusSwitchingProtocols {
		t.Fatalf("subscriber after the refusals: %d %v", got, err)
	}
	publish(t, p, websocket.TextMessage, "still here")
	expect(t, sub, websocket.TextMessage, []byte("still here"))
}

// BenchmarkProxiedTLSHandshake compares, in one run, subscriber handshakes
// over TLS (a full TLS handshake each, no resumption) from a client
// (direct) and from a proxy that passes TLS through after a PROXY header,
// with the per-address limits on: what reading the header before TLS adds.
func BenchmarkProxiedTLSHandshake(b *testing.B) {
	cert := newTestCert(b, 1)
	for _, bc := range []struct {
		name   string
		prefix func(i int64) []byte
	}{
		{"tls-direct", nil},
		{"tls-proxy-v1", func(i int64) []byte { return proxyV1(fmt.Sprintf("192.0.%d.%d", i>>8&0xff, i&0xff)) }},
		{"tls-proxy-v2", func(i int64) []byte { return proxyV2(fmt.Sprintf("192.0.%d.%d", i>>8&0xff, i&0xff)) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := startTLSHub(b, cert, func(c *server.Config) {
				if bc.prefix != nil {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
					c.ProxyProtocol = true
				}
				c.MaxConnectionsPerAddr = 1 << 20
				c.SubscribeWaits = true
			})
			msg := []byte(request("GET", "/ws/sub/test/bench", upgradeHeaders()...))
			var n atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					nc, err := net.Dial("tcp", h.Addr())
					if err != nil {
						b.Fatal(err)
					}
					var conn net.Conn = nc
					if bc.prefix != nil {
						conn = &prefaced{Conn: nc, pre: bc.prefix(i)}
					}
					tc := tls.Client(conn, h.dialer.TLSClientConfig)
					tc.Write(msg)
					resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
					nc.Close()
					if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
						b.Fatalf("handshake: %v %v", resp, err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
