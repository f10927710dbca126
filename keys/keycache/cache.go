// Package keycache is a bounded, sharded cache of key-store answers indexed
// by a key's SHA-256, used so that a publisher's handshake need not wait on
// a database for a key seen recently.
//
// An entry is positive (the key may publish) or negative (it may not, or it
// is unknown), and each kind has its own time to live. An entry past its
// time to live is not trusted, but it is kept: when the store cannot answer,
// [Cache.Load] serves an entry younger than Config.MaxStale instead of
// failing. [Cache.Invalidate] drops one entry (the store says the key
// changed); [Cache.ExpireAll] makes every entry untrusted at once (the store
// may have missed changes) while keeping it for the stale fallback.
//
// Concurrent misses for one key are collapsed: one caller fetches, the
// others wait for its answer. An answer fetched while its key was
// invalidated, or while the cache was expired, is not stored as fresh, so an
// invalidation can never be overwritten by the answer of a query that
// started before it.
//
// # Concurrency
//
// Every method is safe to call from any number of goroutines. A hit takes
// one shard's read lock for a map lookup and does not allocate. The fetch
// function runs on the goroutine of the caller that missed first, without
// any lock held.
package keycache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets a Cache's bounds; the zero value of each field means the
// default it documents.
type Config struct {
	// Size is the most entries the cache holds. Default 10000; negative
	// stores nothing, so every Load fetches (concurrent misses for one key
	// are still collapsed).
	Size int
	// TTL is how long a positive entry is trusted. Default 1 minute.
	TTL time.Duration
	// NegativeTTL is how long a negative entry is trusted. Default 5 seconds.
	NegativeTTL time.Duration
	// MaxStale is the oldest an entry may be and still be served when the
	// fetch fails. Default 10 minutes; negative serves nothing stale.
	MaxStale time.Duration
}

// Fetch asks the store about the key whose hash is h: its value, whether
// the answer is positive, or why it could not tell. The context passed to it is not
// cancelled when the caller gives up, because other callers may be waiting
// for the same answer: Fetch must bound its own time.
type Fetch[V any] func(ctx context.Context, h [32]byte) (v V, positive bool, err error)

// Stats are a cache's running totals.
type Stats struct {
	Hits    int64 // Loads answered by a fresh entry
	Fetches int64 // fetches run (one per collapsed group of misses)
	Stale   int64 // Loads answered by a stale entry because the fetch failed
	Evicted int64 // entries dropped to make room
}

const numShards = 16

// Cache holds answers by key hash. Create one with New.
type Cache[V any] struct {
	ttl, negTTL, maxStale int64 // nanoseconds
	perShard              int   // entries per shard; 0 stores nothing
	gen                   atomic.Uint64
	now                   func() int64 // monotonic nanoseconds; tests replace it

	hits, fetches, stale, evicted atomic.Int64

	shards [numShards]shard[V]
}

type shard[V any] struct {
	mu      sync.RWMutex
	m       map[[32]byte]*entry[V]
	flights map[[32]byte]*flight[V]
	inval   uint64 // bumped by every Invalidate or Expire of a key in this shard
}

type entry[V any] struct {
	v        V
	positive bool
	at       int64  // when the fetch that produced it started
	gen      uint64 // Cache.gen when that fetch started
}

// flight is one fetch in progress; waiters read its result after done.
type flight[V any] struct {
	done     chan struct{}
	v        V
	positive bool
	err      error
}

var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

// New returns an empty cache.
func New[V any](cfg Config) *Cache[V] {
	def := func(d, v time.Duration) int64 {
		if d == 0 {
			return int64(v)
		}
		return int64(d)
	}
	c := &Cache[V]{
		ttl:      def(cfg.TTL, time.Minute),
		negTTL:   def(cfg.NegativeTTL, 5*time.Second),
		maxStale: def(cfg.MaxStale, 10*time.Minute),
		now:      monotonic,
	}
	size := cfg.Size
	if size == 0 {
		size = 10000
	}
	if size > 0 {
		c.perShard = (size + numShards - 1) / numShards
	}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]*entry[V])
		c.shards[i].flights = make(map[[32]byte]*flight[V])
	}
	return c
}

func (c *Cache[V]) shard(h *[32]byte) *shard[V] { return &c.shards[h[0]%numShards] }

// fresh reports whether e may be trusted at now.
func (c *Cache[V]) fresh(e *entry[V], now int64) bool {
	ttl := c.negTTL
	if e.positive {
		ttl = c.ttl
	}
	return e.gen == c.gen.Load() && now-e.at < ttl
}

