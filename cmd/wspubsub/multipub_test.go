package main

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// TestServePublishersOnTwoNodes runs two `wspubsub serve --nats-url
// --publishers-per-topic 2` processes: a publisher of one topic on each,
// a third refused with 409 on either, and a wspubsub.meta subscriber on
// each node gets both publishers' messages at consecutive offsets, each
// publisher's in its order, exactly once, in the same order on both.
func TestServePublishersOnTwoNodes(t *testing.T) {
	bin := buildBinary(t)
	ns := natstest.Start(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")
	var addrs []string
	for i := range 2 {
		addr := freePort(t)
		startServeCmd(t, bin, "--listen", addr, "--keys-file", keysFile, "--nats-url", ns.URL,
			"--node-name", "node"+string(rune('a'+i)), "--publishers-per-topic", "2")
		addrs = append(addrs, addr)
	}
	for _, addr := range addrs {
		deadline := time.Now().Add(15 * time.Second)
		for code, _ := status("http://" + addr + "/readyz"); code != 200; code, _ = status("http://" + addr + "/readyz") {
			if time.Now().After(deadline) {
				t.Fatalf("node %s never ready", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	dial := func(addr, path string, protocols ...string) (*websocket.Conn, int) {
		t.Helper()
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: protocols}
		c, resp, err := d.Dial("ws://"+addr+path, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode
			}
			t.Fatalf("dial %s%s: %v", addr, path, err)
		}
		t.Cleanup(func() { c.Close() })
		return c, 101
	}
	pubPath := "/ws/pub/" + key + "/test/both"
	var pubs []*websocket.Conn
	for _, addr := range addrs {
		p, code := dial(addr, pubPath)
		if code != 101 {
			t.Fatalf("publisher on %s: %d", addr, code)
		}
		pubs = append(pubs, p)
	}
	for _, addr := range addrs {
		if _, code := dial(addr, pubPath); code != 409 {
			t.Fatalf("a third publisher on %s: %d, want 409", addr, code)
		}
	}
	var subs []*websocket.Conn
	for _, addr := range addrs {
		s, code := dial(addr, "/ws/sub/test/both", "wspubsub.meta")
		if code != 101 {
			t.Fatalf("subscriber on %s: %d", addr, code)
		}
		subs = append(subs, s)
	}
	const count = 100
	done := make(chan error, 2)
	for i, p := range pubs {
		go func() {
			for n := 1; n <= count; n++ {
				if err := p.WriteMessage(websocket.TextMessage, []byte(string(rune('a'+i))+"-"+strconv.Itoa(n))); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range pubs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var orders []string
	for si, s := range subs {
		last := map[string]int{}
		var order []string
		for i := 1; i <= 2*count; i++ {
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := s.ReadMessage()
			if err != nil {
				t.Fatalf("subscriber %d, message %d: %v", si, i, err)
			}
			head, body, _ := bytes.Cut(b, []byte("\n\n"))
			pos, ok := strings.CutPrefix(string(head), "id: ")
			if _, off, _ := strings.Cut(pos, ":"); !ok || off != strconv.Itoa(i) {
				t.Fatalf("subscriber %d, message %d: header %q", si, i, head)
			}
			name, seq, _ := strings.Cut(string(body), "-")
			if n, _ := strconv.Atoi(seq); n != last[name]+1 {
				t.Fatalf("subscriber %d: publisher %s's %d after %d", si, name, n, last[name])
			} else {
				last[name] = n
			}
			order = append(order, string(body))
		}
		orders = append(orders, strings.Join(order, ","))
	}
	if orders[0] != orders[1] {
		t.Fatal("the two nodes' subscribers got the messages in different orders")
	}
}
