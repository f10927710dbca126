package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

// TestServeRevokesThroughCLIFile: with the embedded key file, a key revoked
// or a domain deactivated by the CLI (another writer of the file) closes the
// live publishers of that key with 4002 within the file watch's period.
func TestServeRevokesThroughCLIFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sf := storeFlags{keysFile: path}
	store, err := sf.openServe(context.Background(), false, log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv, err := server.Start(server.Config{Listen: "127.0.0.1:0", Keys: store.checker, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	store.serving(srv)

	add := func(domain string) string {
		code, out, errOut := keysCLI(t, "add", "--keys-file", path, "--domain", domain)
		if code != 0 {
			t.Fatalf("add: %s", errOut)
		}
		return lastLine(out)
	}
	dial := func(key, domain, topic string) *websocket.Conn {
		var pub *websocket.Conn
		var resp *http.Response
		deadline := time.Now().Add(3 * time.Second) // the hub sees a new key within a second
		for {
			pub, resp, err = websocket.DefaultDialer.Dial("ws://"+srv.Addr()+"/ws/pub/"+key+"/"+domain+"/"+topic, nil)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			if resp != nil {
				t.Fatalf("publisher of domain %s: %v: %s", domain, err, resp.Status)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { pub.Close() })
		return pub
	}
	expect4002 := func(pub *websocket.Conn, what string, start time.Time) {
		t.Helper()
		pub.SetReadDeadline(start.Add(3 * time.Second))
		_, _, err := pub.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4002 {
			t.Fatalf("%s: publisher got %v after %v, want close 4002", what, err, time.Since(start))
		}
		t.Logf("%s: publisher closed %v after the CLI", what, time.Since(start))
	}

	keep, gone := add("test"), add("test")
	pubKeep, pubGone := dial(keep, "test", "kept"), dial(gone, "test", "revoked")
	start := time.Now()
	if code, _, errOut := keysCLI(t, "revoke", "--keys-file", path, gone); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	expect4002(pubGone, "revoke", start)

	// The other key of the domain is untouched by the revocation ...
	if err := pubKeep.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	// ... and goes with its domain's deactivation.
	start = time.Now()
	if code, _, errOut := keysCLI(t, "deactivate", "--keys-file", path, "--domain", "test"); code != 0 {
		t.Fatalf("deactivate: %s", errOut)
	}
	expect4002(pubKeep, "deactivate", start)
}