// Load returns the answer for hash h: a fresh entry if there is one, else
// the result of fetch, shared with every concurrent Load of h. If fetch
// fails, an entry younger than MaxStale is returned instead of the error.
// ctx bounds only this caller's wait.
func (c *Cache[V]) Load(ctx context.Context, h [32]byte, fetch Fetch[V]) (v V, positive bool, err error) {
	sh := c.shard(&h)
	now := c.now()
	sh.mu.RLock()
	e := sh.m[h]
	sh.mu.RUnlock()
	if e != nil && c.fresh(e, now) {
		c.hits.Add(1)
		return e.v, e.positive, nil
	}

	sh.mu.Lock()
	if e = sh.m[h]; e != nil && c.fresh(e, now) {
		sh.mu.Unlock()
		c.hits.Add(1)
		return e.v, e.positive, nil
	}
	if f := sh.flights[h]; f != nil {
		sh.mu.Unlock()
		select {
		case <-f.done:
			return f.v, f.positive, f.err
		case <-ctx.Done():
			var zero V
			return zero, false, ctx.Err()
		}
	}
	f := &flight[V]{done: make(chan struct{})}
	sh.flights[h] = f
	inval, gen := sh.inval, c.gen.Load()
	sh.mu.Unlock()

	c.fetches.Add(1)
	f.v, f.positive, f.err = fetch(context.WithoutCancel(ctx), h)

	sh.mu.Lock()
	delete(sh.flights, h)
	switch {
	case f.err != nil:
		if e := sh.m[h]; e != nil && c.maxStale >= 0 && c.now()-e.at < c.maxStale {
			c.stale.Add(1)
			f.v, f.positive, f.err = e.v, e.positive, nil
		}
	case c.perShard > 0 && sh.inval == inval:
		// An Invalidate since the fetch started means the answer may
		// predate the change: hand it to the waiting callers, keep it not.
		if _, ok := sh.m[h]; !ok && len(sh.m) >= c.perShard {
			c.evictLocked(sh)
		}
		sh.m[h] = &entry[V]{v: f.v, positive: f.positive, at: now, gen: gen}
	}
	sh.mu.Unlock()
	close(f.done)
	return f.v, f.positive, f.err
}

// evictLocked drops one entry of a full shard: the oldest of a few taken in
// the map's random order, preferring one that is no longer fresh.
func (c *Cache[V]) evictLocked(sh *shard[V]) {
	var victim [32]byte
	var oldest int64
	found := false
	n := 0
	now := c.now()
	for h, e := range sh.m {
		if !c.fresh(e, now) {
			victim, found = h, true
			break
		}
		if !found || e.at < oldest {
			victim, oldest, found = h, e.at, true
		}
		if n++; n == 8 {
			break
		}
	}
	if found {
		delete(sh.m, victim)
		c.evicted.Add(1)
	}
}

// Invalidate drops the entry for h, and keeps a fetch of h already running
// from storing its answer.
func (c *Cache[V]) Invalidate(h [32]byte) {
	sh := c.shard(&h)
	sh.mu.Lock()
	delete(sh.m, h)
	sh.inval++
	sh.mu.Unlock()
}

// Expire makes the entry for h, and the answer of a fetch of h already
// running, untrusted: the next Load fetches again. Unlike Invalidate it
// keeps the entry to be served stale if that fetch fails, for a key that
// changed in a way that may not refuse it (a key added or activated).
func (c *Cache[V]) Expire(h [32]byte) {
	sh := c.shard(&h)
	sh.mu.Lock()
	if e := sh.m[h]; e != nil {
		// Entries are read without the lock: replace, never modify.
		sh.m[h] = &entry[V]{v: e.v, positive: e.positive, at: e.at, gen: c.gen.Load() - 1}
	}
	sh.inval++
	sh.mu.Unlock()
}

// ExpireAll makes every entry, and the answer of every fetch already
// running, untrusted: the next Load of each key fetches again. The entries
// are kept to be served stale if that fetch fails.
func (c *Cache[V]) ExpireAll() { c.gen.Add(1) }

// Positive returns the hashes and values of every positive entry, fresh or
// not, so that a store can recheck them after it may have missed changes.
func (c *Cache[V]) Positive() (hashes [][32]byte, values []V) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		for h, e := range sh.m {
			if e.positive {
				hashes = append(hashes, h)
				values = append(values, e.v)
			}
		}
		sh.mu.RUnlock()
	}
	return hashes, values
}

// Len returns the number of entries, fresh or not.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Stats returns the running totals.
func (c *Cache[V]) Stats() Stats {
	return Stats{
		Hits:    c.hits.Load(),
		Fetches: c.fetches.Load(),
		Stale:   c.stale.Load(),
		Evicted: c.evicted.Load(),
	}
}
