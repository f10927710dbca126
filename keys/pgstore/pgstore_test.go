package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/keys/pgtest"
)

// logBuf collects a store's logs so that a test can search them.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openPG opens a PGStore on url, migrated, closed when the test ends.
func openPG(t testing.TB, url string, cfg pgstore.Config) *pgstore.Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := pgstore.Open(context.Background(), url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// query runs sql on url and returns the first column of every row as text.
func query(t testing.TB, url, sql string, args ...any) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%.60q: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		vals, err := r.Values()
		if err != nil || len(vals) == 0 {
			return "", err
		}
		return fmt.Sprint(vals[0]), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPGMigrate(t *testing.T) {
	url := pgtest.Database(t)
	ctx := context.Background()
	s, err := pgstore.Open(ctx, url, pgstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CheckSchema(ctx); !errors.Is(err, pgstore.ErrSchema) {
		t.Fatalf("CheckSchema before Migrate = %v, want ErrSchema", err)
	}
	if _, err := s.Add(ctx, "a.example", ""); err == nil {
		t.Fatal("Add before Migrate succeeded")
	}
	from, to, err := s.Migrate(ctx)
	if err != nil || from != 0 || to != pgstore.SchemaVersion() {
		t.Fatalf("Migrate = %d, %d, %v; want 0, %d, nil", from, to, err, pgstore.SchemaVersion())
	}
	k, err := s.Add(ctx, "a.example", "")
	if err != nil {
		t.Fatal(err)
	}
	from, to, err = s.Migrate(ctx)
	if err != nil || from != pgstore.SchemaVersion() || to != pgstore.SchemaVersion() {
		t.Fatalf("second Migrate = %d, %d, %v; want no change", from, to, err)
	}
	if err := s.CheckSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, k, "a.example"); err != nil {
		t.Fatalf("key added before the second Migrate: %v", err)
	}
	got := query(t, url, `select version from wspubsub_schema_migrations order by version`)
	if len(got) != pgstore.SchemaVersion() {
		t.Fatalf("versions recorded: %v", got)
	}

	// Servers started together migrate one after the other.
	url2 := pgtest.Database(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := pgstore.Open(ctx, url2, pgstore.Config{})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			_, _, err = s.Migrate(ctx)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}

	// A database migrated by a newer build is left alone.
	pgtest.Exec(t, url, `insert into wspubsub_schema_migrations (version) values (999)`)
	if _, _, err := s.Migrate(ctx); !errors.Is(err, pgstore.ErrSchema) {
		t.Fatalf("Migrate of a newer schema = %v, want ErrSchema", err)
	}
	if err := s.CheckSchema(ctx); !errors.Is(err, pgstore.ErrSchema) {
		t.Fatalf("CheckSchema of a newer schema = %v, want ErrSchema", err)
	}
}

// The database holds hashes only, and nothing the store logs holds a key.
func TestPGNoPlaintext(t *testing.T) {
	url := pgtest.Database(t)
	var logs logBuf
	s := openPG(t, url, pgstore.Config{Logger: logs.logger(), LastUsedEvery: 10 * time.Millisecond})
	ctx := context.Background()
	var added []string
	for i := range 5 {
		k, err := s.Add(ctx, "a.example", fmt.Sprint("user", i))
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, k)
		if err := s.Check(ctx, k, "a.example"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke(ctx, added[0]); err != nil {
		t.Fatal(err)
	}
	s.Close() // writes the last-used times, logs whatever it logs
	dump := strings.Join(query(t, url, `select t::text from wspubsub_api_keys t`), "\n")
	if !strings.Contains(dump, "user4") {
		t.Fatalf("dump does not look like the table:\n%s", dump)
	}
	for _, k := range added {
		for _, hay := range []string{dump, logs.String()} {
			if strings.Contains(hay, k) || strings.Contains(hay, k[4:36]) {
				t.Fatalf("plaintext key in the table or the logs:\n%s", hay)
			}
		}
	}
}

const legacyKey = pgtest.OriginalKey

func TestPGImportLegacy(t *testing.T) {
	url := pgtest.Database(t)
	pgtest.CreateOriginalTable(t, url)
	const (
		inactiveKey = "0b6d2c1e-8c3f-4f6a-9d2b-7e5a1c3b9f10"
		upperKey    = "A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D"
	)
	pgtest.Exec(t, url, `update apikeys set active = true`)
	pgtest.Exec(t, url, `insert into apikeys (domain, username, apikey, active, insert_ts) values
		('old.example', 'bob', $1, false, '2019-05-06 07:08:09'),
		('upper.example', '', $2, true, now()),
		('bad/domain', 'eve', '6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b', true, now()),
		('notakey.example', 'mallory', 'not a uuid', true, now())`, inactiveKey, upperKey)
	snapshot := func() string {
		return strings.Join(query(t, url, `select t::text from apikeys t order by id`), "\n")
	}
	before := snapshot()

	var logs logBuf
	s := openPG(t, url, pgstore.Config{Logger: logs.logger(), CacheTTL: time.Nanosecond, NegativeTTL: time.Nanosecond})
	ctx := context.Background()
	res, err := s.ImportLegacy(ctx, "apikeys")
	if err != nil {
		t.Fatal(err)
	}
	if res.Read != 5 || res.Imported != 3 || res.Present != 0 || len(res.Skipped) != 2 {
		t.Fatalf("first import: %+v", res)
	}
	for _, sk := range res.Skipped {
		if sk.ID != 4 && sk.ID != 5 || sk.Reason == "" {
			t.Fatalf("skipped %+v", sk)
		}
	}
	if err := s.Check(ctx, legacyKey, "test"); err != nil {
		t.Fatalf("the original's key: %v", err)
	}
	if err := s.Check(ctx, legacyKey, "old.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("the original's key in another domain: %v", err)
	}
	if err := s.Check(ctx, inactiveKey, "old.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("inactive legacy key: %v, want ErrRefused", err)
	}
	if err := s.Check(ctx, upperKey, "upper.example"); err != nil {
		t.Fatalf("upper-case legacy key as stored: %v", err)
	}
	// Keys are compared exactly, as the original did.
	if err := s.Check(ctx, strings.ToLower(upperKey), "upper.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("lower-cased form of an upper-case key: %v, want ErrRefused", err)
	}
	if err := s.Check(ctx, strings.ToUpper(legacyKey), "test"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("upper-cased form of a lower-case key: %v, want ErrRefused", err)
	}

	recs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var old keys.Record
	for _, r := range recs {
		if r.Domain == "old.example" {
			old = r
		}
	}
	if old.Username != "bob" || old.Active || old.Hash != keys.Hash(inactiveKey) {
		t.Fatalf("imported record %+v", old)
	}
	var tz string
	if err := func() error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.QueryRow(ctx, `show timezone`).Scan(&tz)
	}(); err != nil {
		t.Fatal(err)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2019, 5, 6, 7, 8, 9, 0, loc); !old.Created.Equal(want) {
		t.Fatalf("created %v, want insert_ts %v", old.Created, want)
	}

	// Changes made here survive a second import, which adds only new rows.
	if _, err := s.SetActive(ctx, "old.example", true); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, upperKey); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, `insert into apikeys (domain, username, apikey, active) values ('new.example', 'nina', '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d', true)`)
	before2 := snapshot()
	res, err = s.ImportLegacy(ctx, "public.apikeys")
	if err != nil {
		t.Fatal(err)
	}
	if res.Read != 6 || res.Imported != 1 || res.Present != 3 || len(res.Skipped) != 2 {
		t.Fatalf("second import: %+v", res)
	}
	if err := s.Check(ctx, inactiveKey, "old.example"); err != nil {
		t.Fatalf("key activated here, after re-import: %v", err)
	}
	if err := s.Check(ctx, upperKey, "upper.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("key revoked here, after re-import: %v", err)
	}
	if err := s.Check(ctx, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "new.example"); err != nil {
		t.Fatal(err)
	}
	res, err = s.ImportLegacy(ctx, "apikeys")
	if err != nil || res.Imported != 0 || res.Present != 4 {
		t.Fatalf("third import: %+v, %v", res, err)
	}

	// The old table is only read.
	if after := snapshot(); after != before2 || !strings.HasPrefix(after, before) {
		t.Fatalf("the original's table changed:\n%s\n---\n%s", before2, after)
	}
	dump := strings.Join(query(t, url, `select t::text from wspubsub_api_keys t`), "\n")
	for _, k := range []string{legacyKey, inactiveKey, upperKey} {
		if strings.Contains(strings.ToLower(dump), strings.ToLower(k)) || strings.Contains(logs.String(), k) {
			t.Fatal("a legacy key in plaintext in the new table or the logs")
		}
	}

	for _, bad := range []string{"", "a.b.c", ".apikeys", "nosuchtable"} {
		if _, err := s.ImportLegacy(ctx, bad); err == nil {
			t.Errorf("ImportLegacy(%q) succeeded", bad)
		}
	}
	// A quoted name cannot inject SQL.
	if _, err := s.ImportLegacy(ctx, `apikeys; drop table apikeys`); err == nil {
		t.Error("ImportLegacy of an injected name succeeded")
	}
	if snapshot() != before2 {
		t.Fatal("the original's table changed")
	}
}

