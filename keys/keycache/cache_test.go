package keycache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/keys/keycache"
)

// clock is a fake monotonic clock for a test.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Duration      { return time.Duration(c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newCache(t *testing.T, cfg keycache.Config) (*keycache.Cache[string], *clock) {
	t.Helper()
	c := keycache.New[string](cfg)
	var clk clock
	keycache.SetClock(c, clk.now)
	return c, &clk
}

// store is a fake key store that counts its queries.
type store struct {
	mu      sync.Mutex
	answers map[[32]byte]string // present: positive
	err     error
	calls   atomic.Int64
}

func (s *store) fetch(h [32]byte) keycache.Fetch[string] {
	return func(context.Context, [32]byte) (string, bool, error) {
		s.calls.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil {
			return "", false, s.err
		}
		v, ok := s.answers[h]
		return v, ok, nil
	}
}

func (s *store) set(h [32]byte, v string, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answers == nil {
		s.answers = map[[32]byte]string{}
	}
	if ok {
		s.answers[h] = v
	} else {
		delete(s.answers, h)
	}
	s.err = err
}

func hash(b byte) [32]byte { return [32]byte{b, b, 1} }

// load calls Load and checks its answer.
func load(t *testing.T, c *keycache.Cache[string], s *store, h [32]byte, wantV string, wantPos bool, wantErr error) {
	t.Helper()
	v, pos, err := c.Load(context.Background(), h, s.fetch(h))
	if v != wantV || pos != wantPos || !errors.Is(err, wantErr) {
		t.Fatalf("Load = %q, %v, %v; want %q, %v, %v", v, pos, err, wantV, wantPos, wantErr)
	}
}

func TestTTLs(t *testing.T) {
	c, clk := newCache(t, keycache.Config{TTL: time.Minute, NegativeTTL: 5 * time.Second})
	var s store
	good, bad := hash(1), hash(2)
	s.set(good, "news", true, nil)

	load(t, c, &s, good, "news", true, nil)
	load(t, c, &s, bad, "", false, nil)
	if n := s.calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	clk.advance(4 * time.Second)
	load(t, c, &s, good, "news", true, nil)
	load(t, c, &s, bad, "", false, nil)
	if n := s.calls.Load(); n != 2 {
		t.Fatalf("fresh entries fetched again: %d fetches", n)
	}
	// The negative entry expires first: a key added since is seen.
	s.set(bad, "sport", true, nil)
	clk.advance(2 * time.Second)
	load(t, c, &s, bad, "sport", true, nil)
	load(t, c, &s, good, "news", true, nil)
	if n := s.calls.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
	clk.advance(55 * time.Second)
	s.set(good, "", false, nil)
	load(t, c, &s, good, "", false, nil)
	if st := c.Stats(); st.Fetches != 4 || st.Hits != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidateAndExpireAll(t *testing.T) {
	c, _ := newCache(t, keycache.Config{})
	var s store
	h := hash(3)
	s.set(h, "a", true, nil)
	load(t, c, &s, h, "a", true, nil)
	s.set(h, "", false, nil)
	load(t, c, &s, h, "a", true, nil) // cached
	c.Invalidate(h)
	load(t, c, &s, h, "", false, nil)

	s.set(h, "b", true, nil)
	c.ExpireAll()
	load(t, c, &s, h, "b", true, nil)
	load(t, c, &s, h, "b", true, nil)
	if n := s.calls.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
}

// An answer fetched across an Invalidate must not be stored: it may predate
// the change that caused the invalidation.
func TestInvalidateDuringFetch(t *testing.T) {
	c, _ := newCache(t, keycache.Config{})
	h := hash(4)
	var calls atomic.Int64
	fetch := func(context.Context, [32]byte) (string, bool, error) {
		if calls.Add(1) == 1 {
			c.Invalidate(h) // the key changes while the first query runs
			return "old", true, nil
		}
		return "", false, nil
	}
	for i, want := range []string{"old", "", ""} {
		v, _, err := c.Load(context.Background(), h, fetch)
		if err != nil || v != want {
			t.Fatalf("Load %d = %q, %v; want %q", i, v, err, want)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the answer fetched across Invalidate was stored)", n)
	}

	// The same for ExpireAll: the answer is used but not trusted later.
	h2 := hash(5)
	calls.Store(0)
	fetch2 := func(context.Context, [32]byte) (string, bool, error) {
		calls.Add(1)
		if calls.Load() == 1 {
			c.ExpireAll()
		}
		return "x", true, nil
	}
	c.Load(context.Background(), h2, fetch2)
	c.Load(context.Background(), h2, fetch2)
	c.Load(context.Background(), h2, fetch2)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d fetches across ExpireAll, want 2", n)
	}
}

func TestStaleWhenFetchFails(t *testing.T) {
	c, clk := newCache(t, keycache.Config{TTL: time.Minute, NegativeTTL: time.Second, MaxStale: 10 * time.Minute})
	var s store
	good, bad, unknown := hash(6), hash(7), hash(8)
	s.set(good, "news", true, nil)
	load(t, c, &s, good, "news", true, nil)
	load(t, c, &s, bad, "", false, nil)

	down := errors.New("database down")
	s.set(good, "news", true, down)
	c.ExpireAll() // as when the notification connection drops
	load(t, c, &s, good, "news", true, nil)
	load(t, c, &s, bad, "", false, nil)
	load(t, c, &s, unknown, "", false, down)
	clk.advance(9 * time.Minute)
	load(t, c, &s, good, "news", true, nil)
	if st := c.Stats(); st.Stale != 3 {
		t.Fatalf("stats %+v, want 3 stale", st)
	}
	clk.advance(time.Minute)
	load(t, c, &s, good, "", false, down) // older than MaxStale

	// The store comes back: fresh answers again.
	s.set(good, "news", true, nil)
	load(t, c, &s, good, "news", true, nil)
	n := s.calls.Load()
	load(t, c, &s, good, "news", true, nil)
	if s.calls.Load() != n {
		t.Fatal("answer after recovery was not cached")
	}
}

