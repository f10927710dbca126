package server_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/internal/testca"
	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/server"
)

// testCert is a self-signed ECDSA certificate for 127.0.0.1 and localhost.
type testCert = testca.Leaf

func newTestCert(t testing.TB, serial int64) testCert { return testca.SelfSigned(t, serial) }

// tlsHub is a hub serving wss:// with a key pair read from files.
type tlsHub struct {
	*hub
	kp                *loop.KeyPair
	certFile, keyFile string
	roots             *x509.CertPool // trusts every certificate made with trust
	dialer            websocket.Dialer
}

func startTLSHub(t testing.TB, cert testCert, opts ...func(*server.Config)) *tlsHub {
	t.Helper()
	dir := t.TempDir()
	h := &tlsHub{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), roots: x509.NewCertPool()}
	cert.Write(t, h.certFile, h.keyFile)
	h.trust(cert)
	kp, err := loop.LoadKeyPair(h.certFile, h.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	h.kp = kp
	h.hub = startHub(t, append([]func(*server.Config){func(c *server.Config) { c.TLS = kp }}, opts...)...)
	h.url = "wss://" + h.Addr()
	h.dialer = websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		TLSClientConfig:  &tls.Config{RootCAs: h.roots, ServerName: "127.0.0.1"},
	}
	return h
}

func (h *tlsHub) trust(c testCert) { h.roots.AddCert(c.Cert) }

// dial opens a wss:// WebSocket to path and returns it with the serial of
// the certificate the hub presented.
func (h *tlsHub) dial(t testing.TB, path string) (*websocket.Conn, *big.Int) {
	t.Helper()
	c, resp, err := h.dialer.Dial(h.url+path, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	state := c.UnderlyingConn().(*tls.Conn).ConnectionState()
	return c, state.PeerCertificates[0].SerialNumber
}

func (h *tlsHub) pub(t testing.TB, topic string) *websocket.Conn {
	c, _ := h.dial(t, "/ws/pub/"+h.key+"/test/"+topic)
	return c
}

func (h *tlsHub) sub(t testing.TB, topic string) *websocket.Conn {
	c, _ := h.dial(t, "/ws/sub/test/"+topic)
	return c
}

// tlsMessage is message i of a stream: its type, and a payload of its size
// that starts with i when there is room.
func tlsMessage(i int, sizes []int) (int, []byte) {
	size := sizes[i%len(sizes)]
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i + j)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(b, uint32(i))
	}
	typ := websocket.BinaryMessage
	if i%2 == 1 {
		typ = websocket.TextMessage
		for j := range b {
			b[j] = 'a' + byte(i+j)%26 // valid UTF-8
		}
	}
	return typ, b
}

