package loop_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/internal/testca"
	"github.com/wspubsub/wspubsub/loop"
)

// testCert is a self-signed ECDSA certificate for 127.0.0.1, in PEM files.
type testCert struct {
	cert              *x509.Certificate
	certFile, keyFile string
}

// writeCert makes a certificate with the given serial and writes it and its
// key to cert.pem and key.pem in dir.
func writeCert(t testing.TB, dir string, serial int64) testCert {
	t.Helper()
	l := testca.SelfSigned(t, serial)
	c := testCert{cert: l.Cert, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	l.Write(t, c.certFile, c.keyFile)
	return c
}

// tlsEngine is an engine serving TLS with a key pair read from files, and
// the pool a client trusts it with.
type tlsEngine struct {
	*loop.Engine
	kp    *loop.KeyPair
	dir   string
	roots *x509.CertPool
}

func startTLS(t testing.TB, cfg loop.Config, h loop.Handler) *tlsEngine {
	t.Helper()
	dir := t.TempDir()
	cert := writeCert(t, dir, 1)
	kp, err := loop.LoadKeyPair(cert.certFile, cert.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Leaf().SerialNumber.Int64() != 1 {
		t.Fatalf("Leaf serial %v, want 1", kp.Leaf().SerialNumber)
	}
	cfg.TLS = kp
	te := &tlsEngine{Engine: start(t, cfg, h), kp: kp, dir: dir, roots: x509.NewCertPool()}
	te.roots.AddCert(cert.cert)
	return te
}

// dialTLS completes a TLS handshake with te and returns the connection.
func (te *tlsEngine) dialTLS(t testing.TB) *tls.Conn {
	t.Helper()
	nc := dial(t, te.Engine)
	return te.handshake(t, nc)
}

func (te *tlsEngine) handshake(t testing.TB, nc net.Conn) *tls.Conn {
	t.Helper()
	tc := tls.Client(nc, &tls.Config{RootCAs: te.roots, ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(waitFor))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	return tc
}

// echo is a recorder whose connections send back what they read.
func echo() *recorder {
	r := newRecorder()
	r.onData = func(c *loop.Conn, data []byte) {
		if err := c.Send(data); err != nil {
			r.violate("echo: %v", err)
		}
	}
	return r
}

func TestTLSData(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			r := echo()
			te := startTLS(t, loop.Config{ReadBufferSize: 4 << 10, MaxBacklog: 64 << 20}, r)
			nc := dial(t, te.Engine)
			tc := tls.Client(nc, &tls.Config{RootCAs: te.roots, ServerName: "127.0.0.1", MinVersion: version, MaxVersion: version})
			c := r.next(t)
			// Larger than the read buffer and than a record, so decrypted
			// input spans several OnData calls and echoes several records.
			const n, size = 300, 1000
			msgs := numbered(n, size)
			go func() {
				for _, m := range msgs {
					if _, err := tc.Write(m); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			got := make([]byte, n*size)
			tc.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := io.ReadFull(tc, got); err != nil {
				t.Fatal(err)
			}
			checkNumbered(t, got, n, size)
			if v := tc.ConnectionState().Version; v != version {
				t.Errorf("version %x, want %x", v, version)
			}
			// The backlog counts ciphertext: more than the plaintext sent,
			// by at most a record's overhead per 16 KiB sent.
			waitUntil(t, "backlog drained", func() bool { return c.Backlog() == 0 })
			queued, written := c.Counts()
			if queued != written || queued <= n*size {
				t.Errorf("Counts = %d queued, %d written; want equal and above the %d bytes of plaintext", queued, written, n*size)
			}
			tc.Close() // close_notify: the hub closes too
			waitClosed(t, c)
			if got := logOf(c).data.Len(); got != n*size {
				t.Errorf("OnData got %d bytes of plaintext, want %d", got, n*size)
			}
			r.check(t)
		})
	}
}

// TestTLSBacklogBound: under TLS the bound applies to ciphertext, and a Send
// that would pass it is refused whole.
func TestTLSBacklogBound(t *testing.T) {
	const max, size = 256 << 10, 10 << 10
	r := newRecorder()
	te := startTLS(t, loop.Config{MaxBacklog: max}, r)
	tc := te.dialTLS(t) // never reads
	c := r.next(t)
	// The client is done with the handshake before the hub is: wait for
	// the hub to decrypt a byte.
	if _, err := tc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "handshake done", func() bool {
		l := logOf(c)
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.data.Len() > 0
	})
	sends := 0
	for ; ; sends++ {
		if sends > 10000 {
			t.Fatal("Send never refused")
		}
		err := c.Send(make([]byte, size))
		if errors.Is(err, loop.ErrBacklogFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if b := c.Backlog(); b > max {
		t.Errorf("backlog %d past the bound %d", b, max)
	}
	if b := c.Backlog(); b+size <= max-29 {
		t.Errorf("refused with a backlog of %d and a bound of %d", b, max)
	}
	r.check(t)
}

// TestTLSSendBeforeHandshake: nothing can be sent before the handshake;
// the connection is dropped.
func TestTLSSendBeforeHandshake(t *testing.T) {
	r := newRecorder()
	r.onOpen = func(c *loop.Conn) {
		if err := c.Send([]byte("too early")); err == nil {
			r.violate("Send before the handshake succeeded")
		}
	}
	te := startTLS(t, loop.Config{}, r)
	nc := dial(t, te.Engine)
	c := r.next(t)
	waitClosed(t, c)
	if b := readEOF(t, nc); len(b) != 0 {
		t.Errorf("the peer read %q", b)
	}
	r.check(t)
}

// TestTLSReload: after Reload, new handshakes present the new certificate;
// a connection open before keeps working; a bad file leaves the pair in
// use.
func TestTLSReload(t *testing.T) {
	r := echo()
	te := startTLS(t, loop.Config{}, r)
	old := te.dialTLS(t)
	if s := old.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	second := writeCert(t, te.dir, 2)
	te.roots.AddCert(second.cert)
	if err := te.kp.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := te.kp.Leaf().SerialNumber.Int64(); s != 2 {
		t.Errorf("Leaf serial %d after Reload, want 2", s)
	}
	tc := te.dialTLS(t)
	if s := tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 2 {
		t.Errorf("a new connection got serial %d, want 2", s)
	}
	for _, c := range []*tls.Conn{old, tc} {
		roundTrip(t, c, "still here")
	}

	// A half-written key: Reload fails and says which files.
	if err := os.WriteFile(second.keyFile, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := te.kp.Reload()
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(second.keyFile)) {
		t.Fatalf("Reload of a bad key = %v, want an error naming %s", err, second.keyFile)
	}
	tc = te.dialTLS(t)
	if s := tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 2 {
		t.Errorf("after a failed Reload a connection got serial %d, want 2", s)
	}
	roundTrip(t, tc, "and here")
	r.check(t)
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
}

func TestLoadKeyPairErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := loop.LoadKeyPair(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key")); err == nil {
		t.Error("LoadKeyPair of missing files succeeded")
	}
	a := writeCert(t, dir, 1)
	other := t.TempDir()
	b := writeCert(t, other, 2)
	if _, err := loop.LoadKeyPair(a.certFile, b.keyFile); err == nil {
		t.Error("LoadKeyPair of a certificate with another's key succeeded")
	}
}

// TestTLSPlainHTTP: a plain HTTP request on a TLS port gets net/http's 400,
// in the clear, and the connection ends; the engine serves TLS after it.
func TestTLSPlainHTTP(t *testing.T) {
	r := echo()
	te := startTLS(t, loop.Config{}, r)
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "OPTIONS"} {
		nc := dial(t, te.Engine)
		c := r.next(t)
		fmt.Fprintf(nc, "%s / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method)
		nc.SetReadDeadline(time.Now().Add(waitFor))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("HTTP request to an HTTPS server")) {
			t.Errorf("%s: %d %q, want 400 saying HTTPS", method, resp.StatusCode, body)
		}
		waitClosed(t, c)
	}
	// Garbage that is not HTTP gets no 400, only the end.
	nc := dial(t, te.Engine)
	c := r.next(t)
	nc.Write([]byte("\x00\x01\x02\x03\x04\x05garbage"))
	if b := readEOF(t, nc); bytes.Contains(b, []byte("HTTP")) {
		t.Errorf("garbage got %q", b)
	}
	waitClosed(t, c)
	roundTrip(t, te.dialTLS(t), "TLS still served")
	r.check(t)
}

// prefacer reads a preface, the line want, fed in any pieces; a connection
// that opens with anything else is closed.
type prefacer struct {
	want  string
	calls atomic.Int32

	mu   sync.Mutex
	read map[*loop.Conn][]byte
	done map[*loop.Conn]bool
}

func (p *prefacer) OnPreface(c *loop.Conn, data []byte) ([]byte, bool) {
	p.calls.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.read == nil {
		p.read, p.done = map[*loop.Conn][]byte{}, map[*loop.Conn]bool{}
	}
	if p.done[c] {
		panic("OnPreface after the preface was done")
	}
	have := append(p.read[c], data...)
	p.read[c] = have
	n := min(len(have), len(p.want))
	if string(have[:n]) != p.want[:n] {
		c.Close()
		return nil, false
	}
	if n < len(p.want) {
		return nil, false
	}
	p.done[c] = true
	return have[len(p.want):], true
}

// TestTLSPreface: a connection on which OnOpen called ExpectPreface gives
// its first bytes, in the clear, to the Prefacer, however they are split,
// and the bytes after the preface (in the same read or not) to TLS.
func TestTLSPreface(t *testing.T) {
	const preface = "PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n"
	p := &prefacer{want: preface}
	r := echo()
	r.onOpen = func(c *loop.Conn) {
		if !c.ExpectPreface(p) {
			r.violate("ExpectPreface refused on a TLS connection")
		}
	}
	te := startTLS(t, loop.Config{}, r)

	// In pieces, then the handshake.
	nc := dial(t, te.Engine)
	c := r.next(t)
	for _, piece := range []string{preface[:3], preface[3:20], preface[20:]} {
		if _, err := nc.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // separate reads, most of the time
	}
	roundTrip(t, te.handshake(t, nc), "after a split preface")
	if got := logOf(c).data.String(); got != "after a split preface" {
		t.Errorf("OnData got %q: the preface leaked to the Handler", got)
	}

	// The preface and the ClientHello in one write, so in one read.
	nc = dial(t, te.Engine)
	r.next(t)
	roundTrip(t, te.handshake(t, &prefixConn{Conn: nc, prefix: []byte(preface)}), "preface and hello together")

	// A bad preface: the Prefacer closes, TLS never starts.
	nc = dial(t, te.Engine)
	c = r.next(t)
	nc.Write([]byte("NOT A PROXY HEADER\r\n"))
	waitClosed(t, c)
	if b := readEOF(t, nc); len(b) != 0 {
		t.Errorf("a refused preface read %q", b)
	}
	r.check(t)
}

// prefixConn writes prefix in the same write as the first bytes written.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Write(b []byte) (int, error) {
	if c.prefix != nil {
		all := append(c.prefix, b...)
		c.prefix = nil
		if _, err := c.Conn.Write(all); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}
