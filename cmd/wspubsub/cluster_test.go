package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// TestServeThreeNodeCluster runs three `wspubsub serve --nats-url` processes
// sharing a key file, as the README shows: a publisher on one node reaches
// subscribers on the others, a second publisher elsewhere gets 409, and
// when the first node drains, its publisher takes its topic over on
// another node within the grace period without the subscribers noticing.
func TestServeThreeNodeCluster(t *testing.T) {
	bin := buildBinary(t)
	ns := natstest.Start(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	out, err := exec.Command(bin, "keys", "add", "--domain", "test", "--keys-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys add: %v", err)
	}
	key := lastLine(string(out))

	var addrs []string
	var cmds []*exec.Cmd
	for i := range 3 {
		addr := freePort(t)
		cmd := exec.Command(bin, "serve", "--listen", addr, "--keys-file", keysFile,
			"--nats-url", ns.URL, "--node-name", "node"+string(rune('a'+i)), "--drain-period", "100ms")
		var logs syncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("node %d's output:\n%s", i, logs.String())
			}
		})
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
