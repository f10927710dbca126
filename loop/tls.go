package loop

import (
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
)

// TLS, when Config.TLS is set, runs inside the loops like everything else.
// Each connection gets a tls.Conn from llib, a fork of crypto/tls that is fed
// ciphertext as it arrives (Append) and returns what it can decrypt (Read)
// without blocking; the records it writes land in the connection's wire and
// go to nbio's write path as ciphertext, counted in the backlog like any
// other bytes. Conn.mu guards the tls.Conn entirely: llib shares state
// between its read side (which writes handshake messages, alerts and
// key-update answers) and its write side without locks of its own.

// errTLSNotReady means a Send came before the TLS handshake completed; the
// connection is dropped, since nothing can be sent on it yet.
var errTLSNotReady = errors.New("loop: TLS handshake not complete")

// KeyPair is the certificate a TLS engine presents: a chain and its private
// key read from PEM files, read again by Reload. A handshake uses the pair
// that is current when it starts; connections already open keep the keys
// they agreed on. Its methods may be called from any goroutine.
type KeyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[keyPair]
}

type keyPair struct {
	cert tls.Certificate
	leaf *x509.Certificate
}

// LoadKeyPair reads a PEM certificate chain (leaf first) and its PEM
// private key, as crypto/tls.LoadX509KeyPair does.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the files again and, if they hold a good pair, makes it the
// one new handshakes use. On error the pair in use stays.
func (k *KeyPair) Reload() error {
	c, err := stdtls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("cannot load the TLS certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("cannot parse the TLS certificate %s: %w", k.certFile, err)
		}
	}
	k.cur.Store(&keyPair{
		cert: tls.Certificate{
			Certificate:                 c.Certificate,
			PrivateKey:                  c.PrivateKey,
			OCSPStaple:                  c.OCSPStaple,
			SignedCertificateTimestamps: c.SignedCertificateTimestamps,
			Leaf:                        leaf,
		},
		leaf: leaf,
	})
	return nil
}

// Leaf is the certificate new handshakes present (the first of the chain).
func (k *KeyPair) Leaf() *x509.Certificate { return k.cur.Load().leaf }

// serverConfig is the TLS configuration of an engine serving k: TLS 1.2 with
// ECDHE and AEAD suites only, or TLS 1.3; no session tickets (no resumption,
// and no ticket state per connection); full-size records, so that a Send's
// ciphertext is its plaintext plus at most maxRecordOverhead per 16 KiB.
func serverConfig(k *KeyPair) *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &k.cur.Load().cert, nil
		},
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
		},
		NextProtos:                  []string{"http/1.1"},
		SessionTicketsDisabled:      true,
		DynamicRecordSizingDisabled: true,
	}
}

const (
	// maxRecordPayload is the most plaintext in one TLS record.
	maxRecordPayload = 16 << 10
	// maxRecordOverhead is the most a record adds to its plaintext with the
	// suites serverConfig allows: a 5-byte header, an 8-byte explicit nonce
	// (TLS 1.2 AES-GCM) and a 16-byte tag.
	maxRecordOverhead = 5 + 8 + 16
)

// tlsSize is the most ciphertext n bytes of plaintext take.
func tlsSize(n int) int64 {
	records := max(1, (n+maxRecordPayload-1)/maxRecordPayload)
	return int64(n + records*maxRecordOverhead)
}

// tlsConn is a connection's TLS state, guarded by its Conn's mu.
type tlsConn struct {
	conn   *tls.Conn
	wire   wire
	ready  bool // the handshake is complete
	failed bool // a TLS error ended the connection
	// preface, until it has read the connection's preface, gets the bytes
	// read instead of conn (ExpectPreface).
	preface Prefacer
}

// wire is the net.Conn under a tls.Conn: it collects the records the
// tls.Conn writes during one call, for one write to nbio (flushTLS).
type wire struct {
	nc  *nbio.Conn
	out *[]byte
}

// cipherPool holds the buffers a call's records collect in.
var cipherPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

func (w *wire) Write(b []byte) (int, error) {
	if w.out == nil {
		w.out = cipherPool.Get().(*[]byte)
	}
	*w.out = append(*w.out, b...)
	return len(b), nil
}