// watcher collects the hashes a PGStore's Watch reports.
type watcher struct {
	ch chan [32]byte
}

func watch(t *testing.T, s *pgstore.Store) *watcher {
	t.Helper()
	w := &watcher{ch: make(chan [32]byte, 100)}
	if err := s.Watch(context.Background(), func(h [32]byte) { w.ch <- h }); err != nil {
		t.Fatal(err)
	}
	return w
}

// expect waits up to d for the hashes of keys to be reported, in any order.
func (w *watcher) expect(t *testing.T, d time.Duration, ks ...string) {
	t.Helper()
	want := map[[32]byte]bool{}
	for _, k := range ks {
		want[keys.Hash(k)] = true
	}
	deadline := time.After(d)
	for len(want) > 0 {
		select {
		case h := <-w.ch:
			if !want[h] {
				t.Fatalf("reported key %s, want one of %d others", keys.ID(h), len(want))
			}
			delete(want, h)
		case <-deadline:
			t.Fatalf("%d key(s) not reported within %v", len(want), d)
		}
	}
}

func (w *watcher) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case h := <-w.ch:
		t.Fatalf("unexpected report of key %s", keys.ID(h))
	case <-time.After(d):
	}
}

// Changes made by another process (the CLI) reach a watching store at once,
// whatever its TTLs.
func TestPGWatch(t *testing.T) {
	url := pgtest.Database(t)
	var logs logBuf
	hub := openPG(t, url, pgstore.Config{CacheTTL: time.Hour, NegativeTTL: time.Hour, Logger: logs.logger()})
	cli := openPG(t, url, pgstore.Config{})
	ctx := context.Background()
	w := watch(t, hub)
	if err := hub.Watch(ctx, func([32]byte) {}); err == nil {
		t.Fatal("second Watch succeeded")
	}

	k1, _ := cli.Add(ctx, "a.example", "")
	k2, _ := cli.Add(ctx, "a.example", "")
	k3, _ := cli.Add(ctx, "b.example", "")
	for _, k := range []string{k1, k2} {
		if err := hub.Check(ctx, k, "a.example"); err != nil {
			t.Fatal(err)
		}
	}
	if err := hub.Check(ctx, k3, "b.example"); err != nil {
		t.Fatal(err)
	}
	w.none(t, 100*time.Millisecond) // adding a key revokes nothing

	start := time.Now()
	if err := cli.Revoke(ctx, k1); err != nil {
		t.Fatal(err)
	}
	w.expect(t, time.Second, k1)
	t.Logf("revocation reported %v after Revoke returned", time.Since(start))
	if err := hub.Check(ctx, k1, "a.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("revoked key still accepted from the cache: %v", err)
	}

	if _, err := cli.SetActive(ctx, "a.example", false); err != nil {
		t.Fatal(err)
	}
	w.expect(t, time.Second, k2) // not k1: it was revoked already
	if err := hub.Check(ctx, k2, "a.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("deactivated key still accepted: %v", err)
	}
	// Activating drops the cached refusal (NegativeTTL is an hour) and
	// revokes nothing.
	if _, err := cli.SetActive(ctx, "a.example", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() bool { return hub.Check(ctx, k2, "a.example") == nil })
	w.none(t, 100*time.Millisecond)

	// A key moved to another domain is revoked where it was.
	pgtest.Exec(t, url, `update wspubsub_api_keys set domain = 'c.example' where key_hash = $1`, hashBytes(k3))
	w.expect(t, time.Second, k3)
	if err := hub.Check(ctx, k3, "b.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("moved key accepted in its old domain: %v", err)
	}
	// Writing a last-used time notifies nobody.
	pgtest.Exec(t, url, `update wspubsub_api_keys set last_used_at = now(), username = 'x'`)
	w.none(t, 200*time.Millisecond)
	// Deleting rows revokes their keys.
	pgtest.Exec(t, url, `delete from wspubsub_api_keys where key_hash = $1`, hashBytes(k2))
	w.expect(t, time.Second, k2)
	// A truncate revokes every key the hub had accepted (here k3 in c.example).
	if err := hub.Check(ctx, k3, "c.example"); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, `truncate wspubsub_api_keys`)
	w.expect(t, time.Second, k3)
	if err := hub.Check(ctx, k3, "c.example"); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("key accepted after truncate: %v", err)
	}
}

