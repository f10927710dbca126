package filestore_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
)

// openTemp opens a Store on a fresh path in a temporary directory.
func openTemp(t testing.TB) (*filestore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	s, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func mustAdd(t testing.TB, s *filestore.Store, domain, user string) string {
	t.Helper()
	k, err := s.Add(context.Background(), domain, user)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wantCheck(t *testing.T, s *filestore.Store, key, domain string, want error) {
	t.Helper()
	if err := s.Check(context.Background(), key, domain); !errors.Is(err, want) {
		t.Fatalf("Check(%s, %q) = %v, want %v", keys.Redact(key), domain, err, want)
	}
}

func TestAddCheck(t *testing.T) {
	s, _ := openTemp(t)
	if !s.Empty() {
		t.Fatal("new store is not empty")
	}
	k := mustAdd(t, s, "news.example", "alice")
	if !keys.WellFormed(k) {
		t.Fatalf("Add returned malformed key %q", k)
	}
	if s.Empty() {
		t.Fatal("store with a key is empty")
	}
	other := mustAdd(t, s, "sport.example", "")
	wantCheck(t, s, k, "news.example", nil)
	wantCheck(t, s, other, "sport.example", nil)
	wantCheck(t, s, k, "sport.example", keys.ErrRefused)
	wantCheck(t, s, k, "News.example", keys.ErrRefused)
	wantCheck(t, s, k, "", keys.ErrRefused)
	wantCheck(t, s, mustGenerate(t), "news.example", keys.ErrRefused)
	wantCheck(t, s, "f47ac10b-58cc-4372-a567-0e02b2c3d479", "news.example", keys.ErrRefused)
	wantCheck(t, s, "garbage", "news.example", keys.ErrRefused)
	wantCheck(t, s, k[:41]+"!", "news.example", keys.ErrRefused)
}

func TestBadDomainAndUsername(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	for _, d := range []string{"", strings.Repeat("a", 65), "a/b", "/", "bad\xffutf8"} {
		if _, err := s.Add(ctx, d, ""); !errors.Is(err, keys.ErrBadDomain) {
			t.Errorf("Add(%q) = %v, want keys.ErrBadDomain", d, err)
		}
	}
	if _, err := s.Add(ctx, "ok.example", "bad\xff"); !errors.Is(err, keys.ErrBadUsername) {
		t.Errorf("Add with bad username = %v, want keys.ErrBadUsername", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed Adds created the file: %v", err)
	}
	for _, d := range []string{"a", strings.Repeat("a", 64), "ünïcödé.example", "with space"} {
		k := mustAdd(t, s, d, "")
		wantCheck(t, s, k, d, nil)
	}
}

func TestSetActive(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	k1 := mustAdd(t, s, "a.example", "")
	k2 := mustAdd(t, s, "a.example", "")
	kb := mustAdd(t, s, "b.example", "")

	n, err := s.SetActive(ctx, "a.example", false)
	if err != nil || n != 2 {
		t.Fatalf("SetActive(false) = %d, %v; want 2, nil", n, err)
	}
	wantCheck(t, s, k1, "a.example", keys.ErrRefused)
	wantCheck(t, s, k2, "a.example", keys.ErrRefused)
	wantCheck(t, s, kb, "b.example", nil)

	// Deactivating again changes nothing but still counts the keys.
	if n, err = s.SetActive(ctx, "a.example", false); err != nil || n != 2 {
		t.Fatalf("second SetActive(false) = %d, %v; want 2, nil", n, err)
	}
	if n, err = s.SetActive(ctx, "a.example", true); err != nil || n != 2 {
		t.Fatalf("SetActive(true) = %d, %v; want 2, nil", n, err)
	}
	wantCheck(t, s, k1, "a.example", nil)
	if _, err := s.SetActive(ctx, "none.example", true); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("SetActive of unknown domain = %v, want keys.ErrNotFound", err)
	}
}

func TestRevoke(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	byKey := mustAdd(t, s, "a.example", "")
	byID := mustAdd(t, s, "a.example", "")
	keep := mustAdd(t, s, "a.example", "")

	if err := s.Revoke(ctx, byKey); err != nil {
		t.Fatal(err)
	}
	h := keys.Hash(byID)
	id := strings.ToUpper(hex.EncodeToString(h[:6])) // IDs are accepted in any case
	if err := s.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, s, byKey, "a.example", keys.ErrRefused)
	wantCheck(t, s, byID, "a.example", keys.ErrRefused)
	wantCheck(t, s, keep, "a.example", nil)

	// Revoked is forever: reactivating the domain does not bring it back.
	if _, err := s.SetActive(ctx, "a.example", true); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, s, byKey, "a.example", keys.ErrRefused)

	// Revoking twice is fine and keeps the first time.
	before := revokedAt(t, s, byKey)
	if err := s.Revoke(ctx, byKey); err != nil {
		t.Fatal(err)
	}
	if after := revokedAt(t, s, byKey); !after.Equal(before) {
		t.Fatalf("second Revoke moved the time from %v to %v", before, after)
	}

	for _, bad := range []string{mustGenerate(t), "000000000000", "garbage", ""} {
		err := s.Revoke(ctx, bad)
		if !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("Revoke(%q) = %v, want keys.ErrNotFound", bad, err)
		}
		if len(bad) == 42 && strings.Contains(err.Error(), bad) {
			t.Errorf("Revoke error %q contains the key", err)
		}
	}
}