func TestNoStale(t *testing.T) {
	c, clk := newCache(t, keycache.Config{TTL: time.Second, MaxStale: -1})
	var s store
	h := hash(9)
	s.set(h, "a", true, nil)
	load(t, c, &s, h, "a", true, nil)
	clk.advance(2 * time.Second)
	down := errors.New("down")
	s.set(h, "a", true, down)
	load(t, c, &s, h, "", false, down)
}

// Concurrent misses for one key run one fetch; the others share its answer.
func TestCollapse(t *testing.T) {
	for _, size := range []int{0, -1} {
		c := keycache.New[string](keycache.Config{Size: size})
		h := hash(10)
		release := make(chan struct{})
		var calls atomic.Int64
		fetch := func(context.Context, [32]byte) (string, bool, error) {
			calls.Add(1)
			<-release
			return "v", true, nil
		}
		const n = 50
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range n {
			wg.Go(func() {
				if v, ok, err := c.Load(context.Background(), h, fetch); v != "v" || !ok || err != nil {
					bad.Add(1)
				}
			})
		}
		// Let the goroutines pile up behind the first fetch.
		for deadline := time.Now().Add(5 * time.Second); calls.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		close(release)
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("size %d: %d wrong answers", size, bad.Load())
		}
		if got := calls.Load(); got != 1 {
			t.Fatalf("size %d: %d fetches for %d concurrent misses, want 1", size, got, n)
		}
		if size < 0 {
			c.Load(context.Background(), h, fetch)
			if calls.Load() != 2 || c.Len() != 0 {
				t.Fatalf("disabled cache stored an entry")
			}
		}
	}
}

// A waiter whose context ends stops waiting; the fetch goes on for others.
func TestWaiterContext(t *testing.T) {
	c := keycache.New[string](keycache.Config{})
	h := hash(11)
	release := make(chan struct{})
	started := make(chan struct{})
	fetch := func(ctx context.Context, _ [32]byte) (string, bool, error) {
		close(started)
		<-release
		return "v", true, ctx.Err()
	}
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, _, err := c.Load(leaderCtx, h, fetch)
		res <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := c.Load(ctx, h, fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter: %v, want DeadlineExceeded", err)
	}
	cancelLeader() // the fetch's context is not cancelled with its caller's
	close(release)
	if err := <-res; err != nil {
		t.Fatalf("leader: %v", err)
	}
}

func TestBounded(t *testing.T) {
	c := keycache.New[string](keycache.Config{Size: 64})
	var s store
	for i := range 1000 {
		h := [32]byte{byte(i), byte(i >> 8)}
		load(t, c, &s, h, "", false, nil)
	}
	if n := c.Len(); n > 64 {
		t.Fatalf("%d entries, want at most 64", n)
	}
	if st := c.Stats(); st.Evicted < 1000-64 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPositive(t *testing.T) {
	c := keycache.New[string](keycache.Config{})
	var s store
	s.set(hash(1), "a", true, nil)
	s.set(hash(2), "b", true, nil)
	for b := byte(1); b <= 3; b++ {
		c.Load(context.Background(), hash(b), s.fetch(hash(b)))
	}
	hs, vs := c.Positive()
	if len(hs) != 2 || len(vs) != 2 {
		t.Fatalf("Positive = %v, %v", hs, vs)
	}
}

func BenchmarkHit(b *testing.B) {
	c := keycache.New[string](keycache.Config{})
	h := hash(1)
	fetch := func(context.Context, [32]byte) (string, bool, error) { return "v", true, nil }
	c.Load(context.Background(), h, fetch)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, ok, _ := c.Load(ctx, h, fetch); !ok {
				b.Fatal("miss")
			}
		}
	})
}

// Expire is Invalidate for a change that may not refuse the key: the next
// Load asks the store, but if the store is down the entry is still served
// stale; Invalidate leaves nothing to serve.
func TestExpireKeepsStale(t *testing.T) {
	c, _ := newCache(t, keycache.Config{TTL: time.Minute, MaxStale: 10 * time.Minute})
	var s store
	added, revoked := hash(11), hash(12)
	s.set(added, "news", true, nil)
	s.set(revoked, "news", true, nil)
	load(t, c, &s, added, "news", true, nil)
	load(t, c, &s, revoked, "news", true, nil)

	s.set(added, "sports", true, nil)
	c.Expire(added) // the store says it changed: ask again
	load(t, c, &s, added, "sports", true, nil)

	down := errors.New("database down")
	s.set(added, "sports", true, down)
	c.Expire(added)
	c.Invalidate(revoked)
	load(t, c, &s, added, "sports", true, nil) // stale, kept by Expire
	load(t, c, &s, revoked, "", false, down)   // nothing kept by Invalidate
	if n := s.calls.Load(); n != 5 {
		t.Fatalf("%d fetches, want 5 (every Load after an Expire asks the store)", n)
	}
}
