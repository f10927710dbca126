// Package topics holds the hub's table of live topics: a fixed array of
// shards, each a mutex and a map from domain/topic to a Topic, and each Topic
// its publishers' count, its subscribers (counted by kind) and its history
// (a history.Log, which lives and ends with the topic).
//
// Concurrency: every method is safe for concurrent use. Joins and leaves hold
// their shard's mutex for O(1) work. Subscribers, the fan-out's read, takes no
// lock while the subscriber set is unchanged since its last call: it returns
// an immutable snapshot. After a change, the first call copies the set once,
// under the shard mutex. The grace timer runs Config.Keep and then
// Config.OnExpire on its own goroutine, outside every lock. Config.Started is
// the one call out made under a shard mutex. Lock order: a caller may hold
// its own locks while calling in here (a Topic's Log mutex included); this
// package calls out holding none, except Started, which must not call back
// into the table.
package topics

import (
	"errors"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wspubsub/wspubsub/history"
)

// ErrNotStarted means a subscriber asked for a topic that no publisher has
// started (and subscribers may not wait for one).
var ErrNotStarted = errors.New("topics: topic has no publisher")

// ErrHasPublisher means a topic already has as many publishers as it may.
var ErrHasPublisher = errors.New("topics: topic already has its publisher")

// ErrTooManyTopics means a domain already has as many topics as it may.
var ErrTooManyTopics = errors.New("topics: domain has too many topics")

// Key names a topic: topics of different domains never mix.
type Key struct {
	Domain, Topic string
}

// Config holds a Table's rules. The zero value is one publisher per topic,
// no grace period and no waiting subscribers.
type Config[S comparable] struct {
	// MaxPublishers is how many publishers a topic may have at once; 0 means 1.
	MaxPublishers int
	// MaxTopicsPerDomain bounds a domain's live topics; 0 means no bound.
	MaxTopicsPerDomain int
	// SubscribeWaits lets a subscriber join a topic before its publisher
	// starts it; otherwise such a subscriber gets ErrNotStarted.
	SubscribeWaits bool
	// GracePeriod is how long a topic outlives its last publisher. A
	// publisher that arrives within it takes the topic over.
	GracePeriod time.Duration
	// OnExpire is called, outside every lock, with a topic whose grace
	// period ran out and the subscribers it still had. The topic is gone
	// from the table by then.
	OnExpire func(t *Topic[S], subscribers []S)
	// Started, if set, says whether a topic that is not in the table has a
	// publisher elsewhere (another hub node); a subscriber to such a topic
	// joins it as a topic without local publishers. It is called under the
	// shard mutex: it must not block or call into the table. Nil means never.
	Started func(k Key) bool
	// Keep, if set, is asked when a topic's grace period runs out, outside
	// every lock, whether the topic lives on elsewhere (its publisher
	// reconnected to another hub node). If it says so, the topic stays, without
	// local publishers and out of its grace period, and OnExpire is not
	// called. It may block briefly.
	Keep func(k Key) bool
	// NewLog, if set, makes the history of a topic that starts. Nil: each
	// topic gets a log that keeps nothing but its positions.
	NewLog func(k Key) *history.Log
	// Kind, if set, sorts subscribers into up to MaxKinds kinds that
	// Topic.Count counts (the hub's wire variants). Nil: all are kind 0.
	Kind func(s S) int
}

// MaxKinds is how many kinds of subscriber a topic counts.
const MaxKinds = 8

const numShards = 64

// Table maps domain/topic to live topics.
type Table[S comparable] struct {
	cfg    Config[S]
	seed   maphash.Seed
	topics atomic.Int64
	shards [numShards]shard[S]

	dmu     sync.Mutex     // taken under a shard's mutex, never the reverse
	domains map[string]int // live topics per domain, with MaxTopicsPerDomain
}

type shard[S comparable] struct {
	mu sync.Mutex
	m  map[Key]*Topic[S]
}

// Topic is one domain/topic with its publishers and subscribers.
type Topic[S comparable] struct {
	key   Key
	shard *shard[S]

	// Log is the topic's positions and recent messages, from its start to
	// its end (a takeover within the grace period keeps it).
	Log *history.Log
	// Publishing orders the topic's publishes: held from the assignment of
	// positions to the end of the fan-out, so that every subscriber gets
	// the topic's messages in the order of their offsets, whichever of the
	// topic's publishers sent them.
	Publishing sync.Mutex

	// Guarded by shard.mu.
	publishers int
	holds      int // handshakes preparing to join (see Hold)
	subs       []S
	index      map[S]int
	graceGen   uint64 // bumped to cancel a pending expiry
	graceUntil int64  // UnixNano a pending expiry waits for, if later than its timer
	inGrace    bool

	gone  atomic.Bool // ended; set under shard.mu, read with or without it
	dirty atomic.Bool
	snap  atomic.Pointer[[]S]
	count atomic.Int64
	kinds [MaxKinds]atomic.Int64
}