func revokedAt(t *testing.T, s *filestore.Store, key string) time.Time {
	t.Helper()
	recs, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Hash(key)
	for _, r := range recs {
		if r.Hash == h {
			if r.Revoked.IsZero() {
				t.Fatalf("key %s not revoked", r.ID)
			}
			return r.Revoked
		}
	}
	t.Fatalf("key %s not listed", keys.Redact(key))
	return time.Time{}
}

func TestListSortedAndPersistent(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	kb1 := mustAdd(t, s, "b.example", "bob")
	ka := mustAdd(t, s, "a.example", "alice")
	kb2 := mustAdd(t, s, "b.example", "")
	if err := s.Revoke(ctx, kb2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetActive(ctx, "a.example", false); err != nil {
		t.Fatal(err)
	}
	recs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{ka, kb1, kb2}
	if len(recs) != len(order) {
		t.Fatalf("List returned %d records, want %d", len(recs), len(order))
	}
	for i, k := range order {
		h := keys.Hash(k)
		if recs[i].Hash != h || recs[i].ID != hex.EncodeToString(h[:6]) {
			t.Fatalf("record %d is %+v, want key %s", i, recs[i], keys.Redact(k))
		}
		if recs[i].Created.IsZero() {
			t.Fatalf("record %d has no creation time", i)
		}
	}
	if recs[0].Active || recs[0].Username != "alice" || !recs[1].Active || recs[1].Username != "bob" || recs[2].Revoked.IsZero() {
		t.Fatalf("unexpected records %+v", recs)
	}

	s.Close()
	s2, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	recs2, err := s2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs2) != len(recs) {
		t.Fatalf("after reopen %d records, want %d", len(recs2), len(recs))
	}
	for i := range recs {
		a, b := recs[i], recs2[i]
		if a.ID != b.ID || a.Hash != b.Hash || a.Domain != b.Domain || a.Username != b.Username ||
			!a.Created.Equal(b.Created) || a.Active != b.Active || !a.Revoked.Equal(b.Revoked) {
			t.Fatalf("record %d changed across reopen:\n%+v\n%+v", i, a, b)
		}
	}
	wantCheck(t, s2, kb1, "b.example", nil)
	wantCheck(t, s2, ka, "a.example", keys.ErrRefused)
	wantCheck(t, s2, kb2, "b.example", keys.ErrRefused)
}

func TestFileContents(t *testing.T) {
	s, path := openTemp(t)
	var added []string
	for i := range 5 {
		added = append(added, mustAdd(t, s, "a.example", "user"+string(rune('0'+i))))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range added {
		if strings.Contains(string(data), k) || strings.Contains(string(data), k[4:36]) {
			t.Fatalf("key file contains a plaintext key:\n%s", data)
		}
		h := keys.Hash(k)
		if !strings.Contains(string(data), hex.EncodeToString(h[:])) {
			t.Fatalf("key file lacks the hex hash of a key:\n%s", data)
		}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	if string(top["version"]) != "1" {
		t.Fatalf("version = %s, want 1", top["version"])
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode %v, want 0600", perm)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "keys.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only keys.json", names)
	}
}

func TestMissingFileCreatesNothing(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	wantCheck(t, s, mustGenerate(t), "a.example", keys.ErrRefused)
	if recs, err := s.List(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("List = %v, %v; want empty", recs, err)
	}
	if err := s.Revoke(ctx, mustGenerate(t)); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Revoke = %v, want keys.ErrNotFound", err)
	}
	if _, err := s.SetActive(ctx, "a.example", false); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("SetActive = %v, want keys.ErrNotFound", err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Fatalf("store created %d files before any write", len(entries))
	}
}

func TestCorruptFile(t *testing.T) {
	k := mustGenerate(t)
	h := keys.Hash(k)
	good := `{"version":1,"keys":[{"hash":"` + hex.EncodeToString(h[:]) + `","domain":"a.example","created":"2024-01-02T03:04:05Z","active":true}]}`
	for name, content := range map[string]string{
		"empty":          "",
		"truncated":      good[:len(good)/2],
		"not json":       "hello",
		"null":           "null",
		"version 2":      strings.Replace(good, `"version":1`, `"version":2`, 1),
		"short hash":     strings.Replace(good, hex.EncodeToString(h[:]), "abcd", 1),
		"non-hex hash":   strings.Replace(good, hex.EncodeToString(h[:]), strings.Repeat("zz", 32), 1),
		"bad domain":     strings.Replace(good, "a.example", "a/b", 1),
		"duplicate":      strings.Replace(good, `}]}`, `},`+good[len(`{"version":1,"keys":[`):], 1),
		"unknown field":  strings.Replace(good, `"active"`, `"apikey":"x","active"`, 1),
		"trailing data":  good + "{}",
		"plaintext list": `["` + k + `"]`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := filestore.Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("Open of %s file succeeded", name)
			}
			if !errors.Is(err, filestore.ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open error %q: want ErrCorrupt naming the path", err)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.json")
		if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := filestore.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wantCheck(t, s, k, "a.example", nil)
	})
}

