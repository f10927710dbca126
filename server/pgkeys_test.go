package server_test

// Tests of the hub with its keys in PostgreSQL (pgstore.Store), wired as
// `wspubsub serve --database-url` wires it: revocations noticed by the
// store's Watch close the key's live publishers through KeyRevoked.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/keys/pgtest"
	"github.com/wspubsub/wspubsub/server"
)

// pgLog collects logs so that a test can wait for a line.
type pgLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *pgLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *pgLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// pgHub is a real hub whose keys are in the PostgreSQL database at url.
type pgHub struct {
	*hub
	store *pgstore.Store
	log   *pgLog
}

// startPGHub migrates the database at url and starts a hub on it.
func startPGHub(t testing.TB, url string, cfg pgstore.Config) *pgHub {
	t.Helper()
	ctx := context.Background()
	l := &pgLog{}
	cfg.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := pgstore.Open(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after the hub's Shutdown, registered later
	if _, _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var srv atomic.Pointer[server.Server]
	if err := store.Watch(ctx, func(h [32]byte) {
		if s := srv.Load(); s != nil {
			s.KeyRevoked(h)
		}
	}); err != nil {
		t.Fatal(err)
	}
	h := startHub(t, func(c *server.Config) {
		c.Keys = store
		c.Logger = slog.New(slog.NewTextHandler(l, nil))
	})
	srv.Store(h.Server)
	return &pgHub{hub: h, store: store, log: l}
}

// pgAdd adds a key with a store of its own, as the CLI would.
func pgAdd(t testing.TB, url, domain string) string {
	t.Helper()
	var k string
	pgAdmin(t, url, func(s *pgstore.Store) (err error) {
		k, err = s.Add(context.Background(), domain, "tester")
		return err
	})
	return k
}

// pgAdmin runs fn on a store of its own, as the CLI would.
func pgAdmin(t testing.TB, url string, fn func(s *pgstore.Store) error) {
	t.Helper()
	s, err := pgstore.Open(context.Background(), url, pgstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := fn(s); err != nil {
		t.Fatal(err)
	}
}

// pgClosedWithin waits up to d for c to be closed with code and reason,
// and returns how long it took.
func pgClosedWithin(t testing.TB, c *websocket.Conn, d time.Duration, code int, reason string) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Text != reason {
			t.Fatalf("after %v: %v, want close %d %q within %v", time.Since(start), err, code, reason, d)
		}
		return time.Since(start)
	}
}

// pgPublish sends a message and checks that a subscriber gets it.
func pgPublish(t testing.TB, p, s *websocket.Conn, msg string) {
	t.Helper()
	if err := p.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.TextMessage, []byte(msg))
}

func pubPath(key, domain, topic string) string {
	return fmt.Sprintf("/ws/pub/%s/%s/%s", key, domain, topic)
}