// New returns an empty table.
func New[S comparable](cfg Config[S]) *Table[S] {
	if cfg.MaxPublishers <= 0 {
		cfg.MaxPublishers = 1
	}
	t := &Table[S]{cfg: cfg, seed: maphash.MakeSeed(), domains: make(map[string]int)}
	for i := range t.shards {
		t.shards[i].m = make(map[Key]*Topic[S])
	}
	return t
}

func (tb *Table[S]) shard(k Key) *shard[S] {
	return &tb.shards[maphash.Comparable(tb.seed, k)%numShards]
}

// Len is the number of live topics.
func (tb *Table[S]) Len() int { return int(tb.topics.Load()) }

// AddPublisher starts topic k, joins a started one, or takes over one in its
// grace period. It fails with ErrHasPublisher when the topic is full.
func (tb *Table[S]) AddPublisher(k Key) (*Topic[S], error) {
	sh := tb.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t, err := tb.lookupOrCreate(sh, k)
	if err != nil {
		return nil, err
	}
	if t.publishers >= tb.cfg.MaxPublishers {
		return nil, ErrHasPublisher
	}
	t.publishers++
	t.inGrace = false
	t.graceGen++
	return t, nil
}

// RemovePublisher records that a publisher of t left. The last one's leaving
// starts the grace period, after which the topic ends.
func (tb *Table[S]) RemovePublisher(t *Topic[S]) {
	sh := t.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t.gone.Load() || t.publishers == 0 {
		return
	}
	t.publishers--
	if t.publishers > 0 {
		return
	}
	t.inGrace = true
	t.graceGen++
	t.graceUntil = 0
	gen := t.graceGen
	time.AfterFunc(tb.cfg.GracePeriod, func() { tb.expire(t, gen) })
}

func (tb *Table[S]) expire(t *Topic[S], gen uint64) {
	sh := t.shard
	sh.mu.Lock()
	if wait := t.graceUntil - time.Now().UnixNano(); !t.gone.Load() && t.graceGen == gen && wait > 0 {
		sh.mu.Unlock()
		time.AfterFunc(time.Duration(wait), func() { tb.expire(t, gen) })
		return
	}
	sh.mu.Unlock()
	if tb.cfg.Keep != nil {
		sh.mu.Lock()
		pending := !t.gone.Load() && t.graceGen == gen && t.publishers == 0
		sh.mu.Unlock()
		if !pending {
			return
		}
		if tb.cfg.Keep(t.key) {
			sh.mu.Lock()
			if !t.gone.Load() && t.graceGen == gen && t.publishers == 0 {
				t.inGrace = false
				t.graceGen++
				if len(t.subs) == 0 && t.holds == 0 {
					tb.remove(sh, t)
				}
			}
			gone := t.gone.Load()
			sh.mu.Unlock()
			if gone {
				t.dropLog()
			}
			return
		}
	}
	sh.mu.Lock()
	if t.gone.Load() || t.graceGen != gen || t.publishers > 0 {
		sh.mu.Unlock()
		return
	}
	subs := t.subs
	tb.remove(sh, t)
	sh.mu.Unlock()
	t.dropLog()
	if tb.cfg.OnExpire != nil {
		tb.cfg.OnExpire(t, subs)
	}
}

// Subscribe adds s to topic k. Unless the table lets subscribers wait, the
// topic must have been started by a publisher (ErrNotStarted otherwise).
func (tb *Table[S]) Subscribe(k Key, s S) (*Topic[S], error) {
	return tb.Join(k, s, nil)
}

// Join is Subscribe with a step taken under the topic's Log mutex just
// before s joins: whatever the log holds then was published before s
// joined, and every message added later is published to s. If admit
// returns false, s does not join (the topic is still returned).
func (tb *Table[S]) Join(k Key, s S, admit func(t *Topic[S]) bool) (*Topic[S], error) {
	for {
		sh := tb.shard(k)
		sh.mu.Lock()
		t := sh.m[k]
		if t == nil {
			if !tb.cfg.SubscribeWaits && (tb.cfg.Started == nil || !tb.cfg.Started(k)) {
				sh.mu.Unlock()
				return nil, ErrNotStarted
			}
			var err error
			if t, err = tb.create(sh, k); err != nil {
				sh.mu.Unlock()
				return nil, err
			}
		}
		sh.mu.Unlock()
		// The log's mutex comes before the shard's: take it, then see
		// that the topic is still live.
		t.Log.Lock()
		if admit != nil && !admit(t) {
			t.Log.Unlock()
			return t, nil
		}
		sh.mu.Lock()
		if t.gone.Load() {
			sh.mu.Unlock()
			t.Log.Unlock()
			continue // it ended meanwhile: join the topic now at k, if any
		}
		tb.add(t, s)
		sh.mu.Unlock()
		t.Log.Unlock()
		return t, nil
	}
}