func TestCorruptedWhileOpen(t *testing.T) {
	s, path := openTemp(t)
	k := mustAdd(t, s, "a.example", "")
	filestore.SetReloadInterval(s, 0)
	if err := os.WriteFile(path, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, filestore.ErrCorrupt) {
		t.Fatalf("Reload = %v, want ErrCorrupt", err)
	}
	// The keys loaded before stay in force, and the broken file is not
	// overwritten by a write that would lose whatever it holds.
	wantCheck(t, s, k, "a.example", nil)
	if _, err := s.Add(context.Background(), "a.example", ""); !errors.Is(err, filestore.ErrCorrupt) {
		t.Fatalf("Add over corrupt file = %v, want ErrCorrupt", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "{broken" {
		t.Fatalf("corrupt file was overwritten with %q", data)
	}
}

func TestReloadVisibility(t *testing.T) {
	writer, path := openTemp(t)
	reader, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx := context.Background()

	// An explicit Reload sees another store's write at once.
	k1 := mustAdd(t, writer, "a.example", "")
	if err := reader.Reload(); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, k1, "a.example", nil)

	// Without Reload, and long before the periodic stat is due, Check
	// accepts a key another store has just added: a refusal looks at the
	// file first. The same for a domain just activated.
	filestore.SetReloadInterval(reader, time.Hour)
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, unknown, "a.example", keys.ErrRefused) // a stat, nothing changed
	k2 := mustAdd(t, writer, "a.example", "")
	wantCheck(t, reader, k2, "a.example", nil)
	wantCheck(t, reader, k2, "b.example", keys.ErrRefused)
	if _, err := writer.SetActive(ctx, "a.example", false); err != nil {
		t.Fatal(err)
	}
	if err := reader.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.SetActive(ctx, "a.example", true); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, k2, "a.example", nil)

	// Revocation and deactivation propagate the same way.
	filestore.SetReloadInterval(reader, 0)
	if err := writer.Revoke(ctx, k1); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, k1, "a.example", keys.ErrRefused)
	if _, err := writer.SetActive(ctx, "a.example", false); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, k2, "a.example", keys.ErrRefused)

	// A write through the reader keeps the writer's changes.
	k3 := mustAdd(t, reader, "b.example", "")
	if err := writer.Reload(); err != nil {
		t.Fatal(err)
	}
	recs, err := writer.List(ctx)
	if err != nil || len(recs) != 3 {
		t.Fatalf("List = %d records, %v; want 3", len(recs), err)
	}
	wantCheck(t, writer, k3, "b.example", nil)

	// Removing the file empties the store.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, reader, k3, "b.example", keys.ErrRefused)
	if !reader.Empty() {
		t.Fatal("store is not empty after its file was removed")
	}
}

func TestConcurrentCheckWhileAdding(t *testing.T) {
	s, path := openTemp(t)
	filestore.SetReloadInterval(s, time.Millisecond)
	other, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	filestore.SetReloadInterval(other, time.Millisecond)
	ctx := context.Background()
	k := mustAdd(t, s, "a.example", "")

	var stop atomic.Bool
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad := mustGenerate(t)
			for !stop.Load() {
				if s.Check(ctx, k, "a.example") != nil {
					failures.Add(1)
				}
				if s.Check(ctx, bad, "a.example") == nil {
					failures.Add(1)
				}
				other.Check(ctx, k, "a.example")
				s.Empty()
			}
		}()
	}
	var added []string
	for range 30 {
		added = append(added, mustAdd(t, s, "b.example", ""))
	}
	if _, err := s.SetActive(ctx, "b.example", false); err != nil {
		t.Fatal(err)
	}
	if _, err := other.List(ctx); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d wrong Check answers while keys were added", n)
	}
	if err := other.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, a := range added {
		wantCheck(t, other, a, "b.example", keys.ErrRefused)
	}
	wantCheck(t, other, k, "a.example", nil)
}

