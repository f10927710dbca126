package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// startNodes runs n `wspubsub serve --nats-url` processes sharing a key
// file and waits until each is ready; they are killed at the test's end.
func startNodes(t *testing.T, bin, natsURL, keysFile string, n int) (addrs []string, cmds []*exec.Cmd) {
	t.Helper()
	for i := range n {
		addr := freePort(t)
		cmd, _ := startServeCmd(t, bin, "--listen", addr, "--keys-file", keysFile,
			"--nats-url", natsURL, "--node-name", "node"+string(rune('a'+i)), "--drain-period", "100ms")
		addrs, cmds = append(addrs, addr), append(cmds, cmd)
	}
	for _, addr := range addrs {
		deadline := time.Now().Add(15 * time.Second)
		for {
			if code, _ := status("http://" + addr + "/readyz"); code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s never ready", addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, body := status("http://" + addr + "/metrics"); !strings.Contains(body, "wspubsub_cluster_connected 1") {
			t.Fatalf("node %s's metrics do not show it connected to NATS", addr)
		}
	}
	return addrs, cmds
}

// TestServeThreeNodeCluster runs three `wspubsub serve --nats-url` processes
// sharing a key file, as the README shows: a publisher on one node reaches
// subscribers on the others, a second publisher elsewhere gets 409, and
// when the first node drains, its publisher takes its topic over on
// another node within the grace period without the subscribers noticing.
func TestServeThreeNodeCluster(t *testing.T) {
	bin := buildBinary(t)
	ns := natstest.Start(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")

	addrs, cmds := startNodes(t, bin, ns.URL, keysFile, 3)

	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	dial := func(addr, path string) (*websocket.Conn, int) {
		c, resp, err := dialer.Dial("ws://"+addr+path, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode
			}
			t.Fatalf("dial %s%s: %v", addr, path, err)
		}
		t.Cleanup(func() { c.Close() })
		return c, 101
	}
	pubPath := "/ws/pub/" + key + "/test/news"
	pub, code := dial(addrs[0], pubPath)
	if code != 101 {
		t.Fatalf("publisher on node a: %d", code)
	}
	var subs []*websocket.Conn
	for _, addr := range addrs[1:] {
		s, code := dial(addr, "/ws/sub/test/news")
		if code != 101 {
			t.Fatalf("subscriber on %s: %d", addr, code)
		}
		subs = append(subs, s)
	}
	read := func(want string) {
		t.Helper()
		for _, s := range subs {
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, got, err := s.ReadMessage()
			if err != nil || string(got) != want {
				t.Fatalf("subscriber got %q, %v; want %q", got, err, want)
			}
		}
	}
	pub.WriteMessage(websocket.TextMessage, []byte("one"))
	read("one")
	if _, code := dial(addrs[2], pubPath); code != 409 {
		t.Fatalf("second publisher on node c: %d, want 409", code)
	}

	// Node a drains: its publisher is closed with 1001 and reconnects to b.
	cmds[0].Process.Signal(syscall.SIGTERM)
	pub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := pub.ReadMessage(); !websocket.IsCloseError(err, 1001) {
		t.Fatalf("publisher on the draining node: %v, want 1001", err)
	}
	pub2, code := dial(addrs[1], pubPath)
	if code != 101 {
		t.Fatalf("publisher reconnecting to node b within the grace period: %d", code)
	}
	pub2.WriteMessage(websocket.TextMessage, []byte("two"))
	read("two")
	if err := cmds[0].Wait(); err != nil {
		t.Fatalf("node a did not exit cleanly: %v", err)
	}
}

// TestServeClusterPositions runs three `wspubsub serve --nats-url`
// processes: subscribers on every node see the positions the owner
// assigns; one resuming on a node that never had the topic gets the older
// messages from the owner; when the owner drains, its publisher takes the
// topic over on that node and the epoch and count go on; and an HTTP
// publish on a node that does not own the topic gets the next position.
func TestServeClusterPositions(t *testing.T) {
	bin := buildBinary(t)
	ns := natstest.Start(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")
	addrs, cmds := startNodes(t, bin, ns.URL, keysFile, 3)

	meta := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"wspubsub.meta"}}
	dial := func(d *websocket.Dialer, addr, path string) *websocket.Conn {
		t.Helper()
		c, _, err := d.Dial("ws://"+addr+path, nil)
		if err != nil {
			t.Fatalf("dial %s%s: %v", addr, path, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// expect reads the message at position pos holding data.
	expect := func(c *websocket.Conn, pos, data string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ReadMessage()
		if want := "id: " + pos + "\n\n" + data; err != nil || string(b) != want {
			t.Fatalf("got %q, %v; want %q", b, err, want)
		}
	}
	pubPath := "/ws/pub/" + key + "/test/news"
	pub := dial(websocket.DefaultDialer, addrs[0], pubPath)
	onB := dial(&meta, addrs[1], "/ws/sub/test/news")
	for _, m := range []string{"m1", "m2", "m3"} {
		pub.WriteMessage(websocket.TextMessage, []byte(m))
	}
	onB.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, first, err := onB.ReadMessage()
	head, _, _ := strings.Cut(string(first), "\n\n")
	epoch, _, _ := strings.Cut(strings.TrimPrefix(head, "id: "), ":")
	if err != nil || string(first) != "id: "+epoch+":1\n\nm1" {
		t.Fatalf("first message on b: %q, %v", first, err)
	}
	expect(onB, epoch+":2", "m2")
	expect(onB, epoch+":3", "m3")

	// Node c never had the topic: it asks a for what the resume needs.
	onC := dial(&meta, addrs[2], "/ws/sub/test/news?since="+epoch+":1")
	expect(onC, epoch+":2", "m2")
	expect(onC, epoch+":3", "m3")

	// a drains; its publisher takes the topic over on c, where offsets go
	// on from 4 under the same epoch.
	cmds[0].Process.Signal(syscall.SIGTERM)
	pub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := pub.ReadMessage(); !websocket.IsCloseError(err, 1001) {
		t.Fatalf("publisher on the draining node: %v, want 1001", err)
	}
	pub2 := dial(websocket.DefaultDialer, addrs[2], pubPath)
	pub2.WriteMessage(websocket.TextMessage, []byte("m4"))
	expect(onB, epoch+":4", "m4")
	expect(onC, epoch+":4", "m4")
	if err := cmds[0].Wait(); err != nil {
		t.Fatalf("node a did not exit cleanly: %v", err)
	}
	// An HTTP publish on b goes to c, the owner now, and comes back with
	// its position.
	req, _ := http.NewRequest("POST", "http://"+addrs[1]+"/api/pub/test/news", strings.NewReader("m5"))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`{"epoch":%q,"offset":5}`, epoch); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != want {
		t.Fatalf("HTTP publish on b: %s %s, want 200 %s", resp.Status, body, want)
	}
	expect(onB, epoch+":5", "m5")
	expect(onC, epoch+":5", "m5")
	// And a resume on b, from the start, with a gone.
	again := dial(&meta, addrs[1], "/ws/sub/test/news?since="+epoch+":0")
	for i, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		expect(again, fmt.Sprintf("%s:%d", epoch, i+1), m)
	}
}