// Read is never called: a non-blocking tls.Conn is fed with Append.
func (w *wire) Read([]byte) (int, error)         { return 0, errors.New("loop: TLS input is fed, not read") }
func (w *wire) Close() error                     { return nil }
func (w *wire) LocalAddr() net.Addr              { return w.nc.LocalAddr() }
func (w *wire) RemoteAddr() net.Addr             { return w.nc.RemoteAddr() }
func (w *wire) SetDeadline(time.Time) error      { return nil }
func (w *wire) SetReadDeadline(time.Time) error  { return nil }
func (w *wire) SetWriteDeadline(time.Time) error { return nil }
func (w *wire) release() {
	if cap(*w.out) <= 4<<20 {
		*w.out = (*w.out)[:0]
		cipherPool.Put(w.out)
	}
	w.out = nil
}

func newTLSConn(nc *nbio.Conn, cfg *tls.Config) *tlsConn {
	t := &tlsConn{wire: wire{nc: nc}}
	t.conn = tls.NewConn(&t.wire, cfg, false, true)
	return t
}

// flushTLS hands what the tls.Conn wrote to nbio, counting it in the
// backlog. c.mu is held.
func (c *Conn) flushTLS() error {
	w := &c.tls.wire
	if w.out == nil {
		return nil
	}
	c.queued += int64(len(*w.out))
	_, err := c.nc.Write(*w.out)
	w.release()
	if err != nil {
		return fmt.Errorf("cannot write to %v: %w", c.nc.RemoteAddr(), err)
	}
	return nil
}

// writeTLS encrypts b and writes the records. c.mu is held.
func (c *Conn) writeTLS(b []byte) error {
	t := c.tls
	if !t.ready {
		c.nc.Close()
		return errTLSNotReady
	}
	_, err := t.conn.Write(b)
	if ferr := c.flushTLS(); ferr != nil {
		return ferr
	}
	if err != nil {
		c.nc.CloseWithError(err)
		return fmt.Errorf("cannot encrypt for %v: %w", c.nc.RemoteAddr(), err)
	}
	return nil
}

// onTLSData feeds ciphertext to c's tls.Conn and hands the Handler what it
// decrypts, in reads of up to the engine's read buffer size; while c
// expects a preface, its Prefacer gets the bytes first. It runs on c's
// loop goroutine; c.mu is held while the tls.Conn works and released for
// the Handler, which may Send, and for the Prefacer, which may Close.
func (e *Engine) onTLSData(c *Conn, data []byte) {
	c.mu.Lock()
	if c.tls.failed {
		c.mu.Unlock()
		return
	}
	if p := c.tls.preface; p != nil {
		c.mu.Unlock()
		rest, done := p.OnPreface(c, data)
		if !done {
			return
		}
		c.mu.Lock()
		c.tls.preface = nil
		if len(rest) == 0 {
			c.mu.Unlock()
			return
		}
		data = rest
	}
	bp := e.plain.Get().(*[]byte)
	defer e.plain.Put(bp)
	buf := *bp
	c.tls.conn.Append(data)
	for {
		n, err := c.tls.read(buf)
		if ferr := c.flushTLS(); err == nil {
			err = ferr
		}
		c.mu.Unlock()
		if n > 0 {
			e.h.OnData(c, buf[:n])
		}
		if err != nil {
			c.mu.Lock()
			c.tlsFailed(err)
			c.mu.Unlock()
			return
		}
		if n < len(buf) {
			return // all that could be decrypted was
		}
		c.mu.Lock()
	}
}

// read decrypts into buf until it is full or the tls.Conn needs more input,
// advancing the handshake on the way. A panic in the TLS code, which parses
// what the peer sends, fails the connection instead of the hub. c.mu is
// held.
func (t *tlsConn) read(buf []byte) (n int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("loop: TLS failed on the peer's input: %v", p)
		}
	}()
	for n < len(buf) {
		m, err := t.conn.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
	}
	if !t.ready {
		t.ready = t.conn.ConnectionState().HandshakeComplete
	}
	return n, nil
}

// httpsOnly answers a plain HTTP request on a TLS connection, as net/http
// does.
const httpsOnly = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

// tlsFailed ends a connection whose peer broke TLS (or closed it with an
// alert): any alert the tls.Conn wrote is already with nbio. A peer that
// spoke plain HTTP gets a plain 400 first. c.mu is held.
func (c *Conn) tlsFailed(err error) {
	if c.tls.failed {
		return
	}
	c.tls.failed = true
	c.closing = true
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader) {
		c.queued += int64(len(httpsOnly))
		if _, werr := c.nc.Write([]byte(httpsOnly)); werr == nil && c.queued != c.written.Load() {
			c.nc.SetReadDeadline(time.Now().Add(time.Second)) // for the client to read it
			return
		}
	}
	c.nc.CloseWithError(err)
}

// looksLikeHTTP reports whether a connection's first five bytes start an
// HTTP request (the test net/http makes).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
