package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
)

// keysCLI runs `wspubsub keys ARGS` and returns the exit code and output.
func keysCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runKeys(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestKeysCLIEndToEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	ctx := context.Background()

	code, out, errOut := keysCLI(t, "add", "--keys-file", path, "--domain", "news.example", "--username", "alice")
	if code != 0 {
		t.Fatalf("add: exit %d, stderr %q", code, errOut)
	}
	k1 := lastLine(out)
	if !keys.WellFormed(k1) {
		t.Fatalf("add: last line %q is not a key", k1)
	}
	t.Setenv("WSPUBSUB_KEYS_FILE", path) // the rest use the environment
	code, out, _ = keysCLI(t, "add", "--domain", "news.example")
	k2 := lastLine(out)
	if code != 0 || !keys.WellFormed(k2) || k2 == k1 {
		t.Fatalf("add via env: exit %d, key %q", code, k2)
	}

	// A server holding the same file sees the CLI's changes.
	srv, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Check(ctx, k1, "news.example"); err != nil {
		t.Fatalf("server refuses key added by CLI: %v", err)
	}

	code, out, errOut = keysCLI(t, "list")
	if code != 0 {
		t.Fatalf("list: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(out, k1) || strings.Contains(out, k2) {
		t.Fatalf("list shows a key:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATUS") {
		t.Fatalf("list output:\n%s", out)
	}
	if !strings.Contains(lines[1], "alice") || !strings.HasSuffix(lines[1], "active") {
		t.Fatalf("list row 1: %q", lines[1])
	}

	// Revoke k2 by its ID, with the flag after the argument.
	h := keys.Hash(k2)
	id := strings.Fields(lines[2])[0]
	if id != hex.EncodeToString(h[:6]) {
		t.Fatalf("list ID %q is not the hash prefix of the key", id)
	}
	if code, out, errOut = keysCLI(t, "revoke", id, "--keys-file", path); code != 0 {
		t.Fatalf("revoke by ID: exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, id) {
		t.Fatalf("revoke output %q", out)
	}

	code, _, _ = keysCLI(t, "deactivate", "--domain", "news.example")
	if code != 0 {
		t.Fatal("deactivate failed")
	}
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Check(ctx, k1, "news.example"); err == nil {
		t.Fatal("deactivated key accepted")
	}
	code, out, _ = keysCLI(t, "activate", "--domain", "news.example")
	if code != 0 || !strings.Contains(out, "2 key(s)") {
		t.Fatalf("activate: exit %d, output %q", code, out)
	}

	code, out, _ = keysCLI(t, "list")
	if code != 0 || !strings.Contains(out, "revoked") || strings.Contains(out, "inactive") {
		t.Fatalf("list after changes: exit %d\n%s", code, out)
	}

	// Revoke by full key; the output does not repeat the key.
	code, out, errOut = keysCLI(t, "revoke", k1)
	if code != 0 || strings.Contains(out, k1) || strings.Contains(errOut, k1) {
		t.Fatalf("revoke by key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Check(ctx, k1, "news.example"); err == nil {
		t.Fatal("revoked key accepted")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(k1)) || bytes.Contains(data, []byte(k2)) {
		t.Fatal("key file holds a plaintext key")
	}
}

func TestKeysCLIErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	t.Setenv("WSPUBSUB_KEYS_FILE", path)
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	usage := [][]string{
		nil,
		{"frobnicate"},
		{"add"},
		{"add", "--domain"},
		{"add", "--bogus", "--domain", "d"},
		{"add", "--domain", "d", "extra"},
		{"list", "extra"},
		{"revoke"},
		{"revoke", "a", "b"},
		{"deactivate"},
	}
	for _, args := range usage {
		code, out, errOut := keysCLI(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "usage: wspubsub keys") {
			t.Errorf("keys %q: exit %d, stdout %q, stderr %q; want 2 and usage on stderr", args, code, out, errOut)
		}
	}
	// Help is not an error: usage on stdout, exit 0.
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"activate", "-h"}, {"list", "--help"}} {
		code, out, errOut := keysCLI(t, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "usage: wspubsub keys") {
			t.Errorf("keys %q: exit %d, stdout %q, stderr %q; want 0 and usage on stdout", args, code, out, errOut)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("bad usage created the key file")
	}

	failures := [][]string{
		{"revoke", unknown},
		{"revoke", "000000000000"},
		{"deactivate", "--domain", "none.example"},
		{"add", "--domain", "a/b"},
		{"add", "--domain", "d", "--keys-file", filepath.Join(dir, "missing-dir", "keys.json")},
	}
	for _, args := range failures {
		code, _, errOut := keysCLI(t, args...)
		if code != 1 || errOut == "" || strings.Contains(errOut, "usage:") {
			t.Errorf("keys %q: exit %d, stderr %q; want 1 with a message", args, code, errOut)
		}
		if strings.Contains(errOut, unknown) {
			t.Errorf("keys %q: stderr %q repeats the key", args, errOut)
		}
	}

	if err := os.WriteFile(path, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := keysCLI(t, "list")
	if code != 1 || !strings.Contains(errOut, "corrupt") {
		t.Fatalf("list of corrupt file: exit %d, stderr %q", code, errOut)
	}
}

// TestKeysListSaysWhichFile: `keys list` names the key file it read, as an
// absolute path, and says when it does not exist, instead of printing a bare
// empty table.
func TestKeysListSaysWhichFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("WSPUBSUB_KEYS_FILE", "")
	t.Setenv("WSPUBSUB_DATABASE_URL", "")
	abs := filepath.Join(dir, "wspubsub-keys.json")

	code, out, errOut := keysCLI(t, "list")
	if code != 0 || !strings.HasPrefix(out, "ID") {
		t.Fatalf("list without a key file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, abs) || !strings.Contains(errOut, "does not exist") {
		t.Errorf("list without a key file: stderr %q does not say %s does not exist", errOut, abs)
	}
	if _, err := os.Stat(abs); !os.IsNotExist(err) {
		t.Fatal("list created the key file")
	}

	if code, _, errOut = keysCLI(t, "add", "--domain", "d"); code != 0 {
		t.Fatalf("add: exit %d, stderr %q", code, errOut)
	}
	code, out, errOut = keysCLI(t, "list")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("list: exit %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, abs) || strings.Contains(errOut, "does not exist") {
		t.Errorf("list: stderr %q, want the key file %s named as existing", errOut, abs)
	}
}

// TestKeysListLastUsedThroughServe: with the key file, a publisher accepted
// by the real serve binary shows in `keys list`'s LAST USED column within a
// few seconds; a key nobody used keeps "-".
func TestKeysListLastUsedThroughServe(t *testing.T) {
	bin := buildBinary(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	used, unused := addKey(t, bin, keysFile, "test"), addKey(t, bin, keysFile, "test")
	usedID, unusedID := keys.ID(keys.Hash(used)), keys.ID(keys.Hash(unused))
	listen := freePort(t)
	startServe(t, bin, "--listen", listen, "--keys-file", keysFile)

	// lastUsedOf returns the LAST USED column of each key's row.
	lastUsedOf := func() map[string]string {
		out, err := exec.Command(bin, "keys", "list", "--keys-file", keysFile).Output()
		if err != nil {
			t.Fatalf("keys list: %v", err)
		}
		m := map[string]string{}
		for l := range strings.Lines(string(out)) {
			if f := strings.Fields(l); len(f) == 6 { // ID DOMAIN USERNAME CREATED LAST-USED STATUS
				m[f[0]] = f[4]
			}
		}
		return m
	}
	if m := lastUsedOf(); m[usedID] != "-" || m[unusedID] != "-" {
		t.Fatalf("before any use: %v", m)
	}

	var pub *websocket.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if pub, _, err = websocket.DefaultDialer.Dial("ws://"+listen+"/ws/pub/"+used+"/test/t", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publisher: %v", err)
		}
	}
	pub.Close()
	start := time.Now()
	for deadline := start.Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m := lastUsedOf()
		if at, err := time.Parse(time.RFC3339, m[usedID]); err == nil {
			if at.Before(start.Add(-time.Minute)) || at.After(time.Now()) {
				t.Fatalf("LAST USED %v, want about now", at)
			}
			if m[unusedID] != "-" {
				t.Fatalf("unused key has LAST USED %q", m[unusedID])
			}
			t.Logf("LAST USED shown %v after the publisher connected", time.Since(start))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("LAST USED still %q 10s after the publisher connected", m[usedID])
		}
	}
}
