package keys_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/keys/pgtest"
)

// store is what both stores offer; TestStoresAgree runs one script on each.
type store interface {
	Check(ctx context.Context, key, domain string) error
	Add(ctx context.Context, domain, username string) (string, error)
	List(ctx context.Context) ([]keys.Record, error)
	Revoke(ctx context.Context, keyOrID string) error
	SetActive(ctx context.Context, domain string, active bool) (int, error)
	Close() error
}

func TestStoresAgree(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) store{
		"file": func(t *testing.T) store { s, _ := openTemp(t); return s },
		"postgres": func(t *testing.T) store {
			// Invalidation comes from Watch; without it a short TTL keeps
			// the script's answers current.
			return openPG(t, pgtest.Database(t), pgstore.Config{CacheTTL: time.Nanosecond, NegativeTTL: time.Nanosecond})
		},
	} {
		t.Run(name, func(t *testing.T) { storeScript(t, open(t)) })
	}
}

func storeScript(t *testing.T, s store) {
	ctx := context.Background()
	check := func(key, domain string, want error) {
		t.Helper()
		if err := s.Check(ctx, key, domain); !errors.Is(err, want) {
			t.Fatalf("Check(%s, %q) = %v, want %v", keys.Redact(key), domain, err, want)
		}
	}
	add := func(domain, user string) string {
		t.Helper()
		k, err := s.Add(ctx, domain, user)
		if err != nil {
			t.Fatal(err)
		}
		if !keys.WellFormed(k) {
			t.Fatalf("Add returned malformed key %q", k)
		}
		return k
	}
	for _, d := range []string{"", strings.Repeat("a", 65), "a/b", "bad\xffutf8"} {
		if _, err := s.Add(ctx, d, ""); !errors.Is(err, keys.ErrBadDomain) {
			t.Errorf("Add(%q) = %v, want ErrBadDomain", d, err)
		}
	}
	if _, err := s.Add(ctx, "ok.example", strings.Repeat("u", 257)); !errors.Is(err, keys.ErrBadUsername) {
		t.Errorf("Add with long username = %v, want ErrBadUsername", err)
	}

	kb1 := add("b.example", "bob")
	ka := add("a.example", "alice")
	kb2 := add("b.example", "")
	kb3 := add("b.example", "carol") // a second key for a domain: rotation without downtime
	ku := add("ünïcödé.example", "")
	check(ka, "a.example", nil)
	check(kb1, "b.example", nil)
	check(kb2, "b.example", nil)
	check(ku, "ünïcödé.example", nil)
	check(ka, "b.example", keys.ErrRefused)
	check(ka, "A.example", keys.ErrRefused)
	check(mustGenerate(t), "a.example", keys.ErrRefused)
	check("f47ac10b-58cc-4372-a567-0e02b2c3d479", "a.example", keys.ErrRefused)
	check("garbage", "a.example", keys.ErrRefused)

	if err := s.Revoke(ctx, kb2); err != nil {
		t.Fatal(err)
	}
	h := keys.Hash(kb3)
	if err := s.Revoke(ctx, strings.ToUpper(keys.ID(h))); err != nil {
		t.Fatal(err)
	}
	check(kb2, "b.example", keys.ErrRefused)
	check(kb3, "b.example", keys.ErrRefused)
	check(kb1, "b.example", nil)
	recs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]time.Time{}
	for _, r := range recs {
		first[r.ID] = r.Revoked
	}
	if err := s.Revoke(ctx, kb2); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	for _, bad := range []string{mustGenerate(t), "000000000000", "garbage", ""} {
		err := s.Revoke(ctx, bad)
		if !errors.Is(err, keys.ErrNotFound) {
			t.Errorf("Revoke(%q) = %v, want ErrNotFound", bad, err)
		}
		if len(bad) == 42 && strings.Contains(err.Error(), bad) {
			t.Errorf("Revoke error %q contains the key", err)
		}
	}

	if n, err := s.SetActive(ctx, "b.example", false); err != nil || n != 3 {
		t.Fatalf("SetActive(false) = %d, %v; want 3, nil", n, err)
	}
	check(kb1, "b.example", keys.ErrRefused)
	if n, err := s.SetActive(ctx, "b.example", false); err != nil || n != 3 {
		t.Fatalf("second SetActive(false) = %d, %v; want 3, nil", n, err)
	}
	if n, err := s.SetActive(ctx, "b.example", true); err != nil || n != 3 {
		t.Fatalf("SetActive(true) = %d, %v; want 3, nil", n, err)
	}
	check(kb1, "b.example", nil)
	check(kb2, "b.example", keys.ErrRefused) // revoked is forever
	if _, err := s.SetActive(ctx, "none.example", true); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("SetActive of unknown domain = %v, want ErrNotFound", err)
	}

	recs, err = s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{ka, kb1, kb2, kb3, ku}
	if len(recs) != len(order) {
		t.Fatalf("List returned %d records, want %d", len(recs), len(order))
	}
	for i, k := range order {
		r := recs[i]
		if r.Hash != keys.Hash(k) || r.ID != keys.ID(r.Hash) || r.Created.IsZero() || r.Created.Location() != time.UTC {
			t.Fatalf("record %d is %+v, want key %s", i, r, keys.Redact(k))
		}
		if revoked := k == kb2 || k == kb3; revoked == r.Revoked.IsZero() {
			t.Fatalf("record %d revoked at %v", i, r.Revoked)
		}
		if !r.Revoked.IsZero() && !r.Revoked.Equal(first[r.ID]) {
			t.Fatalf("second Revoke moved the time from %v to %v", first[r.ID], r.Revoked)
		}
	}
	if recs[0].Username != "alice" || recs[1].Username != "bob" || !recs[1].Active {
		t.Fatalf("unexpected records %+v", recs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, ka, "a.example"); !errors.Is(err, keys.ErrClosed) {
		t.Fatalf("Check after Close = %v, want ErrClosed", err)
	}
}