// add puts s in t; the shard's mutex is held.
func (tb *Table[S]) add(t *Topic[S], s S) {
	if _, ok := t.index[s]; ok {
		return
	}
	t.index[s] = len(t.subs)
	t.subs = append(t.subs, s)
	t.count.Add(1)
	t.kinds[tb.kind(s)].Add(1)
	t.dirty.Store(true)
}

// Unsubscribe removes s from t. A topic left with no publisher, no
// subscriber and no grace period pending ends at once.
func (tb *Table[S]) Unsubscribe(t *Topic[S], s S) {
	if tb.unsubscribe(t, s) {
		t.dropLog()
	}
}

// unsubscribe is Unsubscribe under the shard mutex; it reports whether the
// topic ended.
func (tb *Table[S]) unsubscribe(t *Topic[S], s S) bool {
	sh := t.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := t.index[s]
	if !ok {
		return false
	}
	last := len(t.subs) - 1
	if i != last {
		t.subs[i] = t.subs[last]
		t.index[t.subs[i]] = i
	}
	var zero S
	t.subs[last] = zero
	t.subs = t.subs[:last]
	delete(t.index, s)
	t.count.Add(-1)
	t.kinds[tb.kind(s)].Add(-1)
	t.dirty.Store(true)
	return tb.removeIfUnused(sh, t)
}

// removeIfUnused ends t if nothing holds it any more: no publisher, no
// subscriber, no hold, no grace period pending. The shard's mutex is held.
func (tb *Table[S]) removeIfUnused(sh *shard[S], t *Topic[S]) bool {
	if len(t.subs) == 0 && t.publishers == 0 && t.holds == 0 && !t.inGrace && !t.gone.Load() {
		tb.remove(sh, t)
		return true
	}
	return false
}

// Hold keeps topic k live without a subscriber while a subscriber's
// handshake prepares its replay off the event loop (a hub node asks the
// topic's owner for older messages): what is published meanwhile goes on
// into the topic's log. It starts the topic as Join would, and fails as
// Join would. Each Hold is undone by one Unhold, once the subscriber
// joined or gave up. A topic that ends (End, or its grace period running
// out) ends whatever holds it.
func (tb *Table[S]) Hold(k Key) (*Topic[S], error) {
	sh := tb.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.m[k]
	if t == nil {
		if !tb.cfg.SubscribeWaits && (tb.cfg.Started == nil || !tb.cfg.Started(k)) {
			return nil, ErrNotStarted
		}
		var err error
		if t, err = tb.create(sh, k); err != nil {
			return nil, err
		}
	}
	t.holds++
	return t, nil
}

// Unhold undoes one Hold; a topic nothing else holds ends.
func (tb *Table[S]) Unhold(t *Topic[S]) {
	sh := t.shard
	sh.mu.Lock()
	if t.gone.Load() || t.holds == 0 {
		sh.mu.Unlock()
		return
	}
	t.holds--
	ended := tb.removeIfUnused(sh, t)
	sh.mu.Unlock()
	if ended {
		t.dropLog()
	}
}

// Touch starts topic k for a message published without a connection (an
// HTTP publish): a topic with a publisher is returned as it is; any other
// is started if need be and its grace period starts again, so that it lives
// GracePeriod after its last message.
func (tb *Table[S]) Touch(k Key) (*Topic[S], error) {
	sh := tb.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t, err := tb.lookupOrCreate(sh, k)
	if err != nil {
		return nil, err
	}
	if t.publishers == 0 {
		// One timer per grace period, not per message: a timer that
		// fires early sees the later deadline and waits again.
		t.graceUntil = time.Now().Add(tb.cfg.GracePeriod).UnixNano()
		if !t.inGrace {
			t.inGrace = true
			t.graceGen++
			gen := t.graceGen
			time.AfterFunc(tb.cfg.GracePeriod, func() { tb.expire(t, gen) })
		}
	}
	return t, nil
}

// Lookup returns the live topic k, or nil.
func (tb *Table[S]) Lookup(k Key) *Topic[S] {
	sh := tb.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[k]
}

// Has reports whether topic k is live.
func (tb *Table[S]) Has(k Key) bool { return tb.Lookup(k) != nil }

