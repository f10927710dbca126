package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestServeHTTPPublish runs the binary and publishes to it over HTTP the
// way its README says, with curl when it is on PATH and with Go's HTTP
// client: subscribers get the messages, curl -d gets its 415, and
// /metrics counts them.
func TestServeHTTPPublish(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	out, err := exec.Command(bin, "keys", "add", "--domain", "test", "--keys-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys add: %v", err)
	}
	key := lastLine(string(out))
	listen := freePort(t)
	cmd := exec.Command(bin, "serve", "--listen", listen, "--keys-file", keysFile, "--grace-period", "30s")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("wspubsub serve's output:\n%s", logs.String())
		}
		if strings.Contains(logs.String(), key) {
			t.Errorf("the hub logged the full API key")
		}
	})
	base := "http://" + listen
	deadline := time.Now().Add(10 * time.Second)
	for code, _ := status(base + "/healthz"); code != http.StatusOK; code, _ = status(base + "/healthz") {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := base + "/api/pub/test/news"

	// Go's client, keep-alive: the first publish starts the topic.
	client := &http.Client{Timeout: 5 * time.Second}
	post := func(contentType, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", contentType)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("application/json", `{"n":1}`); code != 200 || !strings.Contains(body, `"offset":1`) {
		t.Fatalf("first publish: %d %q, want 200 at offset 1", code, body)
	}
	sub, _, err := websocket.DefaultDialer.Dial("ws://"+listen+"/ws/sub/test/news?rewind=1", nil)
	if err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	defer sub.Close()
	read := func(typ int, want []byte) {
		t.Helper()
		sub.SetReadDeadline(time.Now().Add(5 * time.Second))
		gt, got, err := sub.ReadMessage()
		if err != nil || gt != typ || !bytes.Equal(got, want) {
			t.Fatalf("subscriber got type %d %q (%v), want type %d %q", gt, got, err, typ, want)
		}
	}
	read(websocket.TextMessage, []byte(`{"n":1}`))
	published := 1

	if curl, err := exec.LookPath("curl"); err != nil {
		t.Log("curl is not on PATH: the curl publishes are skipped")
	} else {
		run := func(args ...string) string {
			t.Helper()
			out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "5"}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("curl %q: %v\n%s", args, err, out)
			}
			return string(out)
		}
		// The README's example.
		out := run(url, "-H", "Authorization: Bearer "+key, "-H", "Content-Type: text/plain", "--data-binary", "hello, subscribers")
		var pos struct {
			Epoch  string
			Offset uint64
		}
		if err := json.Unmarshal([]byte(out), &pos); err != nil || pos.Offset != 2 {
			t.Fatalf("curl: %q, want the position at offset 2", out)
		}
		read(websocket.TextMessage, []byte("hello, subscribers"))
		// A file of bytes, and two publishes on one connection.
		file := filepath.Join(dir, "blob")
		blob := []byte{0, 1, 2, 0xfe, 0xff, '\n', 3}
		if err := os.WriteFile(file, blob, 0o600); err != nil {
			t.Fatal(err)
		}
		out = run(url, url, "-H", "Authorization: Bearer "+key, "--data-binary", "@"+file, "-H", "Content-Type: application/octet-stream", "-v")
		if !strings.Contains(out, `"offset":3`) || !strings.Contains(out, `"offset":4`) || !strings.Contains(out, "Re-using existing connection") {
			t.Fatalf("curl, two publishes on one connection:\n%s", out)
		}
		read(websocket.BinaryMessage, blob)
		read(websocket.BinaryMessage, blob)
		// curl -d without a Content-Type sends a form.
		out = run("-i", url, "-H", "Authorization: Bearer "+key, "-d", "hello")
		if !strings.HasPrefix(out, "HTTP/1.1 415") || !strings.Contains(out, "curl -d") {
			t.Fatalf("curl -d: %q, want 415 saying why", out)
		}
		// No key.
		out = run("-i", url, "-H", "Content-Type: text/plain", "--data-binary", "x")
		if !strings.HasPrefix(out, "HTTP/1.1 401") || !strings.Contains(out, "WWW-Authenticate: Bearer") {
			t.Fatalf("curl without a key: %q, want 401", out)
		}
		published += 3
	}

	if code, body := post("text/plain; charset=utf-8", "last"); code != 200 {
		t.Fatalf("publish: %d %q", code, body)
	}
	published++
	read(websocket.TextMessage, []byte("last"))
	_, metrics := status(base + "/metrics")
	want := `wspubsub_http_publishes_total{result="published"} ` + strconv.Itoa(published)
	if !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}
