package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestServeHistoryFlags runs the binary users run with the history flags
// and checks, with real clients, that they take effect: --history-size
// bounds what a resume gets (a gap notice for the rest), the replay meets
// the live stream, /metrics reports the history's bytes, and
// --history-size 0 keeps nothing while positions go on.
func TestServeHistoryFlags(t *testing.T) {
	bin := buildBinary(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	out, err := exec.Command(bin, "keys", "add", "--domain", "test", "--keys-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys add: %v", err)
	}
	key := lastLine(string(out))

	run := func(t *testing.T, size string) string {
		listen := freePort(t)
		cmd := exec.Command(bin, "serve", "--listen", listen, "--keys-file", keysFile, "--history-size", size, "--history-ttl", "1m")
		var logs syncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("hub log:\n%s", logs.String())
			}
		})
		deadline := time.Now().Add(10 * time.Second)
		for {
			if code, _ := status("http://" + listen + "/healthz"); code == 200 {
				return listen
			}
			if time.Now().After(deadline) {
				t.Fatal("the hub did not come up")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	meta := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"wspubsub.meta"}}
	read := func(t *testing.T, c *websocket.Conn) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(b)
	}
	publishN := func(t *testing.T, listen string, from, to int) *websocket.Conn {
		p, _, err := websocket.DefaultDialer.Dial("ws://"+listen+"/ws/pub/"+key+"/test/feed", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		for i := from; i <= to; i++ {
			if err := p.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("m%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	// epoch subscribes live, publishes message n and reads its epoch (the
	// subscriber may join before the hub has read the earlier ones).
	epoch := func(t *testing.T, listen string, p *websocket.Conn, n int) string {
		c, _, err := meta.Dial("ws://"+listen+"/ws/sub/test/feed", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("m%d", n)))
		for {
			head, data, _ := strings.Cut(read(t, c), "\n\n")
			e, off, _ := strings.Cut(strings.TrimPrefix(head, "id: "), ":")
			if data != fmt.Sprintf("m%d", n) {
				continue
			}
			if off != fmt.Sprint(n) {
				t.Fatalf("header %q, want offset %d", head, n)
			}
			return e
		}
	}

	t.Run("size 3", func(t *testing.T) {
		listen := run(t, "3")
		p := publishN(t, listen, 1, 7)
		e := epoch(t, listen, p, 8) // 6, 7, 8 kept
		c, _, err := meta.Dial("ws://"+listen+"/ws/sub/test/feed?since="+e+":2", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := []string{"gap: " + e + ":3-5\n\n", "id: " + e + ":6\n\nm6", "id: " + e + ":7\n\nm7", "id: " + e + ":8\n\nm8"}
		for _, w := range want {
			if got := read(t, c); got != w {
				t.Fatalf("got %q, want %q", got, w)
			}
		}
		p.WriteMessage(websocket.TextMessage, []byte("m9"))
		if got := read(t, c); got != "id: "+e+":9\n\nm9" {
			t.Fatalf("live: got %q", got)
		}
		resp, err := http.Get("http://" + listen + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if !strings.Contains(body.String(), `wspubsub_replays_total{result="gap"} 1`) ||
			strings.Contains(body.String(), "wspubsub_history_bytes 0\n") {
			t.Fatalf("metrics after a resume with a gap:\n%s", grepLines(body.String(), "history_bytes", "replay"))
		}
	})
	t.Run("size 0", func(t *testing.T) {
		listen := run(t, "0")
		p := publishN(t, listen, 1, 3)
		e := epoch(t, listen, p, 4)
		c, _, err := meta.Dial("ws://"+listen+"/ws/sub/test/feed?since="+e+":1", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := read(t, c); got != "gap: "+e+":2-4\n\n" {
			t.Fatalf("got %q, want a gap for everything", got)
		}
	})
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
