package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/keys/pgtest"
	"github.com/wspubsub/wspubsub/server"
)

// hubStore opens the store a hub would hold on url, watching for changes,
// and returns it with the channel its revocations arrive on.
func hubStore(t *testing.T, url string) (*pgstore.Store, chan [32]byte) {
	t.Helper()
	ctx := context.Background()
	s, err := pgstore.Open(ctx, url, pgstore.Config{CacheTTL: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	revoked := make(chan [32]byte, 16)
	if err := s.Watch(ctx, func(h [32]byte) { revoked <- h }); err != nil {
		t.Fatal(err)
	}
	return s, revoked
}

func wantRevoked(t *testing.T, ch chan [32]byte, key string) {
	t.Helper()
	select {
	case h := <-ch:
		if h != keys.Hash(key) {
			t.Fatalf("revocation of key %s, want %s", keys.ID(h), keys.ID(keys.Hash(key)))
		}
	case <-time.After(time.Second):
		t.Fatal("revocation not seen by the hub's store within a second")
	}
}

func TestKeysCLIPostgres(t *testing.T) {
	url := pgtest.Database(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	t.Setenv("WSPUBSUB_KEYS_FILE", keysFile)
	ctx := context.Background()

	code, _, errOut := keysCLI(t, "list", "--database-url", url)
	if code != 1 || !strings.Contains(errOut, "keys migrate") {
		t.Fatalf("list before migrate: exit %d, stderr %q; want advice to migrate", code, errOut)
	}
	code, out, errOut := keysCLI(t, "migrate", "--database-url", url)
	if code != 0 || !strings.Contains(out, "from version 0 to 2") {
		t.Fatalf("migrate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = keysCLI(t, "migrate", "--database-url", url)
	if code != 0 || !strings.Contains(out, "already at version 2") {
		t.Fatalf("second migrate: exit %d, stdout %q", code, out)
	}

	code, out, errOut = keysCLI(t, "add", "--database-url", url, "--domain", "news.example", "--username", "alice")
	if code != 0 {
		t.Fatalf("add: exit %d, stderr %q", code, errOut)
	}
	k1 := lastLine(out)
	t.Setenv("WSPUBSUB_DATABASE_URL", url) // the rest use the environment
	code, out, _ = keysCLI(t, "add", "--domain", "news.example")
	k2 := lastLine(out)
	if code != 0 || !keys.WellFormed(k1) || !keys.WellFormed(k2) || k1 == k2 {
		t.Fatalf("add via env: exit %d", code)
	}

	hub, revoked := hubStore(t, url)
	for _, k := range []string{k1, k2} {
		if err := hub.Check(ctx, k, "news.example"); err != nil {
			t.Fatalf("hub refuses a key the CLI added: %v", err)
		}
	}

	code, out, errOut = keysCLI(t, "list")
	if code != 0 {
		t.Fatalf("list: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "LAST USED") || !strings.Contains(lines[1], "alice") ||
		!strings.HasSuffix(lines[1], "active") || strings.Contains(out, k1) || strings.Contains(out, k2) {
		t.Fatalf("list output:\n%s", out)
	}

	// Revoke k2 by its list ID, the flag after the argument: the hub hears of it.
	id := strings.Fields(lines[2])[0]
	if id != keys.ID(keys.Hash(k2)) {
		t.Fatalf("list ID %q is not the ID of the second key", id)
	}
	if code, out, errOut = keysCLI(t, "revoke", id, "--database-url", url); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("revoke by ID: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	wantRevoked(t, revoked, k2)
	if err := hub.Check(ctx, k2, "news.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("revoked key: %v", err)
	}

	if code, _, _ = keysCLI(t, "deactivate", "--domain", "news.example"); code != 0 {
		t.Fatal("deactivate failed")
	}
	wantRevoked(t, revoked, k1)
	if err := hub.Check(ctx, k1, "news.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("deactivated key: %v", err)
	}
	code, out, _ = keysCLI(t, "activate", "--domain", "news.example")
	if code != 0 || !strings.Contains(out, "2 key(s)") {
		t.Fatalf("activate: exit %d, output %q", code, out)
	}
	deadline := time.Now().Add(time.Second)
	for hub.Check(ctx, k1, "news.example") != nil {
		if time.Now().After(deadline) {
			t.Fatal("activated key still refused after a second")
		}
		time.Sleep(10 * time.Millisecond)
	}

	code, out, errOut = keysCLI(t, "revoke", k1)
	if code != 0 || strings.Contains(out, k1) || strings.Contains(errOut, k1) {
		t.Fatalf("revoke by key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	wantRevoked(t, revoked, k1)
	code, out, _ = keysCLI(t, "list")
	if code != 0 || strings.Count(out, "revoked") != 2 {
		t.Fatalf("list after revoking both: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{
		{"revoke", "000000000000"},
		{"deactivate", "--domain", "none.example"},
		{"add", "--domain", "a/b"},
		{"import-legacy", "--table", "nosuch"},
		{"list", "--database-url", "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"},
	} {
		if code, _, errOut := keysCLI(t, args...); code != 1 || errOut == "" || strings.Contains(errOut, "usage:") {
			t.Errorf("keys %q: exit %d, stderr %q; want 1 with a message", args, code, errOut)
		}
	}
	if _, err := os.Stat(keysFile); !os.IsNotExist(err) {
		t.Fatal("the PostgreSQL commands wrote the key file")
	}
	if dump := dumpKeys(t, url); strings.Contains(dump, k1) || strings.Contains(dump, k2) {
		t.Fatal("a plaintext key in the table")
	}
}

func dumpKeys(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `select t::text from wspubsub_api_keys t`)
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(all, "\n")
}

func TestKeysCLIImportLegacy(t *testing.T) {
	url := pgtest.Database(t)
	pgtest.CreateOriginalTable(t, url)
	t.Setenv("WSPUBSUB_DATABASE_URL", url)
	ctx := context.Background()

	code, _, errOut := keysCLI(t, "import-legacy")
	if code != 1 || !strings.Contains(errOut, "keys migrate") {
		t.Fatalf("import before migrate: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ = keysCLI(t, "migrate"); code != 0 {
		t.Fatal("migrate failed")
	}
	code, out, errOut := keysCLI(t, "import-legacy")
	if code != 0 || !strings.Contains(out, "imported 1 key(s), 0 already present, 0 skipped") {
		t.Fatalf("import-legacy: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = keysCLI(t, "import-legacy", "--table", "public.apikeys")
	if code != 0 || !strings.Contains(out, "imported 0 key(s), 1 already present") {
		t.Fatalf("second import-legacy: exit %d, stdout %q", code, out)
	}

	// The original's row was inactive (the column defaults to false), and
	// stays so until activated here.
	hub, _ := hubStore(t, url)
	if err := hub.Check(ctx, pgtest.OriginalKey, "test"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("inactive original key: %v, want ErrRefused", err)
	}
	code, out, _ = keysCLI(t, "list")
	if code != 0 || !strings.Contains(out, "[email protected]") || !strings.HasSuffix(strings.TrimSpace(out), "inactive") {
		t.Fatalf("list after import: exit %d\n%s", code, out)
	}
	if code, _, _ = keysCLI(t, "activate", "--domain", "test"); code != 0 {
		t.Fatal("activate failed")
	}
	deadline := time.Now().Add(time.Second)
	for hub.Check(ctx, pgtest.OriginalKey, "test") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the original's key is refused after activation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(strings.ToLower(dumpKeys(t, url)), pgtest.OriginalKey) {
		t.Fatal("the original's key in plaintext in the new table")
	}

	for _, args := range [][]string{{"import-legacy", "extra"}, {"migrate", "extra"}, {"import-legacy", "--table"}} {
		if code, _, errOut := keysCLI(t, args...); code != 2 || !strings.Contains(errOut, "usage:") {
			t.Errorf("keys %q: exit %d, stderr %q; want usage", args, code, errOut)
		}
	}
	t.Setenv("WSPUBSUB_DATABASE_URL", "")
	for _, cmd := range []string{"migrate", "import-legacy"} {
		if code, _, errOut := keysCLI(t, cmd); code != 1 || !strings.Contains(errOut, "--database-url") {
			t.Errorf("keys %s without a database: exit %d, stderr %q", cmd, code, errOut)
		}
	}
}

// serve's wiring end to end: `serve --database-url --migrate` opens the
// store, a publisher connects with a key added by the CLI, and `keys revoke`
// closes it within a second with 4002.
func TestServeRevokesThroughCLI(t *testing.T) {
	url := pgtest.Database(t)
	t.Setenv("WSPUBSUB_DATABASE_URL", url)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sf := storeFlags{databaseURL: url}
	if _, err := sf.openServe(context.Background(), false, log); err == nil {
		t.Fatal("serve without --migrate opened an unmigrated database")
	}
	store, err := sf.openServe(context.Background(), true, log)
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
	if empty, err := store.empty(context.Background()); err != nil || !empty {
		t.Fatalf("empty = %v, %v", empty, err)
	}

	code, out, _ := keysCLI(t, "add", "--domain", "test")
	if code != 0 {
		t.Fatal("add failed")
	}
	key := lastLine(out)
	pub, _, err := websocket.DefaultDialer.Dial("ws://"+srv.Addr()+"/ws/pub/"+key+"/test/news", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	start := time.Now()
	if code, _, errOut := keysCLI(t, "revoke", key); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	pub.SetReadDeadline(start.Add(time.Second))
	_, _, err = pub.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "API key revoked or deactivated" {
		t.Fatalf("publisher of a revoked key: %v after %v, want close 4002 within a second", err, time.Since(start))
	}
	t.Logf("publisher closed %v after `keys revoke` started", time.Since(start))
}