// TestTLSPublishSubscribe: over wss://, messages of every size, 0 bytes and
// 1 MiB included, reach every subscriber whole, typed and in order.
func TestTLSPublishSubscribe(t *testing.T) {
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) { c.MaxBacklog = 64 << 20 })
	p := h.pub(t, "news")
	subs := []*websocket.Conn{h.sub(t, "news"), h.sub(t, "news")}
	// TLS 1.2 too, with AES-GCM and with ChaCha20-Poly1305.
	for _, suite := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256} {
		d := h.dialer
		d.TLSClientConfig = d.TLSClientConfig.Clone()
		d.TLSClientConfig.MaxVersion, d.TLSClientConfig.CipherSuites = tls.VersionTLS12, []uint16{suite}
		c, _, err := d.Dial(h.url+"/ws/sub/test/news", nil)
		if err != nil {
			t.Fatalf("TLS 1.2 with %s: %v", tls.CipherSuiteName(suite), err)
		}
		defer c.Close()
		if got := c.UnderlyingConn().(*tls.Conn).ConnectionState().CipherSuite; got != suite {
			t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(suite))
		}
		subs = append(subs, c)
	}
	sizes := []int{0, 1, 125, 126, 1000, 16 << 10, 16<<10 + 1, 65535, 65536, 200 << 10, 1 << 20, 3, 0, 17}
	const n = 20 * 14
	var wg sync.WaitGroup
	errs := make(chan error, len(subs))
	stop := make(chan struct{})
	defer close(stop)
	for si, s := range subs {
		// Pings while the stream flows: the hub decrypts and answers them
		// on the loop while the fan-out encrypts to the same connection.
		go func() {
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if s.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)) != nil {
						return
					}
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				s.SetReadDeadline(time.Now().Add(10 * time.Second))
				typ, data, err := s.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("subscriber %d, message %d: %v", si, i, err)
					return
				}
				wt, want := tlsMessage(i, sizes)
				if typ != wt || !bytes.Equal(data, want) {
					errs <- fmt.Errorf("subscriber %d, message %d: got type %d, %d bytes; want type %d, %d bytes", si, i, typ, len(data), wt, len(want))
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		typ, b := tlsMessage(i, sizes)
		if err := p.WriteMessage(typ, b); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Pings are answered over TLS too.
	pong := make(chan string, 1)
	p.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := p.WriteControl(websocket.PingMessage, []byte("tls?"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	go p.ReadMessage()
	select {
	case got := <-pong:
		if got != "tls?" {
			t.Fatalf("pong %q, want %q", got, "tls?")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

// TestTLSSlowConsumer: over TLS, a subscriber that does not read is cut off
// once its backlog (of ciphertext) passes MaxBacklog, while one that reads
// gets everything.
func TestTLSSlowConsumer(t *testing.T) {
	const (
		backlog = 64 << 10
		size    = 1024
		batch   = 16
		total   = 8 << 20 / size
	)
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) { c.MaxBacklog = backlog })
	p := h.pub(t, "news")
	healthy := h.sub(t, "news")

	raw := h.rawDial(t, 4096)
	tc := tls.Client(raw.Conn, h.dialer.TLSClientConfig)
	slow := &rawClient{Conn: tc, r: bufio.NewReader(tc)}
	slow.send(t, []byte(request("GET", "/ws/sub/test/news", upgradeHeaders()...)))
	slow.upgraded(t)

	checkSlowConsumer(t, p, healthy, slow, &h.Stats().SlowConsumers, total, batch, size)
}

// TestTLSRefusesPlaintext: a plain WebSocket or HTTP client, or one that
// sends garbage, on the TLS port is dropped cleanly (a plain request gets a
// plain 400), and a client that stalls in the TLS handshake is dropped at
// HandshakeTimeout; the hub goes on serving.
func TestTLSRefusesPlaintext(t *testing.T) {
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	p := h.pub(t, "news")

	_, resp, err := dialer.Dial("ws://"+h.Addr()+"/ws/sub/test/news", nil)
	if err == nil {
		t.Fatal("a ws:// client upgraded on the TLS port")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("ws:// client: %v, %v; want a 400", err, resp)
	}

	c := h.rawDial(t, 0)
	c.send(t, []byte(request("GET", "/healthz")))
	r, body := c.response(t)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Fatalf("plain HTTP: %s %q, want 400", r.Status, body)
	}
	c.expectEnd(t)

	// An oversized record: a TLS alert at most, then the end.
	c = h.rawDial(t, 0)
	c.send(t, bytes.Repeat([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, 20))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("bad record: %v after % x, want the connection to end", err, got)
	}
	if len(got) > 0 && got[0] != 0x15 {
		t.Fatalf("bad record: got % x, want an alert or nothing", got)
	}

	start := time.Now()
	c = h.rawDial(t, 0)
	c.send(t, []byte{0x16, 0x03, 0x01, 0x00}) // a ClientHello's first bytes, then nothing
	c.expectEnd(t)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a stalled TLS handshake lasted %v", d)
	}

	s := h.sub(t, "news")
	publish(t, p, websocket.TextMessage, "still serving")
	expect(t, s, websocket.TextMessage, []byte("still serving"))
}

// TestTLSServesHTTP: the plain HTTP paths are served over TLS too.
func TestTLSServesHTTP(t *testing.T) {
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) {
		c.HTTP = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: h.dialer.TLSClientConfig}}
	resp, err := client.Get("https://" + h.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET /healthz over TLS: %s %q", resp.Status, body)
	}
}