func hashBytes(k string) []byte {
	h := keys.Hash(k)
	return h[:]
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
	}
}

// When the listening connection is cut, the store reconnects, and a key
// revoked while it was not listening is still reported.
func TestPGWatchReconnect(t *testing.T) {
	url := pgtest.Database(t)
	var logs logBuf
	hub := openPG(t, url, pgstore.Config{CacheTTL: time.Hour, Logger: logs.logger()})
	cli := openPG(t, url, pgstore.Config{})
	ctx := context.Background()
	w := watch(t, hub)
	k1, _ := cli.Add(ctx, "a.example", "")
	k2, _ := cli.Add(ctx, "a.example", "")
	for _, k := range []string{k1, k2} {
		if err := hub.Check(ctx, k, "a.example"); err != nil {
			t.Fatal(err)
		}
	}
	// Cut the LISTEN connection and revoke in the same breath: the
	// notification goes to a connection that is dying.
	pgtest.Exec(t, url, `select pg_terminate_backend(pid) from pg_stat_activity
		where datname = current_database() and query like 'listen %'`)
	if err := cli.Revoke(ctx, k1); err != nil {
		t.Fatal(err)
	}
	// The fault path: reconnect with backoff, then recheck. Generous for a
	// loaded machine; the normal path's one second is checked below.
	w.expect(t, 10*time.Second, k1)
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "listening for key changes again") })
	if err := cli.Revoke(ctx, k2); err != nil {
		t.Fatal(err)
	}
	w.expect(t, time.Second, k2)
	if !strings.Contains(logs.String(), "lost the connection that listens") {
		t.Fatalf("the lost connection was not logged:\n%s", logs.String())
	}
}