// HasPublisher reports whether topic k has a publisher here.
func (tb *Table[S]) HasPublisher(k Key) bool {
	sh := tb.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.m[k]
	return t != nil && t.publishers > 0
}

// End ends topic k because it ended elsewhere: its remote publisher left and
// the grace period ran out. A topic with a publisher here or in its own
// grace period is left alone (ok false). Otherwise the topic is gone from
// the table and its subscribers are returned, for the caller to close.
func (tb *Table[S]) End(k Key) (subscribers []S, ok bool) {
	sh := tb.shard(k)
	sh.mu.Lock()
	t := sh.m[k]
	if t == nil || t.publishers > 0 || t.inGrace {
		sh.mu.Unlock()
		return nil, false
	}
	subs := t.subs
	tb.remove(sh, t)
	sh.mu.Unlock()
	t.dropLog()
	return subs, true
}

// dropLog gives an ended topic's history back, outside the shard mutex
// (a caller may hold the log's mutex while calling into the table).
func (t *Topic[S]) dropLog() {
	t.Log.Lock()
	t.Log.Drop()
	t.Log.Unlock()
}

// lookupOrCreate returns the live topic k, starting it if need be; the
// shard's mutex is held.
func (tb *Table[S]) lookupOrCreate(sh *shard[S], k Key) (*Topic[S], error) {
	if t := sh.m[k]; t != nil {
		return t, nil
	}
	return tb.create(sh, k)
}

func (tb *Table[S]) create(sh *shard[S], k Key) (*Topic[S], error) {
	if max := tb.cfg.MaxTopicsPerDomain; max > 0 {
		tb.dmu.Lock()
		n := tb.domains[k.Domain]
		if n >= max {
			tb.dmu.Unlock()
			return nil, ErrTooManyTopics
		}
		tb.domains[k.Domain] = n + 1
		tb.dmu.Unlock()
	}
	t := &Topic[S]{key: k, shard: sh, index: make(map[S]int)}
	if tb.cfg.NewLog != nil {
		t.Log = tb.cfg.NewLog(k)
	} else {
		t.Log = history.NewLog(history.Limits{}, nil, "")
	}
	sh.m[k] = t
	tb.topics.Add(1)
	return t, nil
}

func (tb *Table[S]) kind(s S) int {
	if tb.cfg.Kind == nil {
		return 0
	}
	return tb.cfg.Kind(s)
}

func (tb *Table[S]) remove(sh *shard[S], t *Topic[S]) {
	t.gone.Store(true)
	t.subs, t.index = nil, nil
	t.snap.Store(nil)
	t.dirty.Store(false)
	t.count.Store(0)
	for i := range t.kinds {
		t.kinds[i].Store(0)
	}
	delete(sh.m, t.key)
	tb.topics.Add(-1)
	if tb.cfg.MaxTopicsPerDomain > 0 {
		tb.dmu.Lock()
		if n := tb.domains[t.key.Domain] - 1; n > 0 {
			tb.domains[t.key.Domain] = n
		} else {
			delete(tb.domains, t.key.Domain)
		}
		tb.dmu.Unlock()
	}
}

// Range calls f for every live topic, holding no lock during the call.
func (tb *Table[S]) Range(f func(t *Topic[S])) {
	var batch []*Topic[S]
	for i := range tb.shards {
		sh := &tb.shards[i]
		sh.mu.Lock()
		batch = batch[:0]
		for _, t := range sh.m {
			batch = append(batch, t)
		}
		sh.mu.Unlock()
		for _, t := range batch {
			f(t)
		}
	}
}

// Key is the topic's domain and name.
func (t *Topic[S]) Key() Key { return t.key }

// Len is the number of subscribers.
func (t *Topic[S]) Len() int { return int(t.count.Load()) }

// Count is the number of subscribers of one kind (see Config.Kind).
func (t *Topic[S]) Count(kind int) int { return int(t.kinds[kind].Load()) }

// Gone reports whether the topic has ended; it takes no lock. An ended
// topic's log is dropped after the topic leaves the table, under the log's
// mutex: a caller holding that mutex that sees false may add to the log,
// and what it adds is dropped with the rest.
func (t *Topic[S]) Gone() bool { return t.gone.Load() }

// Subscribers returns the current subscribers. The slice is shared and must
// not be modified; it stays valid (though possibly stale) after later joins
// and leaves.
func (t *Topic[S]) Subscribers() []S {
	if t.dirty.Load() {
		t.shard.mu.Lock()
		if t.dirty.Load() {
			snap := slices.Clone(t.subs)
			t.snap.Store(&snap)
			t.dirty.Store(false)
		}
		t.shard.mu.Unlock()
	}
	if p := t.snap.Load(); p != nil {
		return *p
	}
	return nil
}