// TestTLSReload: a reload swaps the certificate for new connections while
// the open ones go on; a reload that fails keeps the certificate in use.
func TestTLSReload(t *testing.T) {
	a, b := newTestCert(t, 1001), newTestCert(t, 2002)
	h := startTLSHub(t, a)
	h.trust(b)
	p, serial := h.dial(t, "/ws/pub/"+h.key+"/test/news")
	if serial.Int64() != 1001 {
		t.Fatalf("serial %v, want 1001", serial)
	}
	old := h.sub(t, "news")

	b.Write(t, h.certFile, h.keyFile)
	if err := h.kp.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := h.kp.Leaf().SerialNumber.Int64(); got != 2002 {
		t.Fatalf("Leaf serial %d after the reload, want 2002", got)
	}
	publish(t, p, websocket.BinaryMessage, "after the reload")
	expect(t, old, websocket.BinaryMessage, []byte("after the reload"))
	s, serial := h.dial(t, "/ws/sub/test/news")
	if serial.Int64() != 2002 {
		t.Fatalf("new connection: serial %v, want 2002", serial)
	}
	publish(t, p, websocket.TextMessage, "to both")
	expect(t, old, websocket.TextMessage, []byte("to both"))
	expect(t, s, websocket.TextMessage, []byte("to both"))

	// A half-written pair: the reload fails and B stays.
	if err := os.WriteFile(h.keyFile, a.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.kp.Reload(); err == nil {
		t.Fatal("reload of a mismatched certificate and key: no error")
	}
	if err := os.WriteFile(h.certFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.kp.Reload(); err == nil {
		t.Fatal("reload of a garbage certificate: no error")
	}
	if _, serial := h.dial(t, "/ws/sub/test/news"); serial.Int64() != 2002 {
		t.Fatalf("after failed reloads: serial %v, want 2002", serial)
	}
	publish(t, p, websocket.TextMessage, "still")
	expect(t, old, websocket.TextMessage, []byte("still"))
}

// TestTLSNoGoroutinePerConnection: 2,000 TLS subscribers start no
// goroutines, and a fan-out to them all arrives.
func TestTLSNoGoroutinePerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,000 sockets")
	}
	const many = 2000
	// The subscribers read nothing, so they answer no ping: under the race
	// detector on a loaded machine the test outlives the default keepalive.
	h := startTLSHub(t, newTestCert(t, 1), func(c *server.Config) { c.PingInterval = -1 })
	p := h.pub(t, "news")
	var subs []*websocket.Conn
	connect := func(n int) {
		for len(subs) < n {
			c, _, err := h.dialer.Dial(h.url+"/ws/sub/test/news", nil)
			if err != nil {
				t.Fatalf("subscriber %d: %v", len(subs), err)
			}
			subs = append(subs, c)
		}
	}
	defer func() {
		for _, c := range subs {
			c.Close()
		}
	}()
	connect(10)
	base := runtime.NumGoroutine()
	flat := func(when string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for g := runtime.NumGoroutine(); g > base+10; g = runtime.NumGoroutine() {
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines %s, %d with 10 subscribers", g, when, base)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	connect(many)
	flat(fmt.Sprintf("with %d TLS subscribers", many))
	publish(t, p, websocket.TextMessage, "to all")
	for _, c := range subs {
		expect(t, c, websocket.TextMessage, []byte("to all"))
	}
	flat(fmt.Sprintf("after a fan-out to %d TLS subscribers", many))
}