// A cached key costs no query; with the cache off every Check queries, and
// concurrent Checks of one key share a query either way.
func TestPGCache(t *testing.T) {
	url := pgtest.Database(t)
	ctx := context.Background()
	for _, size := range []int{0, -1} {
		s := openPG(t, url, pgstore.Config{CacheSize: size})
		k, err := s.Add(ctx, fmt.Sprint("d", size), "")
		if err != nil {
			t.Fatal(err)
		}
		for range 100 {
			if err := s.Check(ctx, k, fmt.Sprint("d", size)); err != nil {
				t.Fatal(err)
			}
		}
		bad := mustGenerate(t)
		for range 10 {
			if err := s.Check(ctx, bad, "d"); !errors.Is(err, keys.ErrRefused) {
				t.Fatal(err)
			}
		}
		want := int64(2)
		if size < 0 {
			want = 110
		}
		if st := s.CacheStats(); st.Fetches != want {
			t.Fatalf("cache size %d: %d queries for 110 Checks, want %d", size, st.Fetches, want)
		}
		var wg sync.WaitGroup
		k2, _ := s.Add(ctx, "e", "")
		before := s.CacheStats().Fetches
		for range 20 {
			wg.Go(func() { s.Check(ctx, k2, "e") })
		}
		wg.Wait()
		if n := s.CacheStats().Fetches - before; n > 10 {
			t.Fatalf("cache size %d: %d queries for 20 concurrent Checks of one key", size, n)
		}
	}
}