// A key revoked or deactivated with the CLI closes its live publishers, and
// only them, within a second, with 4002.
func TestPGRevokedPublisherClosed(t *testing.T) {
	url := pgtest.Database(t)
	h := startPGHub(t, url, pgstore.Config{CacheTTL: time.Hour})
	k1, k2, k3 := pgAdd(t, url, "test"), pgAdd(t, url, "test"), pgAdd(t, url, "other")
	p1 := h.dial(t, pubPath(k1, "test", "one"), nil)
	p1b := h.dial(t, pubPath(k1, "test", "two"), nil)
	p2 := h.dial(t, pubPath(k2, "test", "three"), nil)
	p3 := h.dial(t, pubPath(k3, "other", "four"), nil)
	s1 := h.sub(t, "test", "one")
	s2 := h.sub(t, "test", "three")
	pgPublish(t, p1, s1, "before")

	const reason = "API key revoked or deactivated"
	start := time.Now()
	pgAdmin(t, url, func(s *pgstore.Store) error { return s.Revoke(context.Background(), k1) })
	for _, p := range []*websocket.Conn{p1, p1b} {
		pgClosedWithin(t, p, time.Second-time.Since(start), 4002, reason)
	}
	t.Logf("publishers of the revoked key closed %v after the revocation began", time.Since(start))
	pgPublish(t, p2, s2, "k2 still publishes")
	if code := h.refused(t, pubPath(k1, "test", "one"), nil); code != 401 {
		t.Fatalf("handshake with a revoked key: %d, want 401", code)
	}

	start = time.Now()
	pgAdmin(t, url, func(s *pgstore.Store) error {
		_, err := s.SetActive(context.Background(), "test", false)
		return err
	})
	pgClosedWithin(t, p2, time.Second-time.Since(start), 4002, reason)
	if err := p3.WriteMessage(websocket.TextMessage, []byte("other domain")); err != nil {
		t.Fatal(err)
	}
	if code := h.refused(t, pubPath(k2, "test", "five"), nil); code != 401 {
		t.Fatalf("handshake with a deactivated key: %d, want 401", code)
	}
	pgAdmin(t, url, func(s *pgstore.Store) error {
		_, err := s.SetActive(context.Background(), "test", true)
		return err
	})
	deadline := time.Now().Add(time.Second)
	for {
		c, _, err := dialer.Dial(h.url+pubPath(k2, "test", "five"), nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reactivated key still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The database stops under a connected hub and starts again: nothing
// connected is dropped, cached keys keep working, unknown keys get 503, and
// the hub recovers by itself (queries, and revocations through LISTEN).
func TestPGDatabaseRestart(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := cluster.URL()
	h := startPGHub(t, url, pgstore.Config{})
	k1, k2 := pgAdd(t, url, "test"), pgAdd(t, url, "test")
	p1 := h.dial(t, pubPath(k1, "test", "live"), nil)
	s1 := h.sub(t, "test", "live")
	h.dial(t, pubPath(k2, "test", "warm"), nil).Close() // k2 is now cached
	pgPublish(t, p1, s1, "before")

	cluster.Stop()
	waitUntil(t, 5*time.Second, func() bool { return h.log.has("lost the connection that listens") })
	pgPublish(t, p1, s1, "while the database is down")

	start := time.Now()
	c := h.dial(t, pubPath(k2, "test", "cached"), nil)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("handshake with a cached key took %v while the database is down", d)
	}
	pgPublish(t, c, h.sub(t, "test", "cached"), "cached key")
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if code := h.refused(t, pubPath(unknown, "test", "x"), nil); code != 503 {
			t.Fatalf("unknown key while the database is down: %d, want 503", code)
		}
	}
	if !h.log.has("cannot query the key database") {
		t.Error("the outage was not logged")
	}
	pgPublish(t, p1, s1, "still here")

	cluster.Start()
	// Recovery: an unknown key is refused for what it is, a new key works,
	// and revocations reach live publishers again.
	waitUntil(t, 15*time.Second, func() bool {
		c, resp, err := dialer.Dial(h.url+pubPath(unknown, "test", "x"), nil)
		if err == nil {
			c.Close()
		}
		return resp != nil && resp.StatusCode == 401
	})
	k3 := pgAdd(t, url, "test")
	h.dial(t, pubPath(k3, "test", "new"), nil)
	waitUntil(t, 15*time.Second, func() bool { return h.log.has("listening for key changes again") })
	pgPublish(t, p1, s1, "after")
	start = time.Now()
	pgAdmin(t, url, func(s *pgstore.Store) error { return s.Revoke(context.Background(), k1) })
	pgClosedWithin(t, p1, time.Second-time.Since(start), 4002, "API key revoked or deactivated")
}

// waitUntil polls cond every 20ms until it holds, failing after d.
func waitUntil(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
	}
}

// BenchmarkHandshake measures publisher handshakes per second over
// 127.0.0.1 with real clients, by key store. A cached PostgreSQL key should
// cost about what the in-memory key file costs; with the cache off each
// handshake waits for a query. Each client goroutine has a key of its own,
// so that with the cache off concurrent handshakes do not share queries.
func BenchmarkHandshake(b *testing.B) {
	const parallelism = 8 // client goroutines per GOMAXPROCS
	nkeys := parallelism * runtime.GOMAXPROCS(0)
	b.Run("file", func(b *testing.B) {
		h := startHub(b, func(c *server.Config) { c.GracePeriod = -1 })
		ks := make([]string, nkeys)
		for i := range ks {
			k, err := h.keys.Add(context.Background(), "test", "bench")
			if err != nil {
				b.Fatal(err)
			}
			ks[i] = k
		}
		benchHandshakes(b, h, ks, parallelism)
	})
	for _, bc := range []struct {
		name string
		size int
	}{{"pg-cached", 0}, {"pg-nocache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			url := pgtest.Database(b)
			ctx := context.Background()
			store, err := pgstore.Open(ctx, url, pgstore.Config{CacheSize: bc.size})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			if _, _, err := store.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			ks := make([]string, nkeys)
			for i := range ks {
				if ks[i], err = store.Add(ctx, "test", "bench"); err != nil {
					b.Fatal(err)
				}
			}
			h := startHub(b, func(c *server.Config) { c.Keys = store; c.GracePeriod = -1 })
			before := store.CacheStats().Fetches
			benchHandshakes(b, h, ks, parallelism)
			b.ReportMetric(float64(store.CacheStats().Fetches-before)/float64(b.N), "queries/op")
		})
	}
}

var benchTopic atomic.Int64

func benchHandshakes(b *testing.B, h *hub, ks []string, parallelism int) {
	var next atomic.Int64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := ks[int(next.Add(1)-1)%len(ks)]
		for pb.Next() {
			path := pubPath(key, "test", fmt.Sprint("t", benchTopic.Add(1)))
			c, resp, err := dialer.Dial(h.url+path, nil)
			if err != nil {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				b.Fatalf("handshake: %v (status %d)", err, status)
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}
