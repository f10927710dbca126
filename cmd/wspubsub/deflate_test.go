package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// TestServeCompression: through the real binary, a browser-like client
// that offers permessage-deflate gets it; messages of at least
// --compress-min-size arrive compressed (RSV1, smaller on the wire), the
// others plain; a compressing publisher is inflated; a plain subscriber
// gets the same bytes. With --compression=false nothing is negotiated.
func TestServeCompression(t *testing.T) {
	bin := buildBinary(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")

	addr := freePort(t)
	startServe(t, bin, "--listen", addr, "--keys-file", keysFile, "--compress-min-size", "512")
	waitReady(t, addr)
	zd := websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	pub, resp, err := zd.Dial(fmt.Sprintf("ws://%s/ws/pub/%s/test/feed", addr, key), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if resp.Header.Get("Sec-WebSocket-Extensions") == "" {
		t.Fatal("publisher: permessage-deflate not negotiated")
	}
	plain, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws/sub/test/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	raw := rawSubscribe(t, addr, "/ws/sub/test/feed", "permessage-deflate; client_max_window_bits")

	msgs := [][]byte{payload.AppendJSON(nil, 1), []byte(strings.Repeat("s", 511)), payload.AppendJSON(nil, 2)}
	for _, m := range msgs {
		if err := pub.WriteMessage(websocket.TextMessage, m); err != nil { // compressed by gorilla
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		plain.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := plain.ReadMessage()
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("plain subscriber, message %d: %v %.40q", i, err, got)
		}
		b0, got, wire := raw.next(t)
		if b0&0x7f != 0x41 && b0&0x7f != 0x01 || !bytes.Equal(got, m) {
			t.Fatalf("deflate subscriber, message %d: %#x %.40q", i, b0, got)
		}
		if compressed := b0&0x40 != 0; compressed != (len(m) >= 512) {
			t.Fatalf("message %d of %d bytes: compressed %v", i, len(m), compressed)
		}
		if b0&0x40 != 0 && wire > len(m)/2 {
			t.Fatalf("message %d: %d bytes on the wire for %d", i, wire, len(m))
		}
	}

	off := freePort(t)
	startServe(t, bin, "--listen", off, "--keys-file", keysFile, "--compression=false")
	waitReady(t, off)
	c, resp, err := zd.Dial("ws://"+off+"/ws/sub/test/feed", nil)
	if err == nil {
		c.Close()
	}
	if resp == nil || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("--compression=false: %v, extensions %q", err, resp.Header.Get("Sec-WebSocket-Extensions"))
	}
}

// zConn is a subscriber that reads frames by hand, to see RSV1.
type zConn struct {
	net.Conn
	r *bufio.Reader
}

func rawSubscribe(t *testing.T, addr, path, offer string) *zConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: %s\r\n\r\n", path, offer)
	r := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 || !strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("deflate subscriber: %v %v", resp, err)
	}
	return &zConn{nc, r}
}

// next reads a frame and inflates it if RSV1 is set.
func (c *zConn) next(t *testing.T) (b0 byte, payload []byte, wire int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hd [4]byte
	if _, err := io.ReadFull(c.r, hd[:2]); err != nil {
		t.Fatal(err)
	}
	n, wire := int(hd[1]&0x7f), 2
	if n == 126 {
		io.ReadFull(c.r, hd[2:4])
		n, wire = int(hd[2])<<8|int(hd[3]), 4
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.r, p); err != nil {
		t.Fatal(err)
	}
	if hd[0]&0x40 != 0 {
		out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff"))))
		if err != nil {
			t.Fatalf("inflate: %v", err)
		}
		p = out
	}
	return hd[0], p, wire + n
}

// TestServeClusterCompression: a message published on one node of a
// cluster reaches a deflate subscriber on another node compressed (the
// receiving node compresses it once, in the same publish path), and a
// plain subscriber there gets the same bytes plain.
func TestServeClusterCompression(t *testing.T) {
	bin := buildBinary(t)
	ns := natstest.Start(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")
	addrs, _ := startNodes(t, bin, ns.URL, keysFile, 2)

	zd := websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	pub, _, err := zd.Dial(fmt.Sprintf("ws://%s/ws/pub/%s/test/feed", addrs[0], key), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	z := rawSubscribe(t, addrs[1], "/ws/sub/test/feed", "permessage-deflate")
	plain, _, err := websocket.DefaultDialer.Dial("ws://"+addrs[1]+"/ws/sub/test/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for i := range 3 {
		m := payload.AppendJSON(nil, uint64(i))
		if err := pub.WriteMessage(websocket.TextMessage, m); err != nil {
			t.Fatal(err)
		}
		b0, got, _ := z.next(t)
		if b0 != 0xc1 || !bytes.Equal(got, m) {
			t.Fatalf("message %d on the other node: %#x %.40q, want it compressed", i, b0, got)
		}
		plain.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, got, err := plain.ReadMessage(); err != nil || !bytes.Equal(got, m) {
			t.Fatalf("message %d, plain subscriber: %v %.40q", i, err, got)
		}
	}
}