func TestCheckHitDoesNotAllocate(t *testing.T) {
	s, _ := openTemp(t)
	k := mustAdd(t, s, "a.example", "")
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() { _ = s.Check(ctx, k, "a.example") }); n != 0 {
		t.Fatalf("Check allocates %v times per accepted key", n)
	}
}

func TestClosed(t *testing.T) {
	s, _ := openTemp(t)
	k := mustAdd(t, s, "a.example", "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ctx := context.Background()
	if err := s.Check(ctx, k, "a.example"); !errors.Is(err, keys.ErrClosed) {
		t.Fatalf("Check after Close = %v", err)
	}
	if _, err := s.Add(ctx, "a.example", ""); !errors.Is(err, keys.ErrClosed) {
		t.Fatalf("Add after Close = %v", err)
	}
	if _, err := s.List(ctx); !errors.Is(err, keys.ErrClosed) {
		t.Fatalf("List after Close = %v", err)
	}
}

func BenchmarkCheck(b *testing.B) {
	s, _ := openTemp(b)
	for range 1000 {
		mustAdd(b, s, "other.example", "")
	}
	k := mustAdd(b, s, "a.example", "")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Check(ctx, k, "a.example"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckParallel(b *testing.B) {
	s, _ := openTemp(b)
	k := mustAdd(b, s, "a.example", "")
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Check(ctx, k, "a.example"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// lastUsed returns the LastUsed of the only record List returns.
func lastUsed(t *testing.T, s *filestore.Store) time.Time {
	t.Helper()
	recs, err := s.List(context.Background())
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	return recs[0].LastUsed
}

// TestFileLastUsed: an accepted Check is recorded as the key's last use, at
// most once per interval, in a file beside the key file that another store
// on the same key file (the CLI's) reads; the key file itself is not
// rewritten, and Close writes what is still queued.
func TestFileLastUsed(t *testing.T) {
	s, path := openTemp(t)
	filestore.SetLastUsedIntervals(s, time.Hour, 50*time.Millisecond)
	k := mustAdd(t, s, "a.example", "")
	other := mustAdd(t, s, "b.example", "")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	listed := func() map[string]time.Time {
		recs, err := cli.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]time.Time{}
		for _, r := range recs {
			m[r.Domain] = r.LastUsed
		}
		return m
	}
	if m := listed(); !m["a.example"].IsZero() || !m["b.example"].IsZero() {
		t.Fatalf("unused keys have last-used times %v", m)
	}

	start := time.Now().Truncate(time.Second)
	wantCheck(t, s, k, "a.example", nil)
	wantCheck(t, s, other, "a.example", keys.ErrRefused) // refused: not a use
	var first time.Time
	for deadline := time.Now().Add(5 * time.Second); first.IsZero(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no last-used time recorded: %s", filestore.LastUsedPath(path))
		}
		first = listed()["a.example"]
	}
	if first.Before(start) || first.After(time.Now()) {
		t.Fatalf("last used %v, want between %v and now", first, start)
	}
	if m := listed(); !m["b.example"].IsZero() {
		t.Fatalf("a refused Check recorded a use of b.example's key: %v", m)
	}

	// Within the interval a later use is not recorded, even at Close.
	time.Sleep(1100 * time.Millisecond) // the file keeps seconds
	wantCheck(t, s, k, "a.example", nil)
	time.Sleep(200 * time.Millisecond)
	if got := listed()["a.example"]; !got.Equal(first) {
		t.Fatalf("a use within the interval was recorded: %v, want %v", got, first)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatal("recording a use rewrote the key file")
	}

	// Past the interval it is (here: another store on the file, with no
	// interval, merging into what the first wrote), and Close writes it
	// before returning.
	s2, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	filestore.SetLastUsedIntervals(s2, 0, time.Hour)
	wantCheck(t, s2, k, "a.example", nil)
	s2.Close()
	if got := listed()["a.example"]; !got.After(first) {
		t.Fatalf("last used %v after Close, want later than %v", got, first)
	}
}

// TestCheckHitDoesNotAllocateWhileRecording: queuing a use for the writer
// does not allocate either, nor wait when the queue is full.
func TestCheckHitDoesNotAllocateWhileRecording(t *testing.T) {
	s, _ := openTemp(t)
	filestore.SetLastUsedIntervals(s, 0, time.Hour) // every Check queues a use
	k := mustAdd(t, s, "a.example", "")
	ctx := context.Background()
	if n := testing.AllocsPerRun(5000, func() { _ = s.Check(ctx, k, "a.example") }); n != 0 {
		t.Fatalf("Check allocates %v times per accepted key", n)
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