func TestPGCheckDoesNotAllocate(t *testing.T) {
	s := openPG(t, pgtest.Database(t), pgstore.Config{LastUsedEvery: time.Hour})
	ctx := context.Background()
	k, _ := s.Add(ctx, "a.example", "")
	if err := s.Check(ctx, k, "a.example"); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { s.Check(ctx, k, "a.example") }); n != 0 {
		t.Fatalf("cached Check allocates %v times", n)
	}
}

func TestPGLastUsed(t *testing.T) {
	url := pgtest.Database(t)
	const every = 300 * time.Millisecond
	s := openPG(t, url, pgstore.Config{LastUsedEvery: every})
	ctx := context.Background()
	k, _ := s.Add(ctx, "a.example", "")
	other, _ := s.Add(ctx, "a.example", "")
	lastUsed := func() (time.Time, time.Time) {
		recs, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var a, b time.Time
		for _, r := range recs {
			switch r.Hash {
			case keys.Hash(k):
				a = r.LastUsed
			case keys.Hash(other):
				b = r.LastUsed
			}
		}
		return a, b
	}
	if a, _ := lastUsed(); !a.IsZero() {
		t.Fatal("new key has a last-used time")
	}
	if err := s.Check(ctx, k, "a.example"); err != nil {
		t.Fatal(err)
	}
	var first time.Time
	waitFor(t, 5*time.Second, func() bool { first, _ = lastUsed(); return !first.IsZero() })
	// More uses within the interval write nothing.
	for range 50 {
		s.Check(ctx, k, "a.example")
	}
	time.Sleep(every / 2)
	if a, b := lastUsed(); !a.Equal(first) || !b.IsZero() {
		t.Fatalf("last used moved within the interval (%v to %v), or an unused key got one (%v)", first, a, b)
	}
	// After the interval the next use is written again.
	time.Sleep(every)
	s.Check(ctx, k, "a.example")
	waitFor(t, 5*time.Second, func() bool { a, _ := lastUsed(); return a.After(first) })
}

// A store that cannot reach its database fails to open, with the reason.
func TestPGOpenUnreachable(t *testing.T) {
	ctx := context.Background()
	_, err := pgstore.Open(ctx, "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", pgstore.Config{})
	if err == nil {
		t.Fatal("OpenPG of a closed port succeeded")
	}
	if _, err := pgstore.Open(ctx, "postgres://[bad", pgstore.Config{}); err == nil {
		t.Fatal("OpenPG of a bad URL succeeded")
	}
}

// BenchmarkCheckPG is an accepted Check of PGStore, answered by its cache
// or, with the cache off, by a query; compare filestore's BenchmarkCheck.
func BenchmarkCheckPG(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, s *pgstore.Store, key string) {
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := s.Check(ctx, key, "a.example"); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, bc := range []struct {
		name string
		size int
	}{{"pg-cached", 0}, {"pg-nocache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openPG(b, pgtest.Database(b), pgstore.Config{CacheSize: bc.size})
			k, err := s.Add(ctx, "a.example", "")
			if err != nil {
				b.Fatal(err)
			}
			run(b, s, k)
		})
	}
}

func mustGenerate(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
