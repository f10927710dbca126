package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/internal/testca"
)

// writeTestCert writes a self-signed ECDSA certificate for 127.0.0.1 with
// serial, and its key, to certFile and keyFile (each renamed into place, as
// a certificate manager would), and returns the certificate.
func writeTestCert(t *testing.T, serial int64, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	l := testca.SelfSigned(t, serial)
	l.Write(t, certFile, keyFile)
	return l.Cert
}

// TestServeTLSReloadsOnSIGHUP runs the binary with --tls-cert and
// --tls-key: clients connect over wss://; after the files are swapped and
// the process gets SIGHUP, the open connections go on and new ones see the
// new certificate; a SIGHUP with broken files keeps it.
func TestServeTLSReloadsOnSIGHUP(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	key := addKey(t, bin, keysFile, "test")
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	roots := x509.NewCertPool()
	roots.AddCert(writeTestCert(t, 1001, certFile, keyFile))

	// Both files or neither.
	if err := exec.Command(bin, "serve", "--keys-file", keysFile, "--tls-cert", certFile).Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
		t.Fatalf("--tls-cert without --tls-key: %v, want exit 2", err)
	}

	listen := freePort(t)
	cmd := exec.Command(bin, "serve", "--listen", listen, "--keys-file", keysFile,
		"--tls-cert", certFile, "--tls-key", keyFile, "--shutdown-timeout", "2s", "--drain-period", "0s")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("wspubsub serve's output:\n%s", logs.String())
		}
	})
	waitLog := func(what string, after int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(logs.String()[after:], what) {
			select {
			case err := <-exited:
				t.Fatalf("wspubsub serve exited: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog("wspubsub serving", 0)
	if !strings.Contains(logs.String(), "addr=wss://") {
		t.Errorf("the serving line does not say wss://")
	}

	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: roots}}
	url := "wss://" + listen
	dial := func(path string) (*websocket.Conn, int64) {
		t.Helper()
		c, resp, err := dialer.Dial(url+path, nil)
		if err != nil {
			if resp != nil {
				t.Fatalf("dial %s: %v: %s", path, err, resp.Status)
			}
			t.Fatalf("dial %s: %v", path, err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.UnderlyingConn().(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	roundTrip := func(pub *websocket.Conn, msg string, subs ...*websocket.Conn) {
		t.Helper()
		if err := pub.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, got, err := s.ReadMessage()
			if err != nil || string(got) != msg {
				t.Fatalf("subscriber got %q, %v; want %q", got, err, msg)
			}
		}
	}

	pub, serial := dial("/ws/pub/" + key + "/test/news")
	if serial != 1001 {
		t.Fatalf("serial %d, want 1001", serial)
	}
	old, _ := dial("/ws/sub/test/news")
	roundTrip(pub, "before", old)

	roots.AddCert(writeTestCert(t, 2002, certFile, keyFile))
	mark := len(logs.String())
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("TLS certificate reloaded", mark)
	roundTrip(pub, "after the reload", old)
	fresh, serial := dial("/ws/sub/test/news")
	if serial != 2002 {
		t.Fatalf("after SIGHUP: serial %d, want 2002", serial)
	}
	roundTrip(pub, "to both", old, fresh)

	// Broken files: the reload fails, is logged, and 2002 stays.
	if err := os.WriteFile(certFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	mark = len(logs.String())
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("cannot reload the TLS certificate", mark)
	if _, serial := dial("/ws/sub/test/news"); serial != 2002 {
		t.Fatalf("after a failed reload: serial %d, want 2002", serial)
	}
	roundTrip(pub, "still", old, fresh)

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
